"""The demo estate's container resources: ECR repositories and images, ECS clusters, task
definitions and services, each declaring by hand the controls it violates.

What moto 5.2 cannot represent, and how the demo copes:
- DescribeImages carries no scan summary or pull times, and DescribeImageScanFindings answers a
  fixed HIGH finding unless results are registered: the seeder registers each scanned image's
  findings through moto's own API (/moto-api/static/ecr/scan-finding-results), in botocore's shape.
- ECS drops deploymentConfiguration: the shim in ecs_shim.py keeps it (see there).
- ECS services with a capacity provider strategy come back as launchType EC2: the demo uses
  launch types; capacity providers are covered by unit tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from daemon.demo.common import SECONDARY, RegionClients, Regions, in_region, selected
from daemon.demo.common import violates as _v

ENHANCED_REGION = SECONDARY  # the registry there uses enhanced scanning with an "orders*" rule

# Seeded as a plaintext secret in a container environment: it must never appear in any output.
SEEDED_CONTAINER_SECRET = "sup3r-s3cret-demo-db-password"

# --- ECR ------------------------------------------------------------------------------------------

Image = Literal["none", "clean", "critical", "unscanned"]


@dataclass(frozen=True)
class RepoSpec:
    name: str
    violates: frozenset[str] = frozenset()
    regions: Regions = "primary"
    scan_on_push: bool = True
    mutability: str = "IMMUTABLE"
    lifecycle: bool = True
    policy: Literal["none", "public", "partner", "org"] = "none"
    encryption: Literal["kms", "aes"] = "kms"
    image: Image = "none"  # an image v1, scanned with clean or critical findings, or unscanned
    used_by: str | None = None  # the task-definition family that references image v1
    # violations that only hold while `used_by` is seeded in the same region
    violates_in_use: frozenset[str] = frozenset()


IN_USE = "ecr-in-use-images-no-critical-findings"
PARTNER_ACCOUNT = "999999999999"

REPOSITORIES: tuple[RepoSpec, ...] = (
    RepoSpec("orders", regions="all", image="clean", used_by="web", policy="org"),
    RepoSpec("legacy-builds", _v("ecr-image-scanning"), scan_on_push=False),
    # enhanced scanning in the secondary region ignores the repository's own scan-on-push
    RepoSpec("reports", _v("ecr-image-scanning"), regions="secondary"),
    RepoSpec("mutable-tags", _v("ecr-tag-immutability"), mutability="MUTABLE"),
    RepoSpec("no-lifecycle", _v("ecr-lifecycle-policy"), lifecycle=False),
    RepoSpec("public-images", _v("ecr-repository-policy-restricted"), policy="public"),
    RepoSpec("partner-shared", _v("ecr-repository-policy-restricted"), policy="partner"),
    RepoSpec("default-encryption", _v("ecr-cmk-encryption"), encryption="aes"),
    RepoSpec(
        "vulnerable-app", image="critical", used_by="vulnerable-app", violates_in_use=_v(IN_USE)
    ),
    RepoSpec(
        "unscanned-app", image="unscanned", used_by="unscanned-app", violates_in_use=_v(IN_USE)
    ),
)


def repository_arn(account: str, region: str, name: str) -> str:
    return f"arn:aws:ecr:{region}:{account}:repository/{name}"


def image_uri(account: str, region: str, repository: str, tag: str = "v1") -> str:
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{repository}:{tag}"


# --- ECS ------------------------------------------------------------------------------------------

PUBLIC_IMAGE = "public.ecr.aws/docker/library/nginx:1.27"


@dataclass(frozen=True)
class TaskSpec:
    family: str
    violates: frozenset[str] = frozenset()
    regions: Regions = "primary"
    image_repo: str | None = None  # a repository of the account-region, else a public image
    privileged: bool = False
    user: str | None = "1000:1000"
    readonly: bool = True
    log: bool = True
    env: dict[str, str] = field(default_factory=lambda: {"STAGE": "prod", "LOG_LEVEL": "info"})
    network_mode: str = "awsvpc"
    task_role: bool = True
    task_memory: str | None = "512"
    container_memory: int | None = 256
    memory_reservation: int | None = None
    pid_mode: str | None = None
    fargate: bool | None = True  # None: no requiresCompatibilities (EC2 by default)
    bad_first_revision: bool = False  # revision 1 is privileged; only revision 2 is judged
    retired: bool = False  # every revision deregistered: no active revision to judge

    @property
    def revision(self) -> int:
        return 2 if self.bad_first_revision else 1


TASK_DEFINITIONS: tuple[TaskSpec, ...] = (
    TaskSpec("web", regions="all", image_repo="orders", bad_first_revision=True),
    TaskSpec("privileged-agent", _v("ecs-task-no-privileged-containers"), privileged=True),
    TaskSpec("root-user", _v("ecs-task-non-root-user"), user=None),
    TaskSpec("writable-root", _v("ecs-task-readonly-root-filesystem"), readonly=False),
    TaskSpec("no-logs", _v("ecs-task-logging"), log=False),
    TaskSpec(
        "env-secrets",
        _v("ecs-task-no-environment-secrets"),
        env={"DB_PASSWORD": SEEDED_CONTAINER_SECRET, "STAGE": "prod"},
    ),
    TaskSpec(
        "bridge-mode", _v("ecs-task-awsvpc-network-mode"), network_mode="bridge", fargate=False
    ),
    TaskSpec("no-task-role", _v("ecs-task-role"), task_role=False),
    TaskSpec(
        "no-memory-limit",
        _v("ecs-task-memory-limits"),
        task_memory=None,
        container_memory=None,
        memory_reservation=256,
        fargate=None,
    ),
    TaskSpec("host-pid", _v("ecs-task-no-host-namespaces"), pid_mode="host", fargate=False),
    TaskSpec("vulnerable-app", image_repo="vulnerable-app"),
    TaskSpec("unscanned-app", image_repo="unscanned-app"),
    TaskSpec("retired", privileged=True, retired=True),
)


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    violates: frozenset[str] = frozenset()
    regions: Regions = "primary"
    insights: str = "enabled"


CLUSTERS: tuple[ClusterSpec, ...] = (
    ClusterSpec("prod", regions="all", insights="enhanced"),
    ClusterSpec("dev", _v("ecs-cluster-container-insights"), insights="disabled"),
)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    violates: frozenset[str] = frozenset()
    regions: Regions = "primary"
    cluster: str = "prod"
    task: str = "web"
    launch_type: str = "FARGATE"
    public_ip: bool = False
    platform: str = "LATEST"
    breaker: tuple[bool, bool] = (True, True)


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("web", regions="all"),
    ServiceSpec("public-web", _v("ecs-service-no-public-ip"), public_ip=True),
    ServiceSpec("old-platform", _v("ecs-service-fargate-platform-version"), platform="1.3.0"),
    ServiceSpec("no-breaker", _v("ecs-service-circuit-breaker"), breaker=(False, False)),
    ServiceSpec("no-rollback", _v("ecs-service-circuit-breaker"), breaker=(True, False)),
    # EC2 launch type, bridge networking: no public IP or platform version to judge
    ServiceSpec("ec2-worker", cluster="dev", task="bridge-mode", launch_type="EC2"),
)


def task_definition_arn(account: str, region: str, spec: TaskSpec) -> str:
    return f"arn:aws:ecs:{region}:{account}:task-definition/{spec.family}:{spec.revision}"


def cluster_arn(account: str, region: str, name: str) -> str:
    return f"arn:aws:ecs:{region}:{account}:cluster/{name}"


def service_arn(account: str, region: str, spec: ServiceSpec) -> str:
    return f"arn:aws:ecs:{region}:{account}:service/{spec.cluster}/{spec.name}"


def repositories_in(region: str, only: Iterable[str] | None = None) -> list[RepoSpec]:
    return [r for r in REPOSITORIES if in_region(r.regions, region) and selected(r.name, only)]


def task_definitions_in(region: str, only: Iterable[str] | None = None) -> list[TaskSpec]:
    return [
        t for t in TASK_DEFINITIONS if in_region(t.regions, region) and selected(t.family, only)
    ]


def clusters_in(region: str, only: Iterable[str] | None = None) -> list[ClusterSpec]:
    return [c for c in CLUSTERS if in_region(c.regions, region) and selected(c.name, only)]


def services_in(region: str, only: Iterable[str] | None = None) -> list[ServiceSpec]:
    return [s for s in SERVICES if in_region(s.regions, region) and selected(s.name, only)]


def expected(account: str, region: str, only: Iterable[str] | None = None) -> set[tuple[str, str]]:
    """(control, resource ARN) of every violation the container resources hold, by construction."""
    only = tuple(only) if only is not None else None
    out: set[tuple[str, str]] = set()
    families = {t.family for t in task_definitions_in(region, only) if not t.retired}
    for repo in repositories_in(region, only):
        arn = repository_arn(account, region, repo.name)
        out.update((c, arn) for c in repo.violates)
        if repo.used_by in families:
            out.update((c, arn) for c in repo.violates_in_use)
    for td in task_definitions_in(region, only):
        if not td.retired:
            arn = task_definition_arn(account, region, td)
            out.update((c, arn) for c in td.violates)
    for cluster in clusters_in(region, only):
        out.update((c, cluster_arn(account, region, cluster.name)) for c in cluster.violates)
    for svc in services_in(region, only):
        out.update((c, service_arn(account, region, svc)) for c in svc.violates)
    return out


# --- seeding --------------------------------------------------------------------------------------


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


_PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
_LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "expire untagged images after 14 days",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 14,
                },
                "action": {"type": "expire"},
            }
        ]
    }
)


def _policy(kind: str, account: str) -> str | None:
    if kind == "public":
        return _doc({"Sid": "AnyonePulls", "Effect": "Allow", "Principal": "*", "Action": _PULL})
    if kind == "partner":
        return _doc(
            {
                "Sid": "PartnerPulls",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{PARTNER_ACCOUNT}:root"},
                "Action": _PULL,
            }
        )
    if kind == "org":
        return _doc(
            {
                "Sid": "OrganizationPulls",
                "Effect": "Allow",
                "Principal": "*",
                "Action": _PULL,
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-demo0000001"}},
            },
            {
                "Sid": "OwnAccountPushes",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": ["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart"],
            },
        )
    return None


def _manifest(seed: str) -> str:
    def digest(part: str) -> str:
        return "sha256:" + hashlib.sha256(f"{seed}-{part}".encode()).hexdigest()

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 1469,
                "digest": digest("config"),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 3370706,
                    "digest": digest("layer"),
                }
            ],
        }
    )


def scan_findings(account: str, repository: str, digest: str, critical: bool) -> dict[str, Any]:
    """A DescribeImageScanFindings answer in botocore's shape (basic scanning)."""
    now = int(time.time())
    findings = [
        {
            "name": "CVE-2023-45853",
            "uri": "https://nvd.nist.gov/vuln/detail/CVE-2023-45853",
            "severity": "CRITICAL",
            "attributes": [
                {"key": "package_name", "value": "zlib"},
                {"key": "package_version", "value": "1.2.13"},
            ],
        }
    ]
    if not critical:
        findings = [
            {
                "name": "CVE-2024-2961",
                "uri": "https://nvd.nist.gov/vuln/detail/CVE-2024-2961",
                "severity": "LOW",
                "attributes": [{"key": "package_name", "value": "glibc"}],
            }
        ]
    return {
        "registryId": account,
        "repositoryName": repository,
        "imageId": {"imageDigest": digest, "imageTag": "v1"},
        "imageScanStatus": {"status": "COMPLETE", "description": "The scan was completed."},
        "imageScanFindings": {
            "imageScanCompletedAt": now,
            "vulnerabilitySourceUpdatedAt": now,
            "findingSeverityCounts": {"CRITICAL": 1} if critical else {"LOW": 1},
            "findings": findings,
        },
    }


async def _register_findings(account: str, region: str, results: list[dict[str, Any]]) -> None:
    """moto's documented way to make DescribeImageScanFindings answer chosen findings."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint or not results:
        return
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{endpoint}/moto-api/static/ecr/scan-finding-results",
            json={"results": results, "region": region, "account_id": account},
        ) as resp,
    ):
        resp.raise_for_status()


async def seed_ecr(
    rs: RegionClients, shared: dict[str, Any], only: Iterable[str] | None = None
) -> None:
    account, region = rs.account, rs.region
    repos = repositories_in(region, only)
    if not repos:
        return
    results: list[dict[str, Any]] = []
    async with rs.client("ecr") as ecr:
        if region == ENHANCED_REGION:
            await ecr.put_registry_scanning_configuration(
                scanType="ENHANCED",
                rules=[
                    {
                        "scanFrequency": "CONTINUOUS_SCAN",
                        "repositoryFilters": [{"filter": "orders*", "filterType": "WILDCARD"}],
                    }
                ],
            )
        for spec in repos:
            encryption = (
                {"encryptionType": "KMS", "kmsKey": shared["kms"]}
                if spec.encryption == "kms"
                else {"encryptionType": "AES256"}
            )
            await ecr.create_repository(
                repositoryName=spec.name,
                imageTagMutability=spec.mutability,
                imageScanningConfiguration={"scanOnPush": spec.scan_on_push},
                encryptionConfiguration=encryption,
                tags=[{"Key": "app", "Value": spec.name}],
            )
            if spec.lifecycle:
                await ecr.put_lifecycle_policy(
                    repositoryName=spec.name, lifecyclePolicyText=_LIFECYCLE
                )
            policy = _policy(spec.policy, account)
            if policy:
                await ecr.set_repository_policy(repositoryName=spec.name, policyText=policy)
            if spec.image == "none":
                continue
            pushed = await ecr.put_image(
                repositoryName=spec.name,
                imageManifest=_manifest(f"{account}-{region}-{spec.name}"),
                imageTag="v1",
            )
            digest = pushed["image"]["imageId"]["imageDigest"]
            if spec.image == "unscanned":
                continue
            await ecr.start_image_scan(repositoryName=spec.name, imageId={"imageTag": "v1"})
            results.append(scan_findings(account, spec.name, digest, spec.image == "critical"))
    await _register_findings(account, region, results)


def _container(rs: RegionClients, spec: TaskSpec, privileged: bool) -> dict[str, Any]:
    image = image_uri(rs.account, rs.region, spec.image_repo) if spec.image_repo else PUBLIC_IMAGE
    c: dict[str, Any] = {
        "name": "app",
        "image": image,
        "essential": True,
        "privileged": privileged,
        "readonlyRootFilesystem": spec.readonly,
        "environment": [{"name": k, "value": v} for k, v in spec.env.items()],
        "secrets": [
            {
                "name": "API_TOKEN",
                "valueFrom": f"arn:aws:secretsmanager:{rs.region}:{rs.account}:secret:api-token",
            }
        ],
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
    }
    if spec.user is not None:
        c["user"] = spec.user
    if spec.log:
        c["logConfiguration"] = {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": f"/ecs/{spec.family}",
                "awslogs-region": rs.region,
                "awslogs-stream-prefix": "app",
            },
        }
    if spec.container_memory is not None:
        c["memory"] = spec.container_memory
    if spec.memory_reservation is not None:
        c["memoryReservation"] = spec.memory_reservation
    return c


async def _register(ecs: Any, rs: RegionClients, spec: TaskSpec, privileged: bool) -> None:
    params: dict[str, Any] = {
        "family": spec.family,
        "networkMode": spec.network_mode,
        "containerDefinitions": [_container(rs, spec, privileged)],
        "executionRoleArn": f"arn:aws:iam::{rs.account}:role/ecs-execution",
        "cpu": "256",
        "tags": [{"key": "app", "value": spec.family}],
    }
    if spec.fargate is not None:
        params["requiresCompatibilities"] = ["FARGATE"] if spec.fargate else ["EC2"]
    if spec.task_role:
        params["taskRoleArn"] = f"arn:aws:iam::{rs.account}:role/{spec.family}-task"
    if spec.task_memory is not None:
        params["memory"] = spec.task_memory
    if spec.pid_mode is not None:
        params["pidMode"] = spec.pid_mode
    await ecs.register_task_definition(**params)


async def seed_ecs(
    rs: RegionClients, shared: dict[str, Any], only: Iterable[str] | None = None
) -> None:
    region = rs.region
    clusters, tasks = clusters_in(region, only), task_definitions_in(region, only)
    services = services_in(region, only)
    if not (clusters or tasks or services):
        return
    async with rs.client("ecs") as ecs:
        for cluster in clusters:
            await ecs.create_cluster(
                clusterName=cluster.name,
                settings=[{"name": "containerInsights", "value": cluster.insights}],
                tags=[{"key": "env", "value": cluster.name}],
            )
        for spec in tasks:
            if spec.bad_first_revision:
                await _register(ecs, rs, spec, privileged=True)
            await _register(ecs, rs, spec, privileged=spec.privileged)
            if spec.retired:
                await ecs.deregister_task_definition(taskDefinition=f"{spec.family}:1")
        for svc in services:
            params: dict[str, Any] = {
                "cluster": svc.cluster,
                "serviceName": svc.name,
                "taskDefinition": svc.task,
                "desiredCount": 1,
                "launchType": svc.launch_type,
                "deploymentConfiguration": {
                    "deploymentCircuitBreaker": {
                        "enable": svc.breaker[0],
                        "rollback": svc.breaker[1],
                    },
                    "maximumPercent": 200,
                    "minimumHealthyPercent": 100,
                },
                "tags": [{"key": "app", "value": svc.name}],
            }
            if svc.launch_type == "FARGATE":
                params["platformVersion"] = svc.platform
                params["networkConfiguration"] = {
                    "awsvpcConfiguration": {
                        "subnets": shared["subnets"],
                        "securityGroups": [shared["sg"]],
                        "assignPublicIp": "ENABLED" if svc.public_ip else "DISABLED",
                    }
                }
            await ecs.create_service(**params)
