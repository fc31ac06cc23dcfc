"""Secrets never leave: every output of a demo-like run, faults included, scanned for them.

The run: the daemon at debug level (JSON logs), its /metrics and /readyz, and `check --output
json` with verbose logs, against accounts reached by AssumeRole with an ExternalId, through the fault
proxy injecting expired tokens, denied calls, 5xx, throttling and a malformed answer, so that the
error paths (exceptions, failed targets, renewed credentials) write too. Scanned for: the values of
seeded Lambda environment variables, the daemon's own access key and secret key, the ExternalId,
and every access key, secret key and session token the proxy saw signed or handed out by
AssumeRole.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from daemon.cli import main as cli_main
from daemon.demo.estate import PRIMARY, SEEDED_SECRETS, seed_estate
from daemon.logging import setup_logging

from .conftest import policy_for
from .faultproxy import (
    AccessDenied,
    ExpireCredentials,
    FaultProxy,
    Latency,
    Malformed,
    ServerError,
    Throttle,
)
from .harness import get, running_daemon, settings_for, wait_for, wait_for_sweeps

ACCESS_KEY = "AKIAZZCANARY7Q2W3E4R"
SECRET_KEY = "zz-daemon-secret-key-canary-9f8e7d6c5b4a"
EXTERNAL_ID = "zz-external-id-canary-31337"


async def test_no_secret_in_any_output_of_a_faulty_run(
    proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    accounts = ["980000000001", "980000000002"]
    await seed_estate(accounts, [PRIMARY], only=["payments-webhook", "orders-api", "open-invoke"])
    # the daemon's own credentials (moto maps an unknown key to its default account)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("POSTURE_AWS__EXTERNAL_ID", EXTERNAL_ID)
    monkeypatch.setenv("POSTURE_LOG__LEVEL", "debug")
    monkeypatch.setenv("POSTURE_LOG__FORMAT", "json")
    policy = policy_for(accounts, tmp_path, regions=[PRIMARY])

    bad, good = accounts
    proxy.add(ExpireCredentials(), account=bad, operation="GetFunction", count=1)
    proxy.add(AccessDenied(), account=bad, operation="GetPolicy")
    proxy.add(ServerError(503), account=good, service="logs", probability=0.3)
    proxy.add(Throttle(429), account=good, operation="ListFunctions", count=1)
    malformed = proxy.add(Malformed(), account=bad, operation="ListFunctions", count=1)
    external_ids: list[str] = []
    proxy.add(  # a spy: records the ExternalId of every AssumeRole, never fires
        Latency(0),
        operation="AssumeRole",
        when=lambda call: external_ids.append(call.form().get("ExternalId", "")) is not None,
    )

    logs = io.StringIO()
    setup_logging("debug", "json", stream=logs)
    try:
        settings = settings_for(policy, reconciler={"interval_seconds": 1}, aws={"max_attempts": 4})
        async with running_daemon(settings, ready=False) as daemon:
            await wait_for(lambda: malformed.hits == 1, 30, "the malformed answer")
            await wait_for(lambda: daemon.ready()[0], 60, "readiness")
            await wait_for_sweeps(daemon, 1)
            _, exposition = await get(daemon, "/metrics")
            _, readyz = await get(daemon, "/readyz")
    finally:
        setup_logging("info", "json")
    capsys.readouterr()
    outputs = {"daemon logs": logs.getvalue(), "metrics": exposition, "readyz": readyz}
    for fmt in ("json",):
        args = ["check", "--policy", str(policy), "--output", fmt, "--verbose"]
        code = await asyncio.to_thread(cli_main, args)  # check runs its own event loop
        captured = capsys.readouterr()
        assert code == 1  # violations found (and a denied GetPolicy left some controls unknown)
        outputs[f"check {fmt} stdout"] = captured.out
        outputs[f"check {fmt} stderr"] = captured.err

    # the run did go through the error paths, and the outputs are about the estate
    everything = "\n".join(outputs.values())
    events = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    assert {e.get("error_code") for e in events} >= {"MalformedResponse"}
    assert any(r.outcome == "expired_token" for r in proxy.calls(account=bad))
    assert "AccessDeniedException" in outputs["check json stdout"]
    assert "payments-webhook" in everything and "DB_PASSWORD" in everything
    assert json.loads(outputs["check json stdout"])["summary"]["errors"] > 0
    # ExternalId and the seeded credentials were in play ...
    assert EXTERNAL_ID in external_ids
    # ("testing" is the fake key tests/conftest.py gives the test process itself, for seeding)
    secrets = {*SEEDED_SECRETS, ACCESS_KEY, SECRET_KEY, EXTERNAL_ID, *proxy.credentials}
    secrets.discard("testing")
    issued = secrets - {*SEEDED_SECRETS, ACCESS_KEY, SECRET_KEY, EXTERNAL_ID}
    assert len(issued) >= 6  # keys, secrets and tokens of several AssumeRole answers
    # ... and none of them is anywhere in what the daemon wrote
    for name, text in outputs.items():
        leaked = sorted(s for s in secrets if s and s in text)
        assert not leaked, f"{name} contains {leaked}"
