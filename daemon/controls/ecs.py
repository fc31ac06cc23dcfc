"""Amazon ECS controls: task definitions (latest active revision of each family), services and
clusters."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from daemon.controls.common import EnvSecretsParams, Regex, glob_any, secret_hits, short
from daemon.controls.registry import (
    EvalContext,
    NoParams,
    Outcome,
    Params,
    control,
    failed,
    passed,
)
from daemon.model import Severity
from daemon.model import ecs as m

SERVICE = "ecs"

_DEFINITION = (m.ASPECT_DEFINITION,)


def _names(containers: list[m.Container]) -> str:
    return short([c.name for c in containers])


# --- task definitions -----------------------------------------------------------------------------


@control(
    id="ecs-task-no-privileged-containers",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="No container runs privileged",
    severity=Severity.HIGH,
    rationale="""A privileged container has root capabilities on the host: an attacker who gets
    code execution in it controls the EC2 instance and every other task on it.""",
    remediation="""Remove privileged: true from the container definitions and register a new
    revision; grant only the Linux capabilities the container needs (linuxParameters).""",
    params=NoParams,
    requires=_DEFINITION,
    security_hub="ECS.4",
    aws_config_rule="ecs-containers-nonprivileged",
)
def no_privileged(td: m.TaskDefinition, p: NoParams, ctx: EvalContext) -> Outcome | None:
    bad = [c for c in td.containers if c.privileged]
    if bad:
        return failed(f"privileged container(s): {_names(bad)}")
    return passed(f"{len(td.containers)} container(s), none privileged")


_ROOT = {"root", "0"}


def _runs_as_root(user: str | None) -> bool:
    if user is None:
        return True  # the image's USER, which defaults to root, cannot be seen from here
    uid = user.split(":", 1)[0].strip()
    return uid in _ROOT or not uid


@control(
    id="ecs-task-non-root-user",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="Containers run as a non-root user",
    severity=Severity.MEDIUM,
    rationale="""A process running as root inside a container is one kernel or runtime bug away
    from root on the host, and can modify everything in its filesystem. Without a user in the
    task definition the container runs as the image's user, which is root unless the image says
    otherwise.""",
    remediation="""Set user (a non-zero UID, or UID:GID) on every container definition of Linux
    tasks, and make sure the image works as that user.""",
    params=NoParams,
    requires=_DEFINITION,
    security_hub="ECS.20",
    aws_config_rule="ecs-task-definition-linux-user-non-root",
)
def non_root_user(td: m.TaskDefinition, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if td.is_windows:
        return None  # Windows users are a different check (ECS.21)
    unset = [c for c in td.containers if c.user is None]
    root = [c for c in td.containers if c.user is not None and _runs_as_root(c.user)]
    problems = []
    if root:
        problems.append(f"root user: {_names(root)}")
    if unset:
        problems.append(f"no user (image default, root unless set): {_names(unset)}")
    if problems:
        return failed("; ".join(problems))
    return passed(f"{len(td.containers)} container(s) with non-root users")


@control(
    id="ecs-task-readonly-root-filesystem",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="Containers have a read-only root filesystem",
    severity=Severity.HIGH,
    rationale="""A writable root filesystem lets an intruder drop tools, change binaries and
    persist inside the container. Read-only root filesystems leave writing to explicit volumes.""",
    remediation="""Set readonlyRootFilesystem: true on every container definition; mount volumes
    (or tmpfs on EC2) for the paths that must be writable.""",
    params=NoParams,
    requires=_DEFINITION,
    security_hub="ECS.5",
    aws_config_rule="ecs-containers-readonly-access",
)
def readonly_root(td: m.TaskDefinition, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if td.is_windows:
        return None  # not supported on Windows containers
    writable = [c for c in td.containers if not c.readonly_root_filesystem]
    if writable:
        return failed(f"writable root filesystem: {_names(writable)}")
    return passed(f"{len(td.containers)} container(s) with read-only root filesystems")


class LoggingParams(Params):
    allowed_log_drivers: list[str] = Field(
        default=["awslogs", "awsfirelens"],
        description="Log drivers that count (awslogs: CloudWatch Logs; awsfirelens: FireLens).",
    )


@control(
    id="ecs-task-logging",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="Every container has a log configuration",
    severity=Severity.HIGH,
    rationale="""Without a log configuration a container's output stays on the host (or is lost
    on Fargate), so errors and the evidence of an intrusion are gone when the task stops.""",
    remediation="""Give every container a logConfiguration with the awslogs driver (CloudWatch
    Logs) or awsfirelens, and with FireLens include a log router container
    (firelensConfiguration).""",
    params=LoggingParams,
    requires=_DEFINITION,
    security_hub="ECS.9",
    aws_config_rule="ecs-task-definition-log-configuration",
)
def logging_configured(td: m.TaskDefinition, p: LoggingParams, ctx: EvalContext) -> Outcome | None:
    allowed = set(p.allowed_log_drivers)
    missing = [c for c in td.containers if c.log_driver is None]
    other = [c for c in td.containers if c.log_driver is not None and c.log_driver not in allowed]
    problems = []
    if missing:
        problems.append(f"no log configuration: {_names(missing)}")
    if other:
        drivers = sorted({c.log_driver or "" for c in other})
        problems.append(f"log driver {'/'.join(drivers)} not allowed: {_names(other)}")
    if any(c.log_driver == "awsfirelens" for c in td.containers) and not any(
        c.firelens for c in td.containers
    ):
        problems.append("awsfirelens used without a FireLens log router container")
    if problems:
        return failed("; ".join(problems))
    drivers = sorted({c.log_driver or "" for c in td.containers})
    return passed(f"{len(td.containers)} container(s) log with {'/'.join(drivers)}")


class EcsEnvSecretsParams(EnvSecretsParams):
    forbidden_names: list[str] = Field(
        default=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ECS_ENGINE_AUTH_DATA"],
        description="Variables that must never hold a literal value (as in AWS Config's "
        "ecs-no-environment-secrets).",
    )


@control(
    id="ecs-task-no-environment-secrets",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="No plaintext secrets in container environment variables",
    severity=Severity.CRITICAL,
    rationale="""The environment of a task definition is readable by anyone with
    ecs:DescribeTaskDefinition, kept in every revision forever and shown in the console.
    Secrets belong in Secrets Manager or SSM Parameter Store, injected through `secrets`.""",
    remediation="""Move the value to Secrets Manager (or an SSM SecureString), reference it from the
    container's secrets (valueFrom), register a new revision, deregister the old ones and rotate
    the exposed secret.""",
    params=EcsEnvSecretsParams,
    requires=_DEFINITION,
    security_hub="ECS.8",
    aws_config_rule="ecs-no-environment-secrets",
)
def no_environment_secrets(
    td: m.TaskDefinition, p: EcsEnvSecretsParams, ctx: EvalContext
) -> Outcome | None:
    hits = [
        f"{c.name}: {hit}"
        for c in td.containers
        for hit in secret_hits(c.env, p, p.forbidden_names)
    ]
    if hits:
        return failed(f"possible secrets in: {short(hits)}")
    count = sum(len(c.env) for c in td.containers)
    return passed(f"{count} variable(s) checked")


class NetworkModeParams(Params):
    allowed_network_modes: list[Literal["awsvpc", "bridge", "host", "none"]] = Field(
        default=["awsvpc"],
        description="Network modes allowed; awsvpc gives each task its own ENI and security "
        "groups.",
    )


@control(
    id="ecs-task-awsvpc-network-mode",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="Tasks use the awsvpc network mode",
    severity=Severity.MEDIUM,
    rationale="""In awsvpc mode each task gets its own network interface and security groups, so
    network access is granted per task. In bridge or host mode every task on an instance shares
    the instance's security groups, and host mode exposes the host's network stack.""",
    remediation="""Register a revision with networkMode awsvpc (the only mode on Fargate) and give
    the service subnets and a security group of its own.""",
    params=NetworkModeParams,
    requires=_DEFINITION,
    aws_config_rule="ecs-task-definition-network-mode-not-host",
    references=("securityhub:ECS.17",),
)
def awsvpc_mode(td: m.TaskDefinition, p: NetworkModeParams, ctx: EvalContext) -> Outcome | None:
    mode = td.network_mode or ("default" if td.is_windows else "bridge")
    if mode in p.allowed_network_modes:
        return passed(f"network mode {mode}")
    return failed(f"network mode {mode}" + (" (the default)" if td.network_mode is None else ""))


class TaskRoleParams(Params):
    required_for: Literal["all", "aws_hints"] = Field(
        default="all",
        description="'all': every task definition needs a task role; 'aws_hints': only those "
        "whose environment or secret names suggest AWS use (aws_hint_patterns).",
    )
    exempt_families: list[str] = Field(
        default=[],
        description="Task-definition families (globs) that never call AWS and need no role.",
    )
    aws_hint_patterns: list[Regex] = Field(
        default=[
            r"^AWS_",
            r"(^|_)(S3_)?BUCKET(_NAME)?$",
            r"(^|_)QUEUE_URL$",
            r"(^|_)TABLE(_NAME)?$",
            r"(^|_)(TOPIC|STREAM|SECRET|KEY)_ARN$",
        ],
        description="Regular expressions on variable and secret names that suggest the task "
        "calls AWS (used with required_for: aws_hints).",
    )


@control(
    id="ecs-task-role",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="A task role gives the task its own AWS identity",
    severity=Severity.MEDIUM,
    rationale="""Code in a task without a task role that calls AWS has to get credentials from
    somewhere else: on EC2 the instance profile through IMDS, shared by every task on the host
    and usually broad, or long-lived keys in the environment. The daemon cannot see what a
    container's code calls, so by default every task definition needs a role (least-privilege,
    per family); families that never call AWS are listed in exempt_families, or required_for:
    aws_hints limits the rule to tasks whose variable names suggest AWS use.""",
    remediation="""Create an IAM role trusted by ecs-tasks.amazonaws.com with only the actions the
    task uses, set it as the task definition's taskRoleArn, and block IMDS access from tasks on
    EC2 (ECS_AWSVPC_BLOCK_IMDS / ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST).""",
    params=TaskRoleParams,
    requires=_DEFINITION,
)
def task_role(td: m.TaskDefinition, p: TaskRoleParams, ctx: EvalContext) -> Outcome | None:
    if td.task_role_arn:
        return passed(f"task role {td.task_role_arn}")
    if glob_any(td.family, p.exempt_families):
        return passed("no task role; the family is listed as not calling AWS")
    patterns = [re.compile(pat) for pat in p.aws_hint_patterns]
    hints = sorted(
        {
            name
            for c in td.containers
            for name in (*(v.name for v in c.env), *c.secret_names)
            if any(pat.search(name) for pat in patterns)
        }
    )
    if p.required_for == "aws_hints" and not hints:
        return passed("no task role, and nothing suggests the task calls AWS")
    detail = f" (variables suggest AWS use: {short(hints)})" if hints else ""
    return failed(f"no task role{detail}")


class MemoryParams(Params):
    require_container_limits: bool = Field(
        default=False,
        description="Also require a hard memory limit on every container, even with a "
        "task-level limit (so one container cannot starve the others).",
    )


@control(
    id="ecs-task-memory-limits",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="Memory is limited",
    severity=Severity.LOW,
    rationale="""A container without a hard memory limit can use all of the instance's memory,
    starving or killing the other tasks on it; a leak or an attack then takes down neighbours.""",
    remediation="""Set the task-level memory, or a hard memory limit (memory) on every container;
    memoryReservation alone is only a soft limit.""",
    params=MemoryParams,
    requires=_DEFINITION,
    aws_config_rule="ecs-task-definition-memory-hard-limit",
)
def memory_limits(td: m.TaskDefinition, p: MemoryParams, ctx: EvalContext) -> Outcome | None:
    unlimited = [c for c in td.containers if not c.memory]
    if td.memory and not (p.require_container_limits and unlimited):
        return passed(f"task memory {td.memory} MiB")
    if not unlimited:
        return passed("every container has a hard memory limit")
    soft = [c for c in unlimited if c.memory_reservation]
    detail = f" (soft limit only: {_names(soft)})" if soft else ""
    where = "" if td.memory else "no task memory and "
    return failed(f"{where}no hard memory limit on {_names(unlimited)}{detail}")


@control(
    id="ecs-task-no-host-namespaces",
    service=SERVICE,
    resource_type=m.TASK_DEFINITION,
    title="Tasks do not share the host's process or IPC namespace",
    severity=Severity.HIGH,
    rationale="""With pidMode host a container sees (and, as root, can signal or trace) every
    process on the instance; with ipcMode host it shares the host's shared memory. Either breaks
    the isolation between the task and the host.""",
    remediation="Register a revision without pidMode/ipcMode host (use task, or leave unset).",
    params=NoParams,
    requires=_DEFINITION,
    security_hub="ECS.3",
    aws_config_rule="ecs-task-definition-pid-mode-check",
)
def no_host_namespaces(td: m.TaskDefinition, p: NoParams, ctx: EvalContext) -> Outcome | None:
    shared = [
        f"{name}Mode host"
        for name, mode in (("pid", td.pid_mode), ("ipc", td.ipc_mode))
        if mode == "host"
    ]
    if shared:
        return failed(", ".join(shared))
    return passed("no host PID or IPC namespace")


# --- services ------------------------------------------------------------------------------------


@control(
    id="ecs-service-no-public-ip",
    service=SERVICE,
    resource_type=m.SERVICE,
    title="Service tasks get no public IP address",
    severity=Severity.HIGH,
    rationale="""Tasks with a public IP in a public subnet can be reached from the internet,
    limited only by their security groups. Services belong in private subnets behind a load
    balancer, with NAT or VPC endpoints for egress.""",
    remediation="""Update the service's awsvpcConfiguration with assignPublicIp DISABLED and
    private subnets.""",
    params=NoParams,
    security_hub="ECS.2",
    aws_config_rule="ecs-service-assign-public-ip-disabled",
)
def no_public_ip(svc: m.EcsService, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if svc.assign_public_ip is None:
        return None  # no awsvpc configuration: ECS assigns no addresses to the tasks
    if svc.assign_public_ip == "ENABLED":
        return failed("assignPublicIp ENABLED")
    return passed("assignPublicIp DISABLED")


def _version(text: str) -> tuple[int, ...] | None:
    parts = text.strip().split(".")
    if not parts or not all(x.isdigit() for x in parts):
        return None
    return tuple(int(x) for x in parts)


def _valid_version(text: str) -> str:
    if _version(text) is None:
        raise ValueError(f"{text!r} is not a version like 1.4.0")
    return text


Version = Annotated[str, AfterValidator(_valid_version)]


class FargatePlatformParams(Params):
    min_linux_version: Version = Field(
        default="1.4.0", description="Oldest Fargate Linux platform version accepted."
    )
    min_windows_version: Version = Field(
        default="1.0.0", description="Oldest Fargate Windows platform version accepted."
    )
    require_latest: bool = Field(
        default=False, description="Accept only LATEST (no pinned version at all)."
    )


@control(
    id="ecs-service-fargate-platform-version",
    service=SERVICE,
    resource_type=m.SERVICE,
    title="Fargate services run on a current platform version",
    severity=Severity.MEDIUM,
    rationale="""Fargate platform versions carry the kernel, container runtime and agent of the
    task's host. A service pinned to an old version misses their security fixes.""",
    remediation="""Update the service with platformVersion LATEST (or at least the minimum) and
    force a new deployment.""",
    params=FargatePlatformParams,
    security_hub="ECS.10",
    aws_config_rule="ecs-fargate-latest-platform-version",
)
def fargate_platform(
    svc: m.EcsService, p: FargatePlatformParams, ctx: EvalContext
) -> Outcome | None:
    if not svc.uses_fargate:
        return None
    version = svc.platform_version or "LATEST"  # Fargate's default
    if version == "LATEST":
        return passed("platform version LATEST")
    if p.require_latest:
        return failed(f"platform version pinned to {version}")
    windows = (svc.platform_family or "").upper().startswith("WINDOWS")
    minimum = p.min_windows_version if windows else p.min_linux_version
    have, need = _version(version), _version(minimum)
    if have is None or need is None:
        return failed(f"platform version {version!r} is not recognised")
    if have < need:
        return failed(f"platform version {version} is older than {minimum}")
    return passed(f"platform version {version}")


class CircuitBreakerParams(Params):
    require_rollback: bool = Field(
        default=True, description="The breaker must also roll back to the last good deployment."
    )


@control(
    id="ecs-service-circuit-breaker",
    service=SERVICE,
    resource_type=m.SERVICE,
    title="Deployments stop and roll back when they fail",
    severity=Severity.LOW,
    rationale="""Without the deployment circuit breaker, a revision whose tasks cannot start
    keeps being retried for hours while healthy capacity drains; with rollback, ECS returns to
    the last deployment that worked.""",
    remediation="""Set deploymentConfiguration.deploymentCircuitBreaker {enable: true, rollback:
    true} on the service (UpdateService).""",
    params=CircuitBreakerParams,
)
def circuit_breaker(svc: m.EcsService, p: CircuitBreakerParams, ctx: EvalContext) -> Outcome | None:
    if svc.deployment_controller != "ECS":
        return None  # CodeDeploy and external controllers manage their own rollbacks
    if not svc.circuit_breaker_enable:
        return failed("deployment circuit breaker off")
    if p.require_rollback and not svc.circuit_breaker_rollback:
        return failed("deployment circuit breaker on without rollback")
    if svc.circuit_breaker_rollback:
        return passed("deployment circuit breaker on with rollback")
    return passed("deployment circuit breaker on")


# --- clusters ------------------------------------------------------------------------------------


class InsightsParams(Params):
    require_enhanced: bool = Field(
        default=False, description="Require Container Insights with enhanced observability."
    )


@control(
    id="ecs-cluster-container-insights",
    service=SERVICE,
    resource_type=m.CLUSTER,
    title="Container Insights is on",
    severity=Severity.MEDIUM,
    rationale="""Container Insights collects per-task CPU, memory, network and restart metrics:
    without them, resource exhaustion, crash loops and unusual activity in a cluster go
    unnoticed.""",
    remediation="""Update the cluster settings with containerInsights enabled (or enhanced).""",
    params=InsightsParams,
    security_hub="ECS.12",
    aws_config_rule="ecs-container-insights-enabled",
)
def container_insights(
    cluster: m.EcsCluster, p: InsightsParams, ctx: EvalContext
) -> Outcome | None:
    value = cluster.container_insights or "disabled"
    if value == "enhanced" or (value == "enabled" and not p.require_enhanced):
        return passed(f"Container Insights {value}")
    if value == "enabled":
        return failed("Container Insights enabled; enhanced is required")
    return failed(f"Container Insights {value}")
