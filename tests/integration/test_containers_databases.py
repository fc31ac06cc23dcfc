"""ECR, ECS and RDS targets against moto over HTTP: denied reads, fixes, and throttling.

The account is the test's own (the shared estate stays as seeded). Faults come from the shim.
"""

from __future__ import annotations

from pathlib import Path

from daemon.demo.estate import PRIMARY, expected_violations, seed_estate
from daemon.demo.moto_server import EmbeddedMoto

from .conftest import policy_for
from .faults import deny, throttle_service
from .harness import (
    Sample,
    aws_client,
    running_daemon,
    scrape,
    select,
    settings_for,
    value,
    wait_for,
    wait_for_sweeps,
)

ACCOUNT = "565656565656"
SEEDED = [
    "no-lifecycle",  # ECR: no lifecycle policy
    "public-images",  # ECR: public repository policy
    "prod",  # ECS cluster
    "web",  # ECS task definition family and service (compliant)
    "no-breaker",  # ECS service without a circuit breaker
    "unprotected-db",  # RDS: no deletion protection
    "open-sg-db",  # RDS: port open to the world
]
SERVICES = ["ecr", "ecs", "rds"]


def where(service: str) -> dict[str, str]:
    return {"aws_account_id": ACCOUNT, "aws_region": PRIMARY, "aws_service": service}


def violations(samples: list[Sample], service: str) -> dict[str, float]:
    return {s[1]["control"]: s[2] for s in select(samples, "posture_violations", **where(service))}


async def test_denied_fixed_and_throttled(moto: EmbeddedMoto, tmp_path: Path) -> None:
    shim = moto.shim
    assert shim is not None
    await seed_estate([ACCOUNT], [PRIMARY], only=SEEDED)
    expected = {
        (v.control, v.resource)
        for v in expected_violations([ACCOUNT], [PRIMARY], only=SEEDED)
        if v.control.split("-", 1)[0] in SERVICES
    }
    assert len(expected) == 5
    settings = settings_for(
        policy_for([ACCOUNT], tmp_path, regions=[PRIMARY], services=SERVICES),
        reconciler={"interval_seconds": 1, "shutdown_grace_seconds": 1},
        aws={"max_attempts": 1},  # throttled calls fail at once (no retry sleeps)
    )
    policy_rule = deny(ACCOUNT, "ecr", "GetRepositoryPolicy")
    groups_rule = deny(ACCOUNT, "ec2", "DescribeSecurityGroups", "UnauthorizedOperation")
    shim.add_fault(policy_rule)
    shim.add_fault(groups_rule)
    try:
        async with running_daemon(settings) as daemon:
            denied = await scrape(daemon)
            shim.clear_faults()

            async with aws_client("rds", ACCOUNT) as rds:
                await rds.modify_db_instance(
                    DBInstanceIdentifier="unprotected-db",
                    DeletionProtection=True,
                    ApplyImmediately=True,
                )
            async with aws_client("ecs", ACCOUNT) as ecs:
                await ecs.update_service(
                    cluster="prod",
                    service="no-breaker",
                    deploymentConfiguration={
                        "deploymentCircuitBreaker": {"enable": True, "rollback": True}
                    },
                )
            async with aws_client("ecr", ACCOUNT) as ecr:
                await ecr.delete_repository(repositoryName="public-images", force=True)
            await wait_for_sweeps(daemon, 2)
            fixed = await scrape(daemon)
            findings = [f for r in daemon.store.view().results.values() for f in r.findings]

            shim.add_fault(throttle_service(ACCOUNT, "ecs"))
            targets = {t.service: t for t in daemon.reconciler.targets}
            await wait_for(
                lambda: all(
                    daemon.store.view().health[targets[s]].consecutive_failures >= 1
                    for s in ("ecs", "ecr")
                ),
                60,
                "ECS and ECR failures",
            )
            await wait_for_sweeps_of(daemon, ["rds"])
            throttled = await scrape(daemon)
    finally:
        shim.clear_faults()

    # --- denied: the controls that need the data are errors, never passes or violations -----
    errors = {
        "ecr": ("ecr-repository-policy-restricted", 2),
        "rds": ("rds-security-group-no-public-ingress", 2),
    }
    for service, (control, count) in errors.items():
        labels = {**where(service), "control": control}
        assert value(denied, "posture_control_evaluation_errors", **labels) == count
        assert value(denied, "posture_evaluated_resources", **labels) == 0
        assert violations(denied, service)[control] == 0
    # ... while everything else about the same resources is evaluated
    assert violations(denied, "ecr")["ecr-lifecycle-policy"] == 1
    assert violations(denied, "rds")["rds-deletion-protection"] == 1
    assert violations(denied, "ecs")["ecs-service-circuit-breaker"] == 1
    assert all(value(denied, "posture_target_up", **where(s)) == 1 for s in SERVICES)

    # --- fixed: violations gone, the deleted repository's series gone, denied data now read ---
    assert violations(fixed, "rds")["rds-deletion-protection"] == 0
    assert violations(fixed, "ecs")["ecs-service-circuit-breaker"] == 0
    assert violations(fixed, "rds")["rds-security-group-no-public-ingress"] == 1
    assert violations(fixed, "ecr")["ecr-repository-policy-restricted"] == 0
    assert violations(fixed, "ecr")["ecr-lifecycle-policy"] == 1
    gone = f"arn:aws:ecr:{PRIMARY}:{ACCOUNT}:repository/public-images"
    assert not [s for s in fixed if s[1].get("resource") == gone]
    assert value(fixed, "posture_resources", **where("ecr"), resource_type="ecr-repository") == 1
    assert {(f.control, f.resource) for f in findings if f.violating} == expected - {
        ("rds-deletion-protection", f"arn:aws:rds:{PRIMARY}:{ACCOUNT}:db:unprotected-db"),
        (
            "ecs-service-circuit-breaker",
            f"arn:aws:ecs:{PRIMARY}:{ACCOUNT}:service/prod/no-breaker",
        ),
        ("ecr-repository-policy-restricted", gone),
    }
    assert not [f for f in findings if f.status.value == "error"]

    # --- throttled ECS: that target is down and keeps its last results. So is the ECR target,
    # which reads the task definitions for the (enabled) images-in-use control: throttling
    # fails a target rather than publishing a half-seen one. RDS is unaffected.
    for service in ("ecs", "ecr"):
        assert value(throttled, "posture_target_up", **where(service)) == 0
        assert violations(throttled, service) == violations(fixed, service)
    assert value(throttled, "posture_target_up", **where("rds")) == 1


async def wait_for_sweeps_of(daemon, services: list[str]) -> None:  # type: ignore[no-untyped-def]
    health = daemon.store.view().health
    start = {t: h.last_success for t, h in health.items() if t.service in services}

    def done() -> bool:
        now = daemon.store.view().health
        return all(now[t].last_success > start[t] for t in start)

    await wait_for(done, 60, f"a sweep of {services}")
