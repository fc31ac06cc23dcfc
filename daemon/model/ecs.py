"""Snapshots of Amazon ECS: the latest active revision of each task-definition family, services
and clusters.

Container environment values are reduced to `EnvVar` (name and what the value looks like) where
they are read, exactly like Lambda environment variables; the values are never stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from daemon.model.core import EMPTY_TAGS, Target
from daemon.model.secrets import EnvVar

TASK_DEFINITION = "ecs-task-definition"
SERVICE = "ecs-service"
CLUSTER = "ecs-cluster"

ASPECT_DEFINITION = "task_definition"  # DescribeTaskDefinition of the family's latest revision

FARGATE_PROVIDERS = frozenset({"FARGATE", "FARGATE_SPOT"})


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str
    essential: bool = True
    privileged: bool | None = None
    user: str | None = None
    readonly_root_filesystem: bool | None = None
    log_driver: str | None = None  # None: no logConfiguration
    firelens: bool = False  # the container is the FireLens log router (firelensConfiguration)
    env: tuple[EnvVar, ...] = ()
    secret_names: tuple[str, ...] = ()  # injected from Secrets Manager / SSM (`secrets`)
    environment_files: int = 0  # S3 environment files (not readable by the daemon)
    memory: int | None = None  # hard limit (MiB)
    memory_reservation: int | None = None  # soft limit (MiB)


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    arn: str  # arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION
    family: str
    revision: int | None
    account_id: str
    region: str
    status: str = "ACTIVE"
    network_mode: str | None = None  # None: the default (bridge on Linux EC2)
    requires_compatibilities: tuple[str, ...] = ()
    task_role_arn: str | None = None
    execution_role_arn: str | None = None
    cpu: str | None = None
    memory: int | None = None  # task-level hard limit (MiB)
    pid_mode: str | None = None
    ipc_mode: str | None = None
    os_family: str | None = None  # runtimePlatform.operatingSystemFamily
    containers: tuple[Container, ...] = ()
    registered_at: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = TASK_DEFINITION

    @property
    def is_windows(self) -> bool:
        return (self.os_family or "").upper().startswith("WINDOWS")


@dataclass(frozen=True, slots=True)
class EcsService:
    arn: str
    name: str
    account_id: str
    region: str
    cluster_arn: str
    status: str = "ACTIVE"
    launch_type: str | None = None  # FARGATE | EC2 | EXTERNAL; None with a capacity provider
    capacity_providers: tuple[str, ...] = ()  # the service's strategy, else the cluster default
    platform_version: str | None = None
    platform_family: str | None = None  # LINUX | WINDOWS_SERVER_...
    assign_public_ip: str | None = None  # ENABLED | DISABLED; None: no awsvpc configuration
    deployment_controller: str = "ECS"  # ECS | CODE_DEPLOY | EXTERNAL
    circuit_breaker_enable: bool | None = None  # None: no deploymentConfiguration returned
    circuit_breaker_rollback: bool | None = None
    scheduling_strategy: str | None = None
    task_definition_arn: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = SERVICE

    @property
    def uses_fargate(self) -> bool:
        if self.launch_type is not None:
            return self.launch_type == "FARGATE"
        return bool(self.capacity_providers) and all(
            p in FARGATE_PROVIDERS for p in self.capacity_providers
        )


@dataclass(frozen=True, slots=True)
class EcsCluster:
    arn: str
    name: str
    account_id: str
    region: str
    status: str = "ACTIVE"
    container_insights: str | None = None  # enabled | enhanced | disabled; None: not set
    default_capacity_providers: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = CLUSTER


@dataclass(frozen=True, slots=True)
class EcsSnapshot:
    target: Target
    collected_at: datetime
    clusters: tuple[EcsCluster, ...]
    services: tuple[EcsService, ...]
    task_definitions: tuple[TaskDefinition, ...]

    def resources(self, resource_type: str) -> Sequence[EcsCluster | EcsService | TaskDefinition]:
        if resource_type == TASK_DEFINITION:
            return self.task_definitions
        if resource_type == SERVICE:
            return self.services
        if resource_type == CLUSTER:
            return self.clusters
        return ()

    def resource_counts(self) -> Mapping[str, int]:
        return MappingProxyType(
            {
                CLUSTER: len(self.clusters),
                SERVICE: len(self.services),
                TASK_DEFINITION: len(self.task_definitions),
            }
        )
