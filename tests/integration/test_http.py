"""The HTTP endpoints under bad clients, and with TLS and basic auth (the web config file),
checked with real clients: aiohttp, raw sockets, and Prometheus itself scraping over TLS."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from daemon import server, webconfig
from daemon.cli import main as cli_main
from daemon.demo.estate import PRIMARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto
from tests.tlsfiles import make_ca, make_leaf

from .conftest import policy_for
from .harness import get, running_daemon, settings_for, wait_for

ACCOUNT = "970000000001"


@pytest.fixture(scope="module")
def seeded(moto: EmbeddedMoto) -> str:
    asyncio.run(seed_estate([ACCOUNT], [PRIMARY], only=["orders-api", "untraced"]))
    return ACCOUNT


async def _raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


async def test_bad_clients_never_block_the_event_loop(seeded: str, tmp_path: Path) -> None:
    settings = settings_for(policy_for([seeded], tmp_path, regions=[PRIMARY]))
    async with running_daemon(settings) as daemon:
        port = daemon.http.port
        assert port is not None
        # unknown paths and methods
        assert (await get(daemon, "/nope"))[0] == 404
        assert (await get(daemon, "/metrics/../../etc/passwd"))[0] == 404
        status = await _raw(port, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 405")
        # a huge header, too many headers, a huge request line, a body on a GET
        big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        assert (await _raw(port, big)).split(b" ", 2)[1] in (b"400", b"431")
        many = b"GET /metrics HTTP/1.1\r\n" + b"".join(f"X-{i}: v\r\n".encode() for i in range(500))
        assert (await _raw(port, many + b"\r\n")).split(b" ", 2)[1] in (b"400", b"431")
        line = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        assert (await _raw(port, line)).split(b" ", 2)[1] in (b"400", b"414")
        body = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 10
        assert (await _raw(port, body)).split(b" ", 2)[1] in (b"405", b"413")

        # slow clients: 50 connections trickling a request one byte at a time, and 20 that ask
        # for /metrics and never read the answer
        async def trickle() -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.1)
            finally:
                writer.close()

        async def never_read() -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
                await writer.drain()
                await asyncio.sleep(4)
            finally:  # cancelled when the checks below are done: close it all the same
                writer.close()

        bad = [asyncio.create_task(trickle()) for _ in range(50)]
        bad += [asyncio.create_task(never_read()) for _ in range(20)]
        await asyncio.sleep(0.5)
        worst = 0.0
        for _ in range(10):
            for path in ("/livez", "/readyz", "/metrics"):
                started = time.monotonic()
                status_code, text = await get(daemon, path)
                worst = max(worst, time.monotonic() - started)
                assert status_code == 200, (path, text)
            await asyncio.sleep(0.2)
        assert daemon.heartbeat.lag < 1.5
        for task in bad:
            task.cancel()
        await asyncio.gather(*bad, return_exceptions=True)
    assert worst < 1.0, worst


async def test_a_scrape_holds_the_daemons_loop_while_it_renders(
    seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running daemon's server holds the daemon's own loop (ScrapePriority) during a
    scrape, and lets it go: the loop runs on, and the heartbeat with it."""
    settings = settings_for(policy_for([seeded], tmp_path, regions=[PRIMARY]))
    async with running_daemon(settings) as daemon:
        priority = daemon.http.app[server.PRIORITY]
        before = priority.holds
        render = daemon.exposition.render_pieces
        rendered: list[str] = []

        def slow_render(accept: str) -> tuple[list[bytes], str]:
            time.sleep(0.3)  # long enough for the idle loop to reach the hold, however slow
            rendered.append(accept)
            return render(accept)

        monkeypatch.setattr(daemon.exposition, "render_pieces", slow_render)
        # the client runs on another thread: this loop is free to reach the hold meanwhile
        status, body = await asyncio.to_thread(_fetch, daemon.http.port, "/metrics")
        assert status == 200 and "posture_violations{" in body
        assert len(rendered) == 1  # the server renders through render_pieces
        assert priority.holds == before + 1
        await asyncio.sleep(0)  # the loop runs again
        assert daemon.heartbeat.lag < 2
    assert priority.holds == before + 1


def _fetch(port: int | None, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read().decode()


# --- TLS and basic auth --------------------------------------------------------------------------

PASSWORD = "zz-scrape-password-4b1d"


def _web_config(directory: Path, client_auth: bool = False) -> tuple[Path, Path]:
    ca, ca_key = make_ca(directory)
    make_leaf(directory, ca, ca_key, "server")
    make_leaf(directory, ca, ca_key, "client", server=False)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    extra = (
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: test-ca.crt\n"
        if client_auth
        else ""
    )
    path = directory / "web-config.yaml"
    path.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        + extra
        + f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers: {Strict-Transport-Security: max-age=31536000}\n"
    )
    return path, ca.cert


def _client_tls(ca: Path, cert: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(cert.with_suffix(".key")))
    return ctx


async def test_the_server_answers_while_the_daemon_loop_is_blocked(
    seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP server has a thread and event loop of its own: with the daemon's loop blocked
    (as a long garbage collection or a CPU-heavy callback blocks it), /metrics still answers at
    once from the published state, and /livez reports the stall instead of hanging."""
    monkeypatch.setattr(server, "LIVENESS_LAG_SECONDS", 0.5)
    settings = settings_for(policy_for([seeded], tmp_path, regions=[PRIMARY]))
    async with running_daemon(settings) as daemon:
        port = daemon.http.port
        answers: dict[str, tuple[int, str, float]] = {}

        def scrape() -> None:  # a client outside the daemon's loop, as Prometheus is
            time.sleep(1.0)  # the loop is blocked by then
            for path in ("/metrics", "/livez"):
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                        status, body = r.status, r.read().decode()
                except urllib.error.HTTPError as err:
                    status, body = err.code, err.read().decode()
                answers[path] = (status, body, time.perf_counter() - started)

        client = threading.Thread(target=scrape)
        client.start()
        time.sleep(3.0)  # blocks the daemon's event loop: none of its callbacks run meanwhile
        blocked_until = time.perf_counter()
        client.join()
        assert set(answers) == {"/metrics", "/livez"}, "answered while the loop was blocked"
        status, body, took = answers["/metrics"]
        assert status == 200
        assert "posture_violations{" in body
        assert took < 1.0, f"/metrics took {took:.2f}s"
        status, body, _ = answers["/livez"]
        assert status == 503
        assert "event loop stalled" in body
        assert time.perf_counter() - blocked_until < 1.0  # the client was done before
        # the loop runs again: its heartbeat task catches up, and /livez with it
        await wait_for(lambda: daemon.heartbeat.lag < 0.5, 5, "the heartbeat")
        assert (await get(daemon, "/livez"))[0] == 200


async def test_tls_and_basic_auth_with_real_clients(seeded: str, tmp_path: Path) -> None:
    web, ca = _web_config(tmp_path)
    settings = settings_for(
        policy_for([seeded], tmp_path, regions=[PRIMARY]), http={"web_config_file": web}
    )
    async with running_daemon(settings, ready=False) as daemon:
        base = f"https://127.0.0.1:{daemon.http.port}"
        tls = _client_tls(ca)
        async with aiohttp.ClientSession() as session:

            async def fetch(
                path: str, auth: tuple[str, str] | None = None
            ) -> aiohttp.ClientResponse:
                headers = {}
                if auth is not None:
                    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                    headers["Authorization"] = f"Basic {token}"
                async with session.get(base + path, ssl=tls, headers=headers) as resp:
                    await resp.read()
                    return resp

            denied = await fetch("/metrics")
            assert denied.status == 401
            assert denied.headers["WWW-Authenticate"].startswith('Basic realm="posture-daemon"')
            assert (await fetch("/metrics", ("prometheus", "wrong"))).status == 401
            assert (await fetch("/metrics", ("grafana", PASSWORD))).status == 401
            assert (await fetch("/", None)).status == 401
            ok = await fetch("/metrics", ("prometheus", PASSWORD))
            assert ok.status == 200
            assert ok.headers["Strict-Transport-Security"] == "max-age=31536000"
            # the probes answer without credentials (kubelet sends none), over TLS
            assert (await fetch("/livez")).status == 200
            assert (await fetch("/readyz")).status in (200, 503)
            # a client that does not trust the certificate, or speaks plain HTTP, gets nothing
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(base + "/livez", ssl=ssl.create_default_context())
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"http://127.0.0.1:{daemon.http.port}/livez")


async def test_a_rotated_certificate_is_served_after_a_reload(
    seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cert-manager style rotation: new files in place, then SIGHUP (or the file watch). The
    reload swaps the certificate on the HTTP server's own thread (where the TLS context is in
    use); the listening socket stays and the next handshake gets the new certificate."""
    ca, ca_key = make_ca(tmp_path)
    first = make_leaf(tmp_path, ca, ca_key, "server")
    web = tmp_path / "web-config.yaml"
    web.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    settings = settings_for(
        policy_for([seeded], tmp_path, regions=[PRIMARY]), http={"web_config_file": web}
    )

    def pem_to_der(path: Path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(path.read_text())

    swapped_on: list[str] = []  # threads the live context was changed on
    load = webconfig.load_certificate
    live: list[ssl.SSLContext | None] = []

    def recorded(*args: Any) -> None:
        if live and args[0] is live[0]:  # not a fresh context a reload validates the files with
            swapped_on.append(threading.current_thread().name)
        load(*args)

    monkeypatch.setattr(webconfig, "load_certificate", recorded)

    async with running_daemon(settings, ready=False) as daemon:
        port = daemon.http.port
        trust = _client_tls(ca.cert)
        live.append(daemon.web_config.tls)

        def served() -> bytes | None:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                return tls.getpeercert(binary_form=True)

        old = pem_to_der(first.cert)
        assert await asyncio.to_thread(served) == old
        second = make_leaf(tmp_path, ca, ca_key, "server")  # new key and certificate, same paths
        new = pem_to_der(second.cert)
        assert new != old
        assert daemon.web_config.reload("SIGHUP")
        for _ in range(100):  # the swap is queued to the server's thread: a moment later
            seen = await asyncio.to_thread(served)
            if seen == new:
                break
            await asyncio.sleep(0.05)
        assert seen == new
        assert swapped_on == ["posture-http"]  # not on the daemon's loop, mid-handshake
        with pytest.raises(aiohttp.ClientError):  # still TLS only: the same listening socket
            await get(daemon, "/livez")


async def test_client_certificates_when_required(seeded: str, tmp_path: Path) -> None:
    web, ca = _web_config(tmp_path, client_auth=True)
    settings = settings_for(
        policy_for([seeded], tmp_path, regions=[PRIMARY]), http={"web_config_file": web}
    )
    async with running_daemon(settings, ready=False) as daemon, aiohttp.ClientSession() as s:
        url = f"https://127.0.0.1:{daemon.http.port}/livez"
        with pytest.raises(aiohttp.ClientError):
            async with s.get(url, ssl=_client_tls(ca)) as resp:
                await resp.read()
        async with s.get(url, ssl=_client_tls(ca, tmp_path / "client.crt")) as resp:
            assert resp.status == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_prometheus_scrapes_over_tls_with_basic_auth(seeded: str, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is required (Debian package prometheus)"
    web, ca = _web_config(tmp_path)
    settings = settings_for(
        policy_for([seeded], tmp_path, regions=[PRIMARY]), http={"web_config_file": web}
    )
    async with running_daemon(settings) as daemon:
        target = f"127.0.0.1:{daemon.http.port}"
        jobs = []
        for job, password in (("posture", PASSWORD), ("posture-wrong-password", "nope")):
            jobs.append(
                {
                    "job_name": job,
                    "scheme": "https",
                    "tls_config": {"ca_file": str(ca), "server_name": "localhost"},
                    "basic_auth": {"username": "prometheus", "password": password},
                    "static_configs": [{"targets": [target]}],
                }
            )
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
        port = _free_port()
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            api = f"http://127.0.0.1:{port}/api/v1"

            def targets() -> dict[str, dict[str, str]]:
                try:
                    with urllib.request.urlopen(api + "/targets", timeout=2) as resp:
                        active = json.load(resp)["data"]["activeTargets"]
                except OSError:
                    return {}
                return {t["labels"]["job"]: t for t in active if t["lastScrape"][:4] != "0001"}

            await wait_for(lambda: len(targets()) == 2, 30, "two scraped targets")
            found = targets()
            with urllib.request.urlopen(
                api + "/query?query=posture_violations%7Bcontrol%3D%22lambda-xray-active%22%7D",
                timeout=2,
            ) as resp:
                result = json.load(resp)["data"]["result"]
        finally:
            proc.terminate()
            proc.wait(10)
    assert found["posture"]["health"] == "up", found["posture"]
    assert found["posture-wrong-password"]["health"] == "down"
    assert "401" in found["posture-wrong-password"]["lastError"]
    assert [r["metric"]["aws_account_id"] for r in result] == [ACCOUNT]
    assert result[0]["value"][1] == "1"


def test_bad_web_config_stops_the_daemon_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    web = tmp_path / "web.yaml"
    web.write_text("basic_auth_users: {prometheus: plaintext-password-canary}\n")
    policy = policy_for([ACCOUNT], tmp_path, regions=[PRIMARY])
    monkeypatch.setenv("POSTURE_HTTP__WEB_CONFIG_FILE", str(web))
    monkeypatch.setenv("POSTURE_HTTP__PORT", "0")
    assert cli_main(["run", "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert f"web config {web}: basic_auth_users.prometheus: not a bcrypt hash" in err
    assert "plaintext-password-canary" not in err
    assert "Traceback" not in err
