"""Every ECS control through the registry, on the frozen task definitions, services and clusters
the collector builds (environment values already reduced to detector names)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.controls.registry import EvalContext, Outcome, get_control
from daemon.model import Status, Target
from daemon.model import ecs as m
from daemon.model.secrets import env_var

ACCOUNT, REGION = "111111111111", "us-east-1"
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TARGET = Target(ACCOUNT, REGION, "ecs")


def container(name: str = "app", **overrides: Any) -> m.Container:
    fields: dict[str, Any] = {
        "name": name,
        "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/web:1",
        "privileged": False,
        "user": "1000:1000",
        "readonly_root_filesystem": True,
        "log_driver": "awslogs",
        "env": (env_var("STAGE", "prod"),),
        "memory": 256,
    }
    fields.update(overrides)
    return m.Container(**fields)


def make_td(family: str = "web", *containers: m.Container, **overrides: Any) -> m.TaskDefinition:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:1",
        "family": family,
        "revision": 1,
        "account_id": ACCOUNT,
        "region": REGION,
        "network_mode": "awsvpc",
        "requires_compatibilities": ("FARGATE",),
        "task_role_arn": f"arn:aws:iam::{ACCOUNT}:role/{family}",
        "memory": 512,
        "containers": containers or (container(),),
    }
    fields.update(overrides)
    return m.TaskDefinition(**fields)


def make_service(**overrides: Any) -> m.EcsService:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/prod/web",
        "name": "web",
        "account_id": ACCOUNT,
        "region": REGION,
        "cluster_arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod",
        "launch_type": "FARGATE",
        "platform_version": "LATEST",
        "assign_public_ip": "DISABLED",
        "circuit_breaker_enable": True,
        "circuit_breaker_rollback": True,
    }
    fields.update(overrides)
    return m.EcsService(**fields)


def make_cluster(**overrides: Any) -> m.EcsCluster:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod",
        "name": "prod",
        "account_id": ACCOUNT,
        "region": REGION,
        "container_insights": "enabled",
    }
    fields.update(overrides)
    return m.EcsCluster(**fields)


def run(control_id: str, resource: Any, params: dict[str, Any] | None = None) -> Outcome | None:
    ctrl = get_control(control_id)
    snapshot = m.EcsSnapshot(TARGET, NOW, (), (), ())
    ctx = EvalContext(now=NOW, target=TARGET, snapshot=snapshot)
    return ctrl.evaluate(resource, ctrl.params_model.model_validate(params or {}), ctx)


def expect(outcome: Outcome | None, status: Status, *fragments: str) -> None:
    assert outcome is not None, "expected a verdict, got not-applicable"
    assert outcome.status is status, outcome.evidence
    for fragment in fragments:
        assert fragment in outcome.evidence, outcome.evidence


def test_every_task_definition_control_needs_a_readable_definition() -> None:
    from daemon.controls.registry import controls_for

    for ctrl in controls_for("ecs"):
        if ctrl.resource_type == m.TASK_DEFINITION:
            assert ctrl.requires == (m.ASPECT_DEFINITION,), ctrl.id


def test_privileged() -> None:
    cid = "ecs-task-no-privileged-containers"
    expect(run(cid, make_td()), Status.PASS)
    td = make_td("x", container(), container("agent", privileged=True))
    expect(run(cid, td), Status.FAIL, "agent")
    expect(run(cid, make_td("x", container(privileged=None))), Status.PASS)


@pytest.mark.parametrize(
    ("user", "status"),
    [
        ("1000", Status.PASS),
        ("1000:1000", Status.PASS),
        ("app", Status.PASS),
        ("root", Status.FAIL),
        ("0", Status.FAIL),
        ("0:1000", Status.FAIL),
        ("root:root", Status.FAIL),
        (None, Status.FAIL),
    ],
)
def test_non_root_user(user: str | None, status: Status) -> None:
    expect(run("ecs-task-non-root-user", make_td("x", container(user=user))), status)


def test_non_root_user_is_not_judged_on_windows() -> None:
    td = make_td("x", container(user=None), os_family="WINDOWS_SERVER_2022_CORE")
    assert run("ecs-task-non-root-user", td) is None


def test_readonly_root_filesystem() -> None:
    cid = "ecs-task-readonly-root-filesystem"
    expect(run(cid, make_td()), Status.PASS)
    for value in (False, None):
        td = make_td("x", container(), container("side", readonly_root_filesystem=value))
        expect(run(cid, td), Status.FAIL, "side")


def test_logging() -> None:
    cid = "ecs-task-logging"
    expect(run(cid, make_td()), Status.PASS, "awslogs")
    expect(run(cid, make_td("x", container(log_driver=None))), Status.FAIL, "no log configuration")
    expect(run(cid, make_td("x", container(log_driver="json-file"))), Status.FAIL, "json-file")
    expect(
        run(
            cid,
            make_td("x", container(log_driver="json-file")),
            {"allowed_log_drivers": ["json-file"]},
        ),
        Status.PASS,
    )
    firelens = make_td("x", container(log_driver="awsfirelens"))
    expect(run(cid, firelens), Status.FAIL, "without a FireLens log router")
    routed = make_td("x", container(log_driver="awsfirelens"), container("router", firelens=True))
    expect(run(cid, routed), Status.PASS)


def test_environment_secrets() -> None:
    cid = "ecs-task-no-environment-secrets"
    expect(run(cid, make_td()), Status.PASS, "1 variable(s)")
    # no name pattern or value detector catches this one: only ECS.8's fixed list does
    key = env_var("AWS_ACCESS_KEY_ID", "not-a-key-shaped-value")
    expect(run(cid, make_td("x", container(env=(key,)))), Status.FAIL, "must never hold")
    token = env_var("GITHUB", "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8")
    expect(run(cid, make_td("x", container(env=(token,)))), Status.FAIL, "github_token")
    pw = env_var("DB_PASSWORD", "x")
    expect(
        run(cid, make_td("x", container("a"), container("b", env=(pw,)))),
        Status.FAIL,
        "b: DB_PASSWORD",
    )
    # references and names that point at a secret are fine; empty values too
    ref = env_var("DB_PASSWORD", "arn:aws:secretsmanager:us-east-1:111111111111:secret:db")
    arn = env_var("DB_PASSWORD_ARN", "whatever")
    empty = env_var("API_TOKEN", "")
    expect(run(cid, make_td("x", container(env=(ref, arn, empty)))), Status.PASS)
    expect(
        run(cid, make_td("x", container(env=(key,))), {"forbidden_names": []}),
        Status.PASS,
    )


def test_network_mode() -> None:
    cid = "ecs-task-awsvpc-network-mode"
    expect(run(cid, make_td()), Status.PASS)
    expect(run(cid, make_td(network_mode="host")), Status.FAIL, "host")
    expect(run(cid, make_td(network_mode=None)), Status.FAIL, "bridge (the default)")
    expect(
        run(cid, make_td(network_mode="bridge"), {"allowed_network_modes": ["awsvpc", "bridge"]}),
        Status.PASS,
    )


def test_task_role() -> None:
    cid = "ecs-task-role"
    expect(run(cid, make_td()), Status.PASS, "task role")
    bare = make_td("batch", task_role_arn=None)
    expect(run(cid, bare), Status.FAIL, "no task role")
    expect(run(cid, bare, {"exempt_families": ["bat*"]}), Status.PASS, "not calling AWS")
    # aws_hints: required only when names suggest AWS use
    expect(run(cid, bare, {"required_for": "aws_hints"}), Status.PASS, "nothing suggests")
    hinted = make_td(
        "batch",
        container(env=(env_var("UPLOAD_BUCKET", "b"), env_var("AWS_REGION", "us-east-1"))),
        task_role_arn=None,
    )
    expect(
        run(cid, hinted, {"required_for": "aws_hints"}), Status.FAIL, "AWS_REGION", "UPLOAD_BUCKET"
    )
    with pytest.raises(ValidationError):
        get_control(cid).params_model.model_validate({"aws_hint_patterns": ["("]})


def test_memory_limits() -> None:
    cid = "ecs-task-memory-limits"
    expect(run(cid, make_td()), Status.PASS, "task memory 512")
    no_task = make_td("x", container(memory=128), container("b", memory=64), memory=None)
    expect(run(cid, no_task), Status.PASS, "every container")
    soft = make_td("x", container(memory=None, memory_reservation=128), memory=None)
    expect(run(cid, soft), Status.FAIL, "soft limit only")
    strict = make_td("x", container(), container("b", memory=None))
    expect(run(cid, strict), Status.PASS)
    expect(run(cid, strict, {"require_container_limits": True}), Status.FAIL, "b")


def test_host_namespaces() -> None:
    cid = "ecs-task-no-host-namespaces"
    expect(run(cid, make_td(pid_mode="task", ipc_mode="none")), Status.PASS)
    expect(run(cid, make_td(pid_mode="host")), Status.FAIL, "pidMode host")
    expect(run(cid, make_td(ipc_mode="host")), Status.FAIL, "ipcMode host")


def test_public_ip() -> None:
    cid = "ecs-service-no-public-ip"
    expect(run(cid, make_service()), Status.PASS)
    expect(run(cid, make_service(assign_public_ip="ENABLED")), Status.FAIL)
    assert run(cid, make_service(assign_public_ip=None, launch_type="EC2")) is None


@pytest.mark.parametrize(
    ("overrides", "params", "status", "fragment"),
    [
        ({}, {}, Status.PASS, "LATEST"),
        ({"platform_version": None}, {}, Status.PASS, "LATEST"),
        ({"platform_version": "1.4.0"}, {}, Status.PASS, "1.4.0"),
        ({"platform_version": "1.3.0"}, {}, Status.FAIL, "older than 1.4.0"),
        ({"platform_version": "1.4.0"}, {"require_latest": True}, Status.FAIL, "pinned"),
        ({"platform_version": "1.4.0"}, {"min_linux_version": "1.5"}, Status.FAIL, "older"),
        (
            {"platform_version": "1.0.0", "platform_family": "WINDOWS_SERVER_2019_CORE"},
            {},
            Status.PASS,
            "1.0.0",
        ),
        ({"platform_version": "beta"}, {}, Status.FAIL, "not recognised"),
        (
            {
                "launch_type": None,
                "capacity_providers": ("FARGATE", "FARGATE_SPOT"),
                "platform_version": "1.3.0",
            },
            {},
            Status.FAIL,
            "1.3.0",
        ),
    ],
)
def test_fargate_platform(
    overrides: dict[str, Any], params: dict[str, Any], status: Status, fragment: str
) -> None:
    expect(
        run("ecs-service-fargate-platform-version", make_service(**overrides), params),
        status,
        fragment,
    )


def test_fargate_platform_skips_ec2_and_rejects_bad_minimums() -> None:
    cid = "ecs-service-fargate-platform-version"
    assert run(cid, make_service(launch_type="EC2", platform_version=None)) is None
    mixed = make_service(launch_type=None, capacity_providers=("FARGATE", "my-asg-provider"))
    assert run(cid, mixed) is None
    with pytest.raises(ValidationError, match="not a version"):
        get_control(cid).params_model.model_validate({"min_linux_version": "latest"})


def test_circuit_breaker() -> None:
    cid = "ecs-service-circuit-breaker"
    expect(run(cid, make_service()), Status.PASS, "with rollback")
    expect(run(cid, make_service(circuit_breaker_enable=None)), Status.FAIL, "off")
    no_rollback = make_service(circuit_breaker_rollback=False)
    expect(run(cid, no_rollback), Status.FAIL, "without rollback")
    expect(run(cid, no_rollback, {"require_rollback": False}), Status.PASS)
    assert run(cid, make_service(deployment_controller="CODE_DEPLOY")) is None


@pytest.mark.parametrize(
    ("value", "params", "status"),
    [
        ("enabled", {}, Status.PASS),
        ("enhanced", {}, Status.PASS),
        ("disabled", {}, Status.FAIL),
        (None, {}, Status.FAIL),
        ("enabled", {"require_enhanced": True}, Status.FAIL),
        ("enhanced", {"require_enhanced": True}, Status.PASS),
    ],
)
def test_container_insights(value: str | None, params: dict[str, Any], status: Status) -> None:
    expect(
        run("ecs-cluster-container-insights", make_cluster(container_insights=value), params),
        status,
    )
