"""`posture-daemon run` as a real process: readiness, SIGHUP reload, SIGTERM shutdown."""

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

            doc = yaml.safe_load(policy.read_text())
            doc["controls"]["lambda-xray-active"] = {"enabled": False}
            policy.write_text(yaml.safe_dump(doc))
            proc.send_signal(signal.SIGHUP)
            _wait(lambda: "policy reloaded" in log_path.read_text(), 10, "reload on SIGHUP")

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
    assert "Traceback" not in log_path.read_text()
