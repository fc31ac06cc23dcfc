"""Amazon ECS: clusters, services, and the latest ACTIVE revision of every task-definition family.

Task definitions are read by a `TaskDefinitionReader` shared with the ECR collector (which needs
to know which images are in use): it caches the reduced definitions of an account-region for a
fraction of the reconcile interval, so the two targets read them once per sweep.

Container environment values are reduced to `EnvVar` in `container` and dropped there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from daemon.aws.errors import AwsError, ErrorKind
from daemon.collectors.base import CollectContext, Operation, parse_timestamp
from daemon.model import ecs as m
from daemon.model import frozen_errors, frozen_tags
from daemon.model.secrets import env_var

SERVICE = "ecs"

TASK_DEFINITION_OPERATIONS: tuple[Operation, ...] = (
    Operation("ecs", "ListTaskDefinitionFamilies", "ecs:ListTaskDefinitionFamilies"),
    Operation("ecs", "ListTaskDefinitions", "ecs:ListTaskDefinitions"),
    Operation("ecs", "DescribeTaskDefinition", "ecs:DescribeTaskDefinition"),
)
OPERATIONS: tuple[Operation, ...] = (
    Operation("ecs", "ListClusters", "ecs:ListClusters"),
    Operation("ecs", "DescribeClusters", "ecs:DescribeClusters"),
    Operation("ecs", "ListServices", "ecs:ListServices"),
    Operation("ecs", "DescribeServices", "ecs:DescribeServices"),
    *TASK_DEFINITION_OPERATIONS,
)

_DESCRIBE_CLUSTERS_MAX = 100
_DESCRIBE_SERVICES_MAX = 10


def _tags(raw: Sequence[dict[str, Any]] | None) -> dict[str, str]:
    return {str(t.get("key")): str(t.get("value", "")) for t in raw or [] if t.get("key")}


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def container(raw: dict[str, Any]) -> m.Container:
    """A container definition, with environment values reduced to what they look like."""
    log = raw.get("logConfiguration") or {}
    return m.Container(
        name=str(raw.get("name", "")),
        image=str(raw.get("image", "")),
        essential=bool(raw.get("essential", True)),
        privileged=raw.get("privileged"),
        user=(str(raw["user"]).strip() or None) if raw.get("user") is not None else None,
        readonly_root_filesystem=raw.get("readonlyRootFilesystem"),
        log_driver=log.get("logDriver") or None,
        firelens=bool(raw.get("firelensConfiguration")),
        env=tuple(
            env_var(e.get("name", ""), e.get("value"))
            for e in sorted(raw.get("environment") or [], key=lambda e: str(e.get("name", "")))
        ),
        secret_names=tuple(str(s.get("name", "")) for s in raw.get("secrets") or []),
        environment_files=len(raw.get("environmentFiles") or []),
        memory=_int(raw.get("memory")),
        memory_reservation=_int(raw.get("memoryReservation")),
    )


def task_definition(
    raw: dict[str, Any], tags: Sequence[dict[str, Any]] | None, account_id: str, region: str
) -> m.TaskDefinition:
    """A DescribeTaskDefinition answer as a frozen value (environment values dropped)."""
    family = str(raw.get("family", ""))
    return m.TaskDefinition(
        arn=str(raw.get("taskDefinitionArn", "")),
        family=family,
        revision=_int(raw.get("revision")),
        account_id=account_id,
        region=region,
        status=str(raw.get("status", "ACTIVE")),
        network_mode=raw.get("networkMode") or None,
        requires_compatibilities=tuple(raw.get("requiresCompatibilities") or ()),
        task_role_arn=raw.get("taskRoleArn") or None,
        execution_role_arn=raw.get("executionRoleArn") or None,
        cpu=raw.get("cpu"),
        memory=_int(raw.get("memory")),
        pid_mode=raw.get("pidMode") or None,
        ipc_mode=raw.get("ipcMode") or None,
        os_family=(raw.get("runtimePlatform") or {}).get("operatingSystemFamily"),
        containers=tuple(container(c) for c in raw.get("containerDefinitions") or []),
        registered_at=parse_timestamp(raw.get("registeredAt")),
        tags=frozen_tags(_tags(tags)),
    )


def ecs_cluster(raw: dict[str, Any], account_id: str, region: str) -> m.EcsCluster:
    settings = {s.get("name"): s.get("value") for s in raw.get("settings") or []}
    return m.EcsCluster(
        arn=str(raw.get("clusterArn", "")),
        name=str(raw.get("clusterName", "")),
        account_id=account_id,
        region=region,
        status=str(raw.get("status", "")),
        container_insights=settings.get("containerInsights"),
        default_capacity_providers=tuple(
            str(s.get("capacityProvider"))
            for s in raw.get("defaultCapacityProviderStrategy") or []
            if s.get("capacityProvider")
        ),
        tags=frozen_tags(_tags(raw.get("tags"))),
    )


def ecs_service(
    raw: dict[str, Any], account_id: str, region: str, cluster_default: Sequence[str] = ()
) -> m.EcsService:
    """A DescribeServices entry; with neither a launch type nor a strategy, the cluster's default
    capacity provider strategy applies."""
    awsvpc = (raw.get("networkConfiguration") or {}).get("awsvpcConfiguration")
    providers = tuple(
        str(s.get("capacityProvider"))
        for s in raw.get("capacityProviderStrategy") or []
        if s.get("capacityProvider")
    )
    launch_type = raw.get("launchType") or None
    if launch_type is None and not providers:
        providers = tuple(cluster_default)
    deployment = raw.get("deploymentConfiguration")
    breaker = (deployment or {}).get("deploymentCircuitBreaker")
    primary: dict[str, Any] = next(
        (d for d in raw.get("deployments") or [] if d.get("status") == "PRIMARY"), {}
    )
    return m.EcsService(
        arn=str(raw.get("serviceArn", "")),
        name=str(raw.get("serviceName", "")),
        account_id=account_id,
        region=region,
        cluster_arn=str(raw.get("clusterArn", "")),
        status=str(raw.get("status", "")),
        launch_type=launch_type,
        capacity_providers=providers,
        platform_version=raw.get("platformVersion") or primary.get("platformVersion") or None,
        platform_family=raw.get("platformFamily") or primary.get("platformFamily") or None,
        assign_public_ip=(awsvpc or {}).get("assignPublicIp") or None,
        deployment_controller=str((raw.get("deploymentController") or {}).get("type") or "ECS"),
        circuit_breaker_enable=None if breaker is None else bool(breaker.get("enable")),
        circuit_breaker_rollback=None if breaker is None else bool(breaker.get("rollback")),
        scheduling_strategy=raw.get("schedulingStrategy"),
        task_definition_arn=raw.get("taskDefinition"),
        tags=frozen_tags(_tags(raw.get("tags"))),
    )


class TaskDefinitionReader:
    """The latest ACTIVE revision of each family of an account-region, shared between collectors.

    A result is reused for `ttl_seconds` (a fraction of the interval) and concurrent readers of
    the same account-region share one read. Failures are not cached.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._cache: dict[tuple[str, str], tuple[float, tuple[m.TaskDefinition, ...]]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[tuple[m.TaskDefinition, ...]]] = {}

    async def latest(self, ctx: CollectContext) -> tuple[m.TaskDefinition, ...]:
        key = (ctx.target.account_id, ctx.target.region)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._read(ctx))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        result = await asyncio.shield(task)
        now = time.monotonic()
        self._cache[key] = (now, result)
        for other in [k for k, (at, _) in self._cache.items() if now - at >= self.ttl]:
            del self._cache[other]  # account-regions no longer scanned do not linger
        return result

    async def _read(self, ctx: CollectContext) -> tuple[m.TaskDefinition, ...]:
        families = await ctx.api.all_items(
            "ecs", "list_task_definition_families", "families", status="ACTIVE"
        )
        found = await ctx.gather(sorted(set(families)), lambda f: self._family(ctx, f))
        return tuple(sorted((t for t in found if t is not None), key=lambda t: t.family))

    async def _family(self, ctx: CollectContext, family: str) -> m.TaskDefinition | None:
        """The family's latest ACTIVE revision; None when it has none (or vanished)."""
        t = ctx.target
        family_arn = f"arn:aws:ecs:{t.region}:{t.account_id}:task-definition/{family}"
        try:
            resp = await ctx.api.call(
                "ecs", "describe_task_definition", taskDefinition=family, include=["TAGS"]
            )
            raw = resp.get("taskDefinition") or {}
            if raw.get("status", "ACTIVE") != "ACTIVE":
                # AWS answers a family name with its latest ACTIVE revision; an endpoint that
                # answers with an INACTIVE one is asked for the ACTIVE revisions explicitly.
                arns = await ctx.api.all_items(
                    "ecs",
                    "list_task_definitions",
                    "taskDefinitionArns",
                    familyPrefix=family,
                    status="ACTIVE",
                    sort="DESC",
                )
                arn = next((a for a in arns if a.rsplit("/", 1)[-1].split(":")[0] == family), None)
                if arn is None:
                    return None
                resp = await ctx.api.call(
                    "ecs", "describe_task_definition", taskDefinition=arn, include=["TAGS"]
                )
                raw = resp.get("taskDefinition") or {}
        except AwsError as err:
            if err.kind.retryable:
                raise
            if err.kind is ErrorKind.NOT_FOUND or err.code == "ClientException":
                # ECS answers ClientException for a family deregistered since it was listed
                ctx.issue(family_arn, m.ASPECT_DEFINITION, f"not describable: {err.code}")
                return None
            # Denied: the family exists but cannot be read. Keep it, so its controls are `error`.
            return m.TaskDefinition(
                arn=family_arn,
                family=family,
                revision=None,
                account_id=t.account_id,
                region=t.region,
                errors=frozen_errors({m.ASPECT_DEFINITION: err.code}),
            )
        return task_definition(raw, resp.get("tags"), t.account_id, t.region)


class EcsCollector:
    service = SERVICE
    operations = OPERATIONS

    def __init__(self, task_definitions: TaskDefinitionReader) -> None:
        self.task_definitions = task_definitions

    async def collect(self, ctx: CollectContext) -> m.EcsSnapshot:
        clusters = await self._clusters(ctx)
        services = await ctx.gather(clusters, lambda c: self._services(ctx, c))
        return m.EcsSnapshot(
            target=ctx.target,
            collected_at=ctx.now,
            clusters=tuple(sorted(clusters, key=lambda c: c.arn)),
            services=tuple(sorted((s for group in services for s in group), key=lambda s: s.arn)),
            task_definitions=await self.task_definitions.latest(ctx),
        )

    async def _clusters(self, ctx: CollectContext) -> list[m.EcsCluster]:
        t = ctx.target
        arns = await ctx.api.all_items("ecs", "list_clusters", "clusterArns")
        out: list[m.EcsCluster] = []
        for i in range(0, len(arns), _DESCRIBE_CLUSTERS_MAX):
            resp = await ctx.api.call(
                "ecs",
                "describe_clusters",
                clusters=arns[i : i + _DESCRIBE_CLUSTERS_MAX],
                include=["SETTINGS", "TAGS"],
            )
            out += [ecs_cluster(c, t.account_id, t.region) for c in resp.get("clusters") or []]
        return out

    async def _services(self, ctx: CollectContext, cluster: m.EcsCluster) -> list[m.EcsService]:
        t = ctx.target
        arns = await ctx.api.all_items("ecs", "list_services", "serviceArns", cluster=cluster.arn)
        out: list[m.EcsService] = []
        for i in range(0, len(arns), _DESCRIBE_SERVICES_MAX):
            resp = await ctx.api.call(
                "ecs",
                "describe_services",
                cluster=cluster.arn,
                services=arns[i : i + _DESCRIBE_SERVICES_MAX],
                include=["TAGS"],
            )
            out += [
                ecs_service(s, t.account_id, t.region, cluster.default_capacity_providers)
                for s in resp.get("services") or []
                if s.get("status") != "INACTIVE"
            ]
        return out
