"""The reconciler against moto over HTTP: changes in AWS, failures, and the last known state.

Faults inside a sweep (throttling, 5xx, resets, hangs, expired tokens, denied operations, odd
data) are injected by a real HTTP proxy: see test_faults.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.demo.estate import PRIMARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto

from .conftest import policy_for
from .faults import deny_assume_role
from .harness import (
    aws_client,
    get,
    running_daemon,
    scrape,
    select,
    settings_for,
    value,
    wait_for_sweeps,
)


@pytest.fixture
def shim(moto: EmbeddedMoto):  # type: ignore[no-untyped-def]
    assert moto.shim is not None
    yield moto.shim
    moto.shim.clear_faults()


async def test_fixed_resources_stop_and_deleted_resources_vanish(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    account = "444444444444"
    await seed_estate([account], [PRIMARY], only=["orders-api", "no-reservation", "public-url"])
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]), reconciler={"interval_seconds": 1}
    )
    target = {"aws_account_id": account, "aws_region": PRIMARY, "aws_service": "lambda"}
    public_url = f"arn:aws:lambda:{PRIMARY}:{account}:function:public-url"
    async with running_daemon(settings) as daemon:
        before = await scrape(daemon)
        assert (
            value(before, "posture_violations", **target, control="lambda-reserved-concurrency")
            == 1
        )
        assert value(before, "posture_violations", **target, control="lambda-url-auth") == 1
        assert select(before, "posture_resource_violation", resource=public_url)
        assert value(before, "posture_resources", **target, resource_type="lambda-function") == 3

        async with aws_client("lambda", account) as lam:
            await lam.put_function_concurrency(
                FunctionName="no-reservation", ReservedConcurrentExecutions=5
            )
            await lam.delete_function(FunctionName="public-url")
        await wait_for_sweeps(daemon, 2)
        after = await scrape(daemon)

    assert value(after, "posture_violations", **target, control="lambda-reserved-concurrency") == 0
    assert value(after, "posture_violations", **target, control="lambda-url-auth") == 0
    assert not [s for s in after if s[1].get("resource") == public_url]
    assert value(after, "posture_resources", **target, resource_type="lambda-function") == 2


async def test_assume_role_denied_for_one_account_leaves_the_others_complete(
    moto: EmbeddedMoto,
    shim,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    denied, fine = "555555555555", "666666666666"
    await seed_estate([denied, fine], [PRIMARY], only=["orders-api", "untraced"])
    shim.add_fault(deny_assume_role(denied))
    settings = settings_for(policy_for([denied, fine], tmp_path, regions=[PRIMARY]))
    async with running_daemon(settings) as daemon:  # ready: every target finished or failed once
        samples = await scrape(daemon)
        status, body = await get(daemon, "/readyz")

    assert status == 200, body
    assert value(samples, "posture_target_up", aws_account_id=fine, aws_region=PRIMARY) == 1
    assert (
        value(samples, "posture_violations", aws_account_id=fine, control="lambda-xray-active") == 1
    )
    assert value(samples, "posture_target_up", aws_account_id=denied, aws_region=PRIMARY) == 0
    assert value(samples, "posture_account_up", aws_account_id=denied) == 0
    assert value(samples, "posture_account_up", aws_account_id=fine) == 1
    assert (
        value(samples, "posture_target_last_success_timestamp_seconds", aws_account_id=denied) == 0
    )
    assert value(samples, "posture_target_consecutive_failures", aws_account_id=denied) >= 1
    # nothing is claimed about the account the daemon could not look into
    assert not select(samples, "posture_violations", aws_account_id=denied)
    assert not select(samples, "posture_evaluated_resources", aws_account_id=denied)
