"""`posture-daemon run` as a real process: readiness, SIGHUP reload, SIGTERM shutdown (also in
the middle of a sweep slowed or hung by the fault proxy), and a second SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from daemon.demo.estate import PRIMARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto

from .conftest import policy_for
from .faultproxy import Fault, FaultProxy, Hang, Latency


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


async def test_run_serves_reloads_on_sighup_and_stops_cleanly_on_sigterm(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    account = "888888888882"
    await seed_estate([account], [PRIMARY], only=["orders-api", "untraced"])
    policy = policy_for([account], tmp_path, regions=[PRIMARY])
    port = _free_port()
    env = {
        **os.environ,
        "POSTURE_POLICY_FILE": str(policy),
        "POSTURE_HTTP__HOST": "127.0.0.1",
        "POSTURE_HTTP__PORT": str(port),
        "POSTURE_LOG__FORMAT": "json",
        "POSTURE_RECONCILER__POLICY_POLL_SECONDS": "0",  # reload only on SIGHUP
        "POSTURE_RECONCILER__INTERVAL_SECONDS": "60",
        "POSTURE_RECONCILER__SHUTDOWN_GRACE_SECONDS": "5",
    }
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(lambda: _get(base + "/readyz")[0] == 200, 60, "readiness")
            assert _get(base + "/livez")[0] == 200
            assert "posture_violations{" in _get(base + "/metrics")[1]
            _wait(lambda: "heap settled" in log_path.read_text(), 10, "the heap settled")

            doc = yaml.safe_load(policy.read_text())
            doc["controls"]["lambda-xray-active"] = {"enabled": False}
            policy.write_text(yaml.safe_dump(doc))
            proc.send_signal(signal.SIGHUP)
            _wait(lambda: "policy reloaded" in log_path.read_text(), 10, "reload on SIGHUP")

            # an invalid file on SIGHUP: rejected, and the process goes on with the old policy
            policy.write_text(policy.read_text().replace("version: 1", "version: 2"))
            proc.send_signal(signal.SIGHUP)
            _wait(lambda: "policy reload rejected" in log_path.read_text(), 10, "rejection")
            metrics = _get(base + "/metrics")[1]
            assert "posture_policy_reload_failures_total 1.0" in metrics
            assert "posture_policy_reloads_total 1.0" in metrics
            assert _get(base + "/readyz")[0] == 200 and proc.poll() is None

            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0
    events = [
        json.loads(line)["event"]
        for line in log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert "posture-daemon started" in events
    assert "stop signal received" in events
    assert events[-1] == "posture-daemon stopped"
    # before serving, the service models were loaded and the long-lived heap frozen (out of the
    # garbage collector's full passes, which would otherwise pause the event loop)
    warmed = [
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if line.startswith("{") and json.loads(line)["event"] == "warmed up"
    ]
    assert len(warmed) == 1 and events.index("warmed up") < events.index("posture-daemon started")
    assert warmed[0]["frozen_objects"] > 100_000
    assert "lambda" in warmed[0]["services"] and "sqs" not in warmed[0]["services"]
    # the process's garbage collector examines young objects every 50,000 allocations (as read
    # back from gc.get_threshold() in the process, not the constant)
    assert warmed[0]["gc_thresholds"] == [50_000, 20, 10]
    # after the first sweep, once: what it built is frozen too (the results, the caches)
    settled = [
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if line.startswith("{")
        and json.loads(line)["event"] == "heap settled after the first sweep"
    ]
    assert len(settled) == 1
    assert settled[0]["frozen_objects"] > warmed[0]["frozen_objects"]
    assert settled[0]["pause_ms"] >= 0
    assert "Traceback" not in log_path.read_text()


# --- graceful shutdown under load ----------------------------------------------------------------


def _start(policy: Path, tmp_path: Path, grace: float) -> tuple[subprocess.Popen[bytes], Path, str]:
    port = _free_port()
    env = {
        **os.environ,  # AWS_ENDPOINT_URL: the fault proxy
        "POSTURE_POLICY_FILE": str(policy),
        "POSTURE_HTTP__HOST": "127.0.0.1",
        "POSTURE_HTTP__PORT": str(port),
        "POSTURE_LOG__FORMAT": "json",
        "POSTURE_RECONCILER__INTERVAL_SECONDS": "1",
        "POSTURE_RECONCILER__SHUTDOWN_GRACE_SECONDS": str(grace),
        # no detail cache: every sweep has GetFunction calls in flight to slow down or hang
        "POSTURE_RECONCILER__MAX_DATA_AGE_SECONDS": "0",
    }
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return proc, log_path, f"http://127.0.0.1:{port}"


def _events(log_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


def _stop_during_a_sweep(
    proxy: FaultProxy, proc: subprocess.Popen[bytes], base: str, account: str, fault: Fault
) -> float:
    """Wait for readiness, slow the account down, wait until a sweep is in flight, SIGTERM."""
    _wait(lambda: _get(base + "/readyz")[0] == 200, 60, "readiness")
    rule = proxy.add(fault, account=account, operation="GetFunction")
    _wait(lambda: rule.hits >= 1, 15, "a sweep in flight")
    proc.send_signal(signal.SIGTERM)
    return time.monotonic()


async def test_sigterm_during_a_slow_sweep_finishes_it_within_the_grace_period(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    account = "888888888883"
    await seed_estate([account], [PRIMARY], only=["orders-api", "untraced", "no-reservation"])
    policy = policy_for([account], tmp_path, regions=[PRIMARY])
    proc, log_path, base = _start(policy, tmp_path, grace=8)
    try:
        sent = _stop_during_a_sweep(proxy, proc, base, account, Latency(0.5))
        code = proc.wait(timeout=15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    assert took < 8, took
    events = _events(log_path)
    names = [e["event"] for e in events]
    stopping = next(e for e in events if e["event"] == "stopping")
    assert stopping["in_flight"] >= 1
    # the sweep in flight finished (its results are published), then the daemon stopped
    assert names.index("stopping") < len(names) - 1 - names[::-1].index("reconciled")
    assert names[-1] == "posture-daemon stopped"
    assert "cancelled reconciles still running after the grace period" not in names
    assert "Traceback" not in log_path.read_text()


async def test_sigterm_during_a_hung_sweep_cancels_it_after_the_grace_period(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    account = "888888888884"
    await seed_estate([account], [PRIMARY], only=["orders-api", "untraced"])
    policy = policy_for([account], tmp_path, regions=[PRIMARY])
    proc, log_path, base = _start(policy, tmp_path, grace=2)
    try:
        sent = _stop_during_a_sweep(proxy, proc, base, account, Hang())
        code = proc.wait(timeout=15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    assert 2 <= took < 6, took
    names = [e["event"] for e in _events(log_path)]
    assert "cancelled reconciles still running after the grace period" in names
    assert names[-1] == "posture-daemon stopped"
    assert "Traceback" not in log_path.read_text()


async def test_a_second_sigterm_exits_at_once(proxy: FaultProxy, tmp_path: Path) -> None:
    account = "888888888885"
    await seed_estate([account], [PRIMARY], only=["orders-api"])
    policy = policy_for([account], tmp_path, regions=[PRIMARY])
    proc, log_path, base = _start(policy, tmp_path, grace=60)
    try:
        _stop_during_a_sweep(proxy, proc, base, account, Hang())
        time.sleep(0.5)
        assert proc.poll() is None  # waiting for the hung sweep, up to 60 s
        second = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
        took = time.monotonic() - second
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + signal.SIGTERM  # 143, as a shell reports a process killed by SIGTERM
    assert took < 2, took
    names = [e["event"] for e in _events(log_path)]
    assert names[-1] == "second stop signal: exiting now"


# --- an address that cannot be used -------------------------------------------------------------


def test_run_and_demo_on_a_taken_port_exit_2_with_one_line_and_no_traceback(
    tmp_path: Path,
) -> None:
    """`run` fails when its server cannot listen (after loading the policy and the AWS models),
    the demo before it starts moto and seeds its estate; both say where and why, in one line
    naming the setting, with the configuration-error exit code."""
    policy = policy_for(["888888888883"], tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **os.environ,
            "POSTURE_POLICY_FILE": str(policy),
            "POSTURE_HTTP__HOST": "127.0.0.1",
            "POSTURE_HTTP__PORT": str(port),
            "POSTURE_LOG__FORMAT": "json",
        }
        commands = {
            "run": (
                [sys.executable, "-m", "daemon", "run"],
                "POSTURE_HTTP__PORT and POSTURE_HTTP__HOST",
            ),
            "demo": ([sys.executable, "-m", "daemon", "demo", "--port", str(port)], "--port"),
        }
        for name, (argv, setting) in commands.items():
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=120, check=False
            )
            assert done.returncode == 2, (name, done.stdout, done.stderr)
            *logs, last = done.stderr.splitlines()  # the log goes to stderr too, before it
            assert last == (
                f"posture-daemon: cannot listen on 127.0.0.1:{port}: Address already in use"
                f" (the address is set by {setting})"
            ), name
            assert "Traceback" not in done.stdout + done.stderr
            events = [json.loads(line)["event"] for line in logs if line.startswith("{")]
            if name == "demo":
                assert events == []  # before moto and the estate: nothing seeded, nothing logged
            else:
                assert "warmed up" in events  # the daemon got as far as serving
                assert "posture-daemon started" not in events
