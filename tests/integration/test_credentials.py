"""How the daemon reaches accounts: AssumeRole parameters, own credentials, in-flight limits."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml

from daemon.app import Daemon
from daemon.demo.estate import MANAGEMENT_ACCOUNT, PRIMARY, SECONDARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto, ShimRequest, ShimResponse
from daemon.policy import load_policy

from .conftest import policy_for
from .harness import settings_for


class Recorder:
    """A fault rule that answers nothing: it records the daemon's AssumeRole requests."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []

    def __call__(self, request: ShimRequest) -> ShimResponse | None:
        form = request.form()
        if form.get("Action") == "AssumeRole" and form.get("RoleSessionName") == "posture-daemon":
            self.calls.append(form)
        return None


async def test_assume_role_parameters_and_own_account(moto: EmbeddedMoto, tmp_path: Path) -> None:
    assert moto.shim is not None
    member = "232323232323"
    recorder = Recorder()
    moto.shim.add_fault(recorder)
    try:
        path = tmp_path / "policy.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "scope": {
                        "accounts": {"static": [{"id": member}], "own_account": True},
                        "regions": [PRIMARY, SECONDARY],
                    },
                }
            )
        )
        settings = settings_for(
            path, aws={"role_name": "AuditReader", "external_id": "ext-1234-secret"}
        )
        outcomes = await Daemon(settings, load_policy(path)).check()
    finally:
        moto.shim.clear_faults()

    assert {o.target.account_id for o in outcomes} == {member, MANAGEMENT_ACCOUNT}
    assert all(o.result is not None for o in outcomes)
    # one AssumeRole for the member account (credentials shared by its regions), none for our own
    assert len(recorder.calls) == 1
    call = recorder.calls[0]
    assert call["RoleArn"] == f"arn:aws:iam::{member}:role/AuditReader"
    assert call["ExternalId"] == "ext-1234-secret"
    assert int(call["DurationSeconds"]) == 3600


class InFlight:
    """A fault rule that slows Lambda calls and records how many run at once per access key."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.current: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)

    def __call__(self, request: ShimRequest) -> ShimResponse | None:
        if request.service != "lambda":
            return None
        with self.lock:
            self.current[request.access_key] += 1
            self.peak[request.access_key] = max(
                self.peak[request.access_key], self.current[request.access_key]
            )
        time.sleep(self.delay)
        with self.lock:
            self.current[request.access_key] -= 1
        return None


async def test_in_flight_calls_per_account_are_bounded(moto: EmbeddedMoto, tmp_path: Path) -> None:
    assert moto.shim is not None
    account = "343434343434"
    await seed_estate([account], only=["orders-api", "untraced", "public-url", "no-reservation"])
    probe = InFlight(delay=0.05)
    moto.shim.add_fault(probe)
    try:
        path = policy_for([account], tmp_path)  # two regions: two targets of one account at once
        settings = settings_for(
            path,
            aws={"max_inflight_per_account": 2},
            reconciler={"workers": 4, "per_target_concurrency": 8},
        )
        outcomes = await Daemon(settings, load_policy(path)).check()
    finally:
        moto.shim.clear_faults()
    assert all(o.result is not None for o in outcomes)
    # the daemon's credentials for the account are one access key
    assert max(probe.peak.values()) == 2
