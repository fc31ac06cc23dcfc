"""The ECS collector on recorded answers (botocore-checked).

Covers what moto cannot produce: services on a capacity provider strategy (moto reports them as
launchType EC2) or on the cluster's default strategy, CodeDeploy-controlled services, Windows
task definitions, a denied DescribeTaskDefinition and a family deregistered mid-sweep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from daemon.collectors.base import CollectContext
from daemon.collectors.ecs import EcsCollector, TaskDefinitionReader
from daemon.controls.registry import EvalContext, get_control
from daemon.model import Status
from daemon.model import ecs as m

from .recorded import FakeApi, context, error

ACCOUNT, REGION = "111122223333", "us-west-2"
SECRET = "p4ssw0rd-never-stored"
CLUSTER = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod"


def td_arn(family: str, revision: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}"


def task_definition(family: str, revision: int = 3, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "taskDefinitionArn": td_arn(family, revision),
        "family": family,
        "revision": revision,
        "status": "ACTIVE",
        "taskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/{family}-task",
        "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/ecsTaskExecutionRole",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "compatibilities": ["EC2", "FARGATE"],
        "cpu": "512",
        "memory": "1024",
        "registeredAt": dt.datetime(2026, 1, 12, 8, 0, tzinfo=dt.UTC),
        "containerDefinitions": [
            {
                "name": "app",
                "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/web:1.4.2",
                "essential": True,
                "user": "10001",
                "readonlyRootFilesystem": True,
                "environment": [
                    {"name": "DB_PASSWORD", "value": SECRET},
                    {"name": "ORDERS_TABLE", "value": "orders"},
                ],
                "secrets": [
                    {
                        "name": "API_KEY",
                        "valueFrom": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/api-key",
                    }
                ],
                "logConfiguration": {
                    "logDriver": "awsfirelens",
                    "options": {"Name": "cloudwatch_logs"},
                },
            },
            {
                "name": "log-router",
                "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable",
                "essential": True,
                "user": "0",
                "firelensConfiguration": {"type": "fluentbit"},
                "memoryReservation": 50,
                "logConfiguration": {"logDriver": "awslogs", "options": {}},
            },
        ],
    }
    raw.update(overrides)
    return raw


def service(name: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "serviceArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/prod/{name}",
        "serviceName": name,
        "clusterArn": CLUSTER,
        "status": "ACTIVE",
        "desiredCount": 2,
        "runningCount": 2,
        "pendingCount": 0,
        "taskDefinition": td_arn("web", 3),
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        },
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": ["subnet-0a1b2c3d4e5f60001"],
                "securityGroups": ["sg-0a1b2c3d4e5f60001"],
                "assignPublicIp": "DISABLED",
            }
        },
        "schedulingStrategy": "REPLICA",
        "deploymentController": {"type": "ECS"},
        "tags": [{"key": "team", "value": "web"}],
    }
    raw.update(overrides)
    return raw


def answers(**overrides: Any) -> dict[tuple[str, str], Any]:
    base: dict[tuple[str, str], Any] = {
        ("ecs", "list_clusters"): {"clusterArns": [CLUSTER]},
        ("ecs", "describe_clusters"): {
            "clusters": [
                {
                    "clusterArn": CLUSTER,
                    "clusterName": "prod",
                    "status": "ACTIVE",
                    "settings": [{"name": "containerInsights", "value": "enhanced"}],
                    "capacityProviders": ["FARGATE", "FARGATE_SPOT"],
                    "defaultCapacityProviderStrategy": [
                        {"capacityProvider": "FARGATE_SPOT", "weight": 3},
                        {"capacityProvider": "FARGATE", "weight": 1, "base": 1},
                    ],
                    "tags": [{"key": "env", "value": "prod"}],
                }
            ],
            "failures": [],
        },
        ("ecs", "list_services"): {
            "serviceArns": [f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/prod/{n}" for n in "abcd"]
        },
        ("ecs", "describe_services"): {
            "services": [
                service(
                    "spot",
                    capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
                    platformVersion="1.3.0",
                    platformFamily="LINUX",
                ),
                service("default-strategy"),  # no launch type, no strategy: the cluster's
                service(
                    "blue-green",
                    launchType="FARGATE",
                    deploymentController={"type": "CODE_DEPLOY"},
                    deploymentConfiguration={"maximumPercent": 200},
                ),
                service(
                    "windows",
                    launchType="FARGATE",
                    platformVersion="1.0.0",
                    platformFamily="WINDOWS_SERVER_2022_CORE",
                ),
                service("gone", status="INACTIVE"),
            ],
            "failures": [],
        },
        ("ecs", "list_task_definition_families"): {"families": ["web", "win"]},
        ("ecs", "describe_task_definition"): lambda p: {
            "taskDefinition": task_definition(
                p["taskDefinition"],
                **(
                    {"runtimePlatform": {"operatingSystemFamily": "WINDOWS_SERVER_2022_CORE"}}
                    if p["taskDefinition"] == "win"
                    else {}
                ),
            ),
            "tags": [{"key": "team", "value": "web"}],
        },
    }
    base.update({tuple(k.split(".", 1)): v for k, v in overrides.items()})  # type: ignore[misc]
    return base


async def collect(api: FakeApi, reader: TaskDefinitionReader | None = None) -> tuple[Any, Any]:
    ctx = context(api, "ecs")
    snapshot = await EcsCollector(reader or TaskDefinitionReader(0)).collect(ctx)
    return snapshot, ctx


def evaluate(control_id: str, resource: Any, snapshot: Any, **params: Any) -> Any:
    ctrl = get_control(control_id)
    ctx = EvalContext(
        now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC), target=snapshot.target, snapshot=snapshot
    )
    return ctrl.evaluate(resource, ctrl.params_model.model_validate(params), ctx)


async def test_services_capacity_providers_and_controllers() -> None:
    snapshot, _ = await collect(FakeApi(answers(), ACCOUNT, REGION))
    by_name = {s.name: s for s in snapshot.services}
    assert set(by_name) == {"spot", "default-strategy", "blue-green", "windows"}  # not INACTIVE
    spot, default = by_name["spot"], by_name["default-strategy"]
    assert spot.launch_type is None and spot.capacity_providers == ("FARGATE_SPOT",)
    assert spot.uses_fargate
    assert default.capacity_providers == ("FARGATE_SPOT", "FARGATE") and default.uses_fargate
    # a Fargate service on an old platform, through a capacity provider: judged
    outcome = evaluate("ecs-service-fargate-platform-version", spot, snapshot)
    assert outcome.status is Status.FAIL and "1.3.0" in outcome.evidence
    # Windows has its own version line: 1.0.0 is current
    outcome = evaluate("ecs-service-fargate-platform-version", by_name["windows"], snapshot)
    assert outcome.status is Status.PASS
    # no platform version returned: Fargate's default, LATEST
    outcome = evaluate("ecs-service-fargate-platform-version", default, snapshot)
    assert outcome.status is Status.PASS and "LATEST" in outcome.evidence
    # CodeDeploy does its own rollbacks
    assert evaluate("ecs-service-circuit-breaker", by_name["blue-green"], snapshot) is None
    assert snapshot.clusters[0].container_insights == "enhanced"
    assert dict(snapshot.clusters[0].tags) == {"env": "prod"}


async def test_task_definitions_drop_environment_values() -> None:
    snapshot, _ = await collect(FakeApi(answers(), ACCOUNT, REGION))
    web = next(t for t in snapshot.task_definitions if t.family == "web")
    app, router = web.containers
    assert [v.name for v in app.env] == ["DB_PASSWORD", "ORDERS_TABLE"]
    assert app.secret_names == ("API_KEY",)
    assert router.firelens and router.memory_reservation == 50 and router.memory is None
    assert web.memory == 1024 and web.revision == 3 and dict(web.tags) == {"team": "web"}
    assert SECRET not in repr(snapshot)  # the value was reduced where it was read
    outcome = evaluate("ecs-task-no-environment-secrets", web, snapshot)
    assert outcome.status is Status.FAIL and "DB_PASSWORD" in outcome.evidence
    assert SECRET not in outcome.evidence
    # FireLens with its router container is a valid log configuration
    assert evaluate("ecs-task-logging", web, snapshot).status is Status.PASS
    # the router runs as root
    outcome = evaluate("ecs-task-non-root-user", web, snapshot)
    assert outcome.status is Status.FAIL and "log-router" in outcome.evidence
    win = next(t for t in snapshot.task_definitions if t.family == "win")
    assert win.is_windows
    assert evaluate("ecs-task-non-root-user", win, snapshot) is None
    assert evaluate("ecs-task-readonly-root-filesystem", win, snapshot) is None


async def test_a_denied_family_is_kept_so_its_controls_are_errors() -> None:
    def describe(p: dict[str, Any]) -> Any:
        if p["taskDefinition"] == "win":
            return error("AccessDeniedException")
        return {"taskDefinition": task_definition(p["taskDefinition"])}

    api = FakeApi(answers(**{"ecs.describe_task_definition": describe}), ACCOUNT, REGION)
    snapshot, _ = await collect(api)
    win = next(t for t in snapshot.task_definitions if t.family == "win")
    assert win.errors == {m.ASPECT_DEFINITION: "AccessDeniedException"}
    assert win.arn.endswith(":task-definition/win") and win.revision is None
    assert get_control("ecs-task-no-privileged-containers").requires == (m.ASPECT_DEFINITION,)


async def test_families_without_an_active_revision_are_skipped() -> None:
    def describe(p: dict[str, Any]) -> Any:
        if p["taskDefinition"] == "win":
            return error("ClientException")  # deregistered since it was listed
        if p["taskDefinition"] == "web":  # an endpoint answering with an INACTIVE revision
            return {"taskDefinition": task_definition("web", 4, status="INACTIVE")}
        return {"taskDefinition": task_definition("web", 2)}

    api = FakeApi(
        answers(
            **{
                "ecs.describe_task_definition": describe,
                "ecs.list_task_definitions": {
                    "taskDefinitionArns": [td_arn("web-canary", 9), td_arn("web", 2)]
                },
            }
        ),
        ACCOUNT,
        REGION,
    )
    snapshot, ctx = await collect(api)
    assert [t.arn for t in snapshot.task_definitions] == [td_arn("web", 2)]
    assert [i.aspect for i in ctx.issues] == [m.ASPECT_DEFINITION]


async def test_the_reader_shares_one_read_between_concurrent_collectors() -> None:
    api = FakeApi(answers(), ACCOUNT, REGION)
    reader = TaskDefinitionReader(ttl_seconds=60)
    ctx: CollectContext = context(api, "ecs")
    first, second = await asyncio.gather(reader.latest(ctx), reader.latest(ctx))
    assert first == second and len(first) == 2
    await reader.latest(ctx)  # cached
    assert api.count("ecs", "list_task_definition_families") == 1
    assert api.count("ecs", "describe_task_definition") == 2
    expired = TaskDefinitionReader(ttl_seconds=0)
    await expired.latest(ctx)
    await expired.latest(ctx)
    assert api.count("ecs", "list_task_definition_families") == 3


async def test_a_throttled_listing_fails_the_target_and_is_not_cached() -> None:
    reader = TaskDefinitionReader(ttl_seconds=60)
    throttled = FakeApi(
        answers(**{"ecs.list_task_definition_families": error("ThrottlingException")}),
        ACCOUNT,
        REGION,
    )
    with pytest.raises(Exception, match="ThrottlingException"):
        await collect(throttled, reader)
    snapshot, _ = await collect(FakeApi(answers(), ACCOUNT, REGION), reader)
    assert len(snapshot.task_definitions) == 2
