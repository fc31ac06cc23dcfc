"""The reconciler against moto over HTTP: changes in AWS, failures, and the last known state."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.demo.estate import PRIMARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto

from .conftest import policy_for
from .faults import deny_assume_role, throttle_lambda
from .harness import (
    aws_client,
    get,
    running_daemon,
    scrape,
    select,
    settings_for,
    value,
    wait_for,
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


async def test_throttled_target_keeps_last_known_state_and_recovers(
    moto: EmbeddedMoto,
    shim,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    account, other = "777777777777", "777777777778"
    await seed_estate(
        [account, other], [PRIMARY], only=["orders-api", "untraced", "no-reservation"]
    )
    settings = settings_for(
        policy_for([account, other], tmp_path, regions=[PRIMARY]),
        reconciler={"interval_seconds": 1},
        aws={"max_attempts": 2},
    )
    target = {"aws_account_id": account, "aws_region": PRIMARY, "aws_service": "lambda"}
    async with running_daemon(settings) as daemon:
        healthy = await scrape(daemon)
        violations = {
            s[1]["control"]: s[2] for s in select(healthy, "posture_violations", **target)
        }
        assert violations["lambda-xray-active"] == 1

        shim.add_fault(throttle_lambda(account))
        t = next(t for t in daemon.store.view().targets if t.account_id == account)
        await wait_for(
            lambda: daemon.store.view().health[t].consecutive_failures >= 2, 60, "failures"
        )
        during = await scrape(daemon)
        assert value(during, "posture_target_up", **target) == 0
        # the last known results stay: no series flips to zero or to compliant
        assert {
            s[1]["control"]: s[2] for s in select(during, "posture_violations", **target)
        } == violations
        assert select(during, "posture_resource_violation", **target)
        throttles = select(during, "posture_aws_api_throttles_total", **target)
        assert throttles and throttles[0][2] > 0
        errors = [
            s
            for s in select(during, "posture_aws_api_errors_total")
            if s[1]["error_code"] == "ThrottlingException"
        ]
        assert sum(s[2] for s in errors) > 0
        # the other account keeps its interval
        o = next(t for t in daemon.store.view().targets if t.account_id == other)
        other_before = daemon.store.view().health[o].last_success
        await wait_for(
            lambda: daemon.store.view().health[o].last_success > other_before, 10, "other account"
        )

        shim.clear_faults()
        await wait_for(lambda: daemon.store.view().health[t].up, 30, "recovery")
        recovered = await scrape(daemon)
    assert value(recovered, "posture_target_up", **target) == 1
    assert value(recovered, "posture_target_consecutive_failures", **target) == 0
    assert {
        s[1]["control"]: s[2] for s in select(recovered, "posture_violations", **target)
    } == violations


async def test_denied_operation_makes_controls_unevaluated_never_passed(
    moto: EmbeddedMoto,
    shim,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from .faults import deny_operation

    account = "878787878787"
    await seed_estate([account], [PRIMARY], only=["orders-api", "open-invoke"])
    shim.add_fault(deny_operation(account, "/policy"))  # GetPolicy -> AccessDeniedException
    settings = settings_for(policy_for([account], tmp_path, regions=[PRIMARY]))
    target = {"aws_account_id": account, "aws_region": PRIMARY, "aws_service": "lambda"}
    async with running_daemon(settings) as daemon:
        samples = await scrape(daemon)
        findings = next(iter(daemon.store.view().results.values())).findings

    # the resource policy could not be read: neither a violation nor a pass, but an error
    assert (
        value(
            samples,
            "posture_control_evaluation_errors",
            **target,
            control="lambda-resource-policy-restricted",
        )
        == 2
    )
    assert (
        value(
            samples,
            "posture_evaluated_resources",
            **target,
            control="lambda-resource-policy-restricted",
        )
        == 0
    )
    assert (
        value(
            samples,
            "posture_violations",
            **target,
            control="lambda-resource-policy-restricted",
            severity="critical",
        )
        == 0
    )
    # controls that need the policy (WAF on API triggers) are not evaluated either
    assert (
        value(samples, "posture_control_evaluation_errors", **target, control="lambda-api-waf") == 2
    )
    # everything else about those functions is still evaluated, and the target is up
    assert (
        value(samples, "posture_evaluated_resources", **target, control="lambda-xray-active") == 2
    )
    assert value(samples, "posture_target_up", **target) == 1
    policy_findings = [f for f in findings if f.control == "lambda-resource-policy-restricted"]
    assert {f.status.value for f in policy_findings} == {"error"}
    assert all("AccessDeniedException" in f.evidence for f in policy_findings)
