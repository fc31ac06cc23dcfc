"""The demo estate: compliant and non-compliant Lambda functions, ECR repositories, ECS task
definitions, services and clusters, and RDS instances and clusters, in several accounts and
regions, seeded through the real AWS APIs of an AWS-compatible endpoint (the embedded moto server).

Each spec says, by hand, which controls it is meant to violate, so tests can check that the daemon
finds exactly the seeded violations (`expected_violations`). Member accounts are seeded through
AssumeRole, the way the daemon reaches them. The container and database resources are specified
in containers.py and databases.py; this module seeds everything.

What moto 5 cannot represent (kept out of the estate, covered by unit tests instead):
- dead-letter queues (DeadLetterConfig is dropped), so async failure capture uses destinations;
- a custom log group in LoggingConfig (not returned), so functions log to /aws/lambda/NAME;
- function URL permissions (moto stores FunctionUrlAuthType outside the Condition block).

Lambda concurrency (`CONCURRENCY`): in every account the primary region runs near its limit (the
limit is lowered through the shim, reservations leave AWS's minimum unreserved pool, and CloudWatch
datapoints peak close to the limit, with throttles); the secondary region is idle (AWS's default
limit, no datapoints). GetAccountSettings and provisioned concurrency are answered by the shim
(daemon/demo/moto_server.py). Two things differ from AWS and are planned around: moto accepts
put_metric_data in the AWS/Lambda namespace (AWS reserves it), and a query without dimensions
aggregates every dimension set of the metric — so per-function Throttles are written with their
FunctionName only and the account total is their sum, as AWS reports it, and ConcurrentExecutions is
written for the account only.

Backups: functions with current, stale and missing published versions (their ages set through the
shim's backdating, since moto stamps everything "now"), log groups with short, 30-day and unlimited
retention, exported by subscription filter, by an export task, or not at all, a function whose own
layer version was deleted and two using a vendor account's layers (one of them deleted by the
vendor: the shim keeps another account's layer on CreateFunction and answers
GetLayerVersionByArn), and a function no CloudFormation stack manages. The other functions carry
the stack tag CloudFormation sets (moto accepts the reserved `aws:` tag prefix; AWS lets only
CloudFormation set it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from aiobotocore.session import AioSession, get_session

from daemon.demo import common, containers, databases

PRIMARY = common.PRIMARY
SECONDARY = common.SECONDARY
DEMO_REGIONS = common.DEMO_REGIONS
MANAGEMENT_ACCOUNT = "123456789012"  # moto's default account: the daemon's own ("hub") account
ROLE_NAME = "PostureDaemonReader"

# Values seeded as plaintext secrets: they must never appear in any output of the daemon.
SEEDED_SECRETS = (
    "hunter2-demo-password",
    "sk_live_51DemoKeyDoNotUse0123456789abcd",
    containers.SEEDED_CONTAINER_SECRET,
    databases.MASTER_PASSWORD,
)

RolePolicy = Literal["scoped", "admin_managed", "wildcard_inline", "no_logs", "shared"]
LogExport = Literal["subscription", "task", "none"]
VENDOR_ACCOUNT = "444455556666"  # publishes layers the demo's functions use (never scanned)
VENDOR_LAYERS = ("vendor-telemetry", "vendor-legacy")  # the second is deleted after seeding
OWN_DELETED_LAYER = "legacy-utils"  # published, used, then deleted in every account-region
STACK = "demo-estate"  # the CloudFormation stack the demo's functions pretend to belong to
STACK_TAG = "aws:cloudformation:stack-name"
Permission = Literal["api:orders", "api:legacy", "public", "s3-unscoped", "s3-scoped"]


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    violates: frozenset[str] = frozenset()
    regions: Literal["all", "primary"] = "primary"
    runtime: str = "python3.12"
    timeout: int = 30
    memory: int = 512
    env: dict[str, str] = field(default_factory=lambda: {"TABLE_NAME": "orders"})
    kms: bool = True
    vpc: Literal["multi", "single", "none"] = "multi"
    log_group: bool = True
    role_policy: RolePolicy = "scoped"
    layers: tuple[str, ...] = ("common-utils",)
    publish: bool = True
    alias: Literal["version", "latest", "none"] = "version"
    permissions: tuple[Permission, ...] = ()
    url_auth: str | None = None
    reserved: int | None = 10
    provisioned_alias: int | None = None  # provisioned concurrency on the "live" alias
    provisioned_version: int | None = None  # ... on the published version
    signing: Literal["enforce", "warn", "none"] = "enforce"
    on_failure: bool = True
    tracing: str = "Active"
    tags: dict[str, str] = field(default_factory=dict)
    # backups
    log_retention: int | None = 30  # None: never expire
    log_export: LogExport = "subscription"
    code_change: bool = False  # $LATEST's code changed after the version was published
    version_age: dt.timedelta | None = None  # backdate version 1 (moto stamps "now")
    latest_age: dt.timedelta | None = None  # backdate $LATEST's LastModified
    stack: bool = True  # tagged aws:cloudformation:stack-name

    @property
    def role_name(self) -> str:
        return "batch-role" if self.role_policy == "shared" else f"{self.name}-role"


def _v(*controls: str) -> frozenset[str]:
    return frozenset(controls)


_H = dt.timedelta(hours=1)
_D = dt.timedelta(days=1)


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        "orders-api",
        regions="all",
        permissions=("api:orders",),
        url_auth="AWS_IAM",
        reserved=50,
        provisioned_alias=20,
    ),
    FunctionSpec("admin-tool", _v("lambda-role-least-privilege"), role_policy="admin_managed"),
    FunctionSpec(
        "wildcard-worker", _v("lambda-role-least-privilege"), role_policy="wildcard_inline"
    ),
    FunctionSpec(
        "batch-a", _v("lambda-role-not-shared"), role_policy="shared", provisioned_version=5
    ),
    FunctionSpec("batch-b", _v("lambda-role-not-shared"), role_policy="shared"),
    FunctionSpec("batch-c", _v("lambda-role-not-shared"), role_policy="shared"),
    FunctionSpec("billing-worker", _v("lambda-env-cmk-encryption"), kms=False),
    FunctionSpec(
        "payments-webhook",
        _v("lambda-env-no-plaintext-secrets"),
        env={"DB_PASSWORD": SEEDED_SECRETS[0], "PAYMENT_API": SEEDED_SECRETS[1], "STAGE": "prod"},
    ),
    FunctionSpec("public-fetcher", _v("lambda-vpc-attached"), vpc="none"),
    FunctionSpec("single-az", _v("lambda-vpc-multi-az"), vpc="single"),
    FunctionSpec(
        "no-logs",
        _v("lambda-logging", "lambda-log-retention", "lambda-log-export"),
        log_group=False,
    ),
    FunctionSpec("quiet-role", _v("lambda-logging"), role_policy="no_logs"),
    FunctionSpec("long-runner", _v("lambda-timeout-memory-bounds"), timeout=900),
    FunctionSpec(
        "unpublished",
        _v("lambda-published-alias", "lambda-version-current", "lambda-backup-age"),
        publish=False,
        alias="none",
        latest_age=2 * _D,
    ),
    FunctionSpec("alias-latest", _v("lambda-published-alias"), alias="latest"),
    FunctionSpec("open-invoke", _v("lambda-resource-policy-restricted"), permissions=("public",)),
    FunctionSpec(
        "s3-trigger", _v("lambda-resource-policy-restricted"), permissions=("s3-unscoped",)
    ),
    FunctionSpec("public-url", _v("lambda-url-auth"), regions="all", url_auth="NONE"),
    # exempted by tag in the demo policy: a failure, but not a violation
    FunctionSpec("partner-webhook", url_auth="NONE", tags={"posture/exempt": "lambda-url-auth"}),
    FunctionSpec("unprotected-api", _v("lambda-api-waf"), permissions=("api:legacy",)),
    FunctionSpec("no-reservation", _v("lambda-reserved-concurrency"), reserved=None),
    # the demo policy holds an *expired* exemption for this one: still a violation
    FunctionSpec("old-runtime", _v("lambda-runtime-supported"), runtime="python3.8"),
    FunctionSpec("unsigned", _v("lambda-code-signing-enforced"), signing="none"),
    FunctionSpec("warn-signing", _v("lambda-code-signing-enforced"), signing="warn"),
    FunctionSpec("fire-and-forget", _v("lambda-async-failure-capture"), on_failure=False),
    FunctionSpec(
        "untraced",
        _v("lambda-xray-active"),
        regions="all",
        tracing="PassThrough",
        permissions=("s3-scoped",),
    ),
    # backups (reservations of 1: the primary region's reservations stay at the unreserved floor)
    FunctionSpec(
        "stale-version",
        _v("lambda-version-current"),
        reserved=1,
        code_change=True,
        version_age=3 * _D,
        latest_age=2 * _D,
    ),
    FunctionSpec(
        "old-backup",
        _v("lambda-backup-age"),
        reserved=1,
        code_change=True,
        version_age=9 * _D,
        latest_age=2 * _H,
    ),
    # current however old its version; logs never expire and are exported by a task
    FunctionSpec(
        "archive-job",
        reserved=1,
        version_age=40 * _D,
        latest_age=40 * _D,
        log_retention=None,
        log_export="task",
    ),
    FunctionSpec("short-logs", _v("lambda-log-retention"), reserved=1, log_retention=7),
    # the demo policy requires a retention period for personal data
    FunctionSpec(
        "pii-forever-logs",
        _v("lambda-log-retention"),
        reserved=1,
        log_retention=None,
        tags={"data-class": "personal"},
    ),
    FunctionSpec("unexported-logs", _v("lambda-log-export"), reserved=1, log_export="none"),
    FunctionSpec(
        "orphaned-layer",
        _v("lambda-layer-versions-exist"),
        reserved=1,
        layers=("common-utils", OWN_DELETED_LAYER),
    ),
    FunctionSpec(
        "vendor-instrumented",
        _v("lambda-layers-trusted"),
        reserved=1,
        layers=("common-utils", VENDOR_LAYERS[0]),
    ),
    FunctionSpec(
        "vendor-abandoned",
        _v("lambda-layers-trusted", "lambda-layer-versions-exist"),
        reserved=1,
        layers=(VENDOR_LAYERS[1],),
    ),
    FunctionSpec("hand-made", _v("lambda-config-recoverable"), reserved=1, stack=False),
)

PUBLIC_LAYER = "shared-public"


@dataclass(frozen=True)
class ConcurrencyProfile:
    """An account-region's Lambda concurrency: its limit and the CloudWatch datapoints written at
    seeding, one per minute, the most recent (one minute ago) first."""

    limit: int | None  # None: AWS's default (1000), left to the shim
    concurrent: tuple[float, ...] = ()  # ConcurrentExecutions, account level
    unreserved: tuple[float, ...] = ()  # UnreservedConcurrentExecutions
    claimed: tuple[float, ...] = ()  # ClaimedAccountConcurrency
    throttles: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # by function


# Primary: 24 reservations of 10, orders-api's 50 and 10 of 1 take 300 of a limit of 400, leaving
# AWS's minimum unreserved pool of 100; the peak of 352 leaves 48 (12%) of headroom; claimed =
# 300 reserved + the unreserved peak. Secondary: idle, AWS's default limit.
CONCURRENCY = {
    PRIMARY: ConcurrencyProfile(
        limit=400,
        concurrent=(352, 318, 274),
        unreserved=(92, 71, 55),
        claimed=(392, 371, 355),
        throttles={"orders-api": (12, 5), "batch-a": (3,), "untraced": (0, 4)},
    ),
    SECONDARY: ConcurrencyProfile(limit=None),
}

REGION_VIOLATIONS = {
    PRIMARY: _v(
        "lambda-concurrency-headroom",
        "lambda-unreserved-concurrency",
        "lambda-reserved-concurrency-fraction",
    ),
    SECONDARY: _v("lambda-config-recording", "lambda-cloudtrail-management-events"),
}


@dataclass(frozen=True, slots=True)
class Violation:
    account_id: str
    region: str
    control: str
    resource: str


def function_arn(account: str, region: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


def functions_in(region: str, only: Iterable[str] | None = None) -> list[FunctionSpec]:
    names = set(only) if only is not None else None
    return [
        f
        for f in FUNCTIONS
        if (f.regions == "all" or region == PRIMARY) and (names is None or f.name in names)
    ]


def expected_violations(
    accounts: Iterable[str],
    regions: Iterable[str] = DEMO_REGIONS,
    only: Iterable[str] | None = None,
) -> set[Violation]:
    """The violations the seeded estate (or only the resources named) holds, by construction."""
    only = tuple(only) if only is not None else None
    regions = tuple(regions)
    out: set[Violation] = set()
    for account in accounts:
        for region in regions:
            for spec in functions_in(region, only):
                arn = function_arn(account, region, spec.name)
                out.update(Violation(account, region, c, arn) for c in spec.violates)
            if region == PRIMARY:
                layer_arn = f"arn:aws:lambda:{region}:{account}:layer:{PUBLIC_LAYER}:1"
                out.add(Violation(account, region, "lambda-layer-not-public", layer_arn))
            resource = f"arn:aws::{region}:{account}:account-region"
            out.update(Violation(account, region, c, resource) for c in REGION_VIOLATIONS[region])
            for module in (containers, databases):
                out.update(
                    Violation(account, region, control, arn)
                    for control, arn in module.expected(account, region, only)
                )
    return out


def _zip(body: str = "def handler(event, context):\n    return {'ok': True}\n") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", body)
    return buf.getvalue()


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


_TRUST = _doc(
    {
        "Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
)


class Seeder:
    """Seeds one account (through AssumeRole unless it is the caller's own account)."""

    def __init__(
        self,
        account: str,
        session: AioSession | None = None,
        only: Iterable[str] | None = None,
        vendor_layers: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.account = account
        self.session = session or get_session()
        self.only = tuple(only) if only is not None else None
        # region -> vendor layer name -> the layer version ARN to use (seed_vendor_layers)
        self.vendor_layers = vendor_layers or {}
        self._creds: dict[str, str] = {}

    async def _credentials(self) -> dict[str, str]:
        if self.account == MANAGEMENT_ACCOUNT:
            return {}
        if not self._creds:
            async with self.session.create_client("sts", region_name=PRIMARY) as sts:
                resp = await sts.assume_role(
                    RoleArn=f"arn:aws:iam::{self.account}:role/OrganizationAccountAccessRole",
                    RoleSessionName="demo-seeder",
                )
            c = resp["Credentials"]
            self._creds = {
                "aws_access_key_id": c["AccessKeyId"],
                "aws_secret_access_key": c["SecretAccessKey"],
                "aws_session_token": c["SessionToken"],
            }
        return self._creds

    def client(self, service: str, region: str = PRIMARY, **creds: str) -> Any:
        return self.session.create_client(service, region_name=region, **creds)

    async def seed(self, regions: Iterable[str] = DEMO_REGIONS) -> None:
        creds = await self._credentials()
        await self._iam(creds)
        for region in regions:
            region_seeder = RegionSeeder(self, region, creds)
            try:
                await region_seeder.seed()
            finally:
                await region_seeder.close()

    async def _iam(self, creds: dict[str, str]) -> None:
        async with self.client("iam", **creds) as iam:
            names = {f.role_name: f for f in FUNCTIONS if self.only is None or f.name in self.only}
            for role_name, spec in sorted(names.items()):
                await iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=_TRUST)
                await self._role_policy(iam, role_name, spec)

    async def _role_policy(self, iam: Any, role: str, spec: FunctionSpec) -> None:
        log_resource = f"arn:aws:logs:*:{self.account}:log-group:/aws/lambda/*:*"
        logs = {
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": log_resource,
        }
        xray = {"Effect": "Allow", "Action": ["xray:PutTraceSegments"], "Resource": "*"}
        table = {
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
            "Resource": f"arn:aws:dynamodb:*:{self.account}:table/orders",
        }
        kind = spec.role_policy
        if kind == "admin_managed":
            await iam.attach_role_policy(
                RoleName=role, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
            )
            statements = [logs]
        elif kind == "wildcard_inline":
            statements = [logs, {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]
        elif kind == "no_logs":
            statements = [table]
        else:
            statements = [logs, xray, table]
        await iam.put_role_policy(RoleName=role, PolicyName="app", PolicyDocument=_doc(*statements))


class _Borrowed:
    """`async with` over a client the region seeder keeps open (closed when seeding ends)."""

    def __init__(self, seeder: RegionSeeder, service: str) -> None:
        self.seeder = seeder
        self.service = service

    async def __aenter__(self) -> Any:
        return await self.seeder.open_client(self.service)

    async def __aexit__(self, *exc: object) -> None:
        return None


class RegionSeeder:
    """Seeds one account-region. Clients are created once per service and shared: creating an
    aiobotocore client costs more CPU than the moto calls most seeding steps make."""

    def __init__(self, parent: Seeder, region: str, creds: dict[str, str]) -> None:
        self.parent = parent
        self.account = parent.account
        self.region = region
        self.creds = creds
        self._clients: dict[str, Any] = {}
        self._opened: list[Any] = []  # the clients' context managers, exited by close()
        self._lock = asyncio.Lock()

    def client(self, service: str) -> _Borrowed:
        return _Borrowed(self, service)

    async def open_client(self, service: str) -> Any:
        async with self._lock:
            found = self._clients.get(service)
            if found is None:
                manager = self.parent.client(service, self.region, **self.creds)
                found = await manager.__aenter__()
                self._opened.append(manager)
                self._clients[service] = found
            return found

    async def close(self) -> None:
        while self._opened:
            await self._opened.pop().__aexit__(None, None, None)
        self._clients.clear()

    def _containers_and_databases(self, shared: dict[str, Any]) -> list[Any]:
        only = self.parent.only
        return [
            containers.seed_ecr(self, shared, only),
            containers.seed_ecs(self, shared, only),
            databases.seed_rds(self, shared, only),
        ]

    async def seed(self) -> None:
        profile = CONCURRENCY[self.region]
        if profile.limit is not None:  # before any reservation: the shim enforces AWS's floor
            await set_concurrency_limit(self.account, self.region, profile.limit)
        shared = await self._shared()
        specs = functions_in(self.region, self.parent.only)
        sem = asyncio.Semaphore(8)

        async def one(spec: FunctionSpec) -> None:
            async with sem:
                await self._function(spec, shared)

        await asyncio.gather(*(one(s) for s in specs), *self._containers_and_databases(shared))
        if OWN_DELETED_LAYER in shared["layers"]:  # used, now deleted: the function keeps it
            async with self.client("lambda") as lam:
                number = int(shared["layers"][OWN_DELETED_LAYER].rsplit(":", 1)[1])
                await lam.delete_layer_version(LayerName=OWN_DELETED_LAYER, VersionNumber=number)
        await self._region_posture()
        await write_concurrency_metrics(
            lambda: self.client("cloudwatch"),
            profile,
            dt.datetime.now(dt.UTC),
            {s.name for s in specs},
        )

    async def _shared(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with self.client("kms") as kms:
            out["kms"] = (await kms.create_key(Description="demo env key"))["KeyMetadata"]["Arn"]
        async with self.client("sqs") as sqs:
            url = (await sqs.create_queue(QueueName="lambda-failures"))["QueueUrl"]
            attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            out["queue"] = attrs["Attributes"]["QueueArn"]
        async with self.client("ec2") as ec2:
            vpc = (await ec2.create_vpc(CidrBlock="10.20.0.0/16"))["Vpc"]["VpcId"]
            subnets = []
            for i, az in enumerate(("a", "b")):
                s = await ec2.create_subnet(
                    VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{self.region}{az}"
                )
                subnets.append(s["Subnet"]["SubnetId"])
            sg = await ec2.create_security_group(
                GroupName="lambda", Description="lambda", VpcId=vpc
            )
            out["vpc"], out["subnets"], out["sg"] = vpc, subnets, sg["GroupId"]
        async with self.client("lambda") as lam:
            layer = await lam.publish_layer_version(
                LayerName="common-utils", Content={"ZipFile": _zip()}
            )
            out["layers"] = {"common-utils": layer["LayerVersionArn"]}
            specs = functions_in(self.region, self.parent.only)
            if any(OWN_DELETED_LAYER in spec.layers for spec in specs):
                legacy = await lam.publish_layer_version(
                    LayerName=OWN_DELETED_LAYER, Content={"ZipFile": _zip()}
                )
                out["layers"][OWN_DELETED_LAYER] = legacy["LayerVersionArn"]
            out["layers"].update(self.parent.vendor_layers.get(self.region, {}))
            if self.region == PRIMARY:
                await lam.publish_layer_version(LayerName=PUBLIC_LAYER, Content={"ZipFile": _zip()})
                await lam.add_layer_version_permission(
                    LayerName=PUBLIC_LAYER,
                    VersionNumber=1,
                    StatementId="everyone",
                    Action="lambda:GetLayerVersion",
                    Principal="*",
                )
            out["csc"] = {}
            for mode in ("Enforce", "Warn"):
                csc = await lam.create_code_signing_config(
                    AllowedPublishers={
                        "SigningProfileVersionArns": [
                            f"arn:aws:signer:{self.region}:{self.account}:/signing-profiles/demo/abc"
                        ]
                    },
                    CodeSigningPolicies={"UntrustedArtifactOnDeployment": mode},
                )
                out["csc"][mode] = csc["CodeSigningConfig"]["CodeSigningConfigArn"]
        out["apis"] = await self._apis()
        out["log_export"] = await self._log_destinations(specs)
        return out

    async def _log_destinations(self, specs: list[FunctionSpec]) -> dict[str, str]:
        """The central log stream subscription filters send to, and the bucket of export tasks."""
        out: dict[str, str] = {}
        if any(s.log_group and s.log_export == "subscription" for s in specs):
            async with self.client("kinesis") as kinesis:
                await kinesis.create_stream(StreamName="central-logs", ShardCount=1)
                described = await kinesis.describe_stream(StreamName="central-logs")
                out["stream"] = described["StreamDescription"]["StreamARN"]
        if any(s.log_group and s.log_export == "task" for s in specs):
            async with self.client("s3") as s3:
                bucket = f"log-archive-{self.account}-{self.region}"
                if self.region == "us-east-1":
                    await s3.create_bucket(Bucket=bucket)
                else:
                    await s3.create_bucket(
                        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.region}
                    )
                out["bucket"] = bucket
        return out

    async def _apis(self) -> dict[str, str]:
        apis: dict[str, str] = {}
        async with self.client("apigateway") as ag, self.client("wafv2") as waf:
            for name, protected in (("orders", True), ("legacy", False)):
                api_id = (await ag.create_rest_api(name=name))["id"]
                root = (await ag.get_resources(restApiId=api_id))["items"][0]["id"]
                await ag.put_method(
                    restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE"
                )
                await ag.put_integration(
                    restApiId=api_id,
                    resourceId=root,
                    httpMethod="GET",
                    type="AWS_PROXY",
                    integrationHttpMethod="POST",
                    uri=f"arn:aws:apigateway:{self.region}:lambda:path/2015-03-31/functions/"
                    f"{function_arn(self.account, self.region, name)}/invocations",
                )
                await ag.create_deployment(restApiId=api_id, stageName="prod")
                if protected:
                    acl = await waf.create_web_acl(
                        Name=f"{name}-acl",
                        Scope="REGIONAL",
                        DefaultAction={"Allow": {}},
                        VisibilityConfig={
                            "SampledRequestsEnabled": False,
                            "CloudWatchMetricsEnabled": False,
                            "MetricName": name,
                        },
                        Rules=[],
                    )
                    await waf.associate_web_acl(
                        WebACLArn=acl["Summary"]["ARN"],
                        ResourceArn=f"arn:aws:apigateway:{self.region}::/restapis/{api_id}/stages/prod",
                    )
                apis[name] = api_id
        return apis

    async def _function(self, spec: FunctionSpec, shared: dict[str, Any]) -> None:
        name = spec.name
        params: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": spec.runtime,
            "Role": f"arn:aws:iam::{self.account}:role/{spec.role_name}",
            "Handler": "app.handler",
            "Code": {"ZipFile": _zip()},
            "Timeout": spec.timeout,
            "MemorySize": spec.memory,
            "Environment": {"Variables": spec.env},
            "TracingConfig": {"Mode": spec.tracing},
            "Layers": [shared["layers"][layer] for layer in spec.layers],
            "Tags": {"app": name, **spec.tags},
        }
        if spec.stack:
            params["Tags"][STACK_TAG] = STACK
        if spec.kms:
            params["KMSKeyArn"] = shared["kms"]
        if spec.vpc != "none":
            subnets = shared["subnets"] if spec.vpc == "multi" else shared["subnets"][:1]
            params["VpcConfig"] = {"SubnetIds": subnets, "SecurityGroupIds": [shared["sg"]]}
        if spec.signing != "none":
            params["CodeSigningConfigArn"] = shared["csc"][
                "Enforce" if spec.signing == "enforce" else "Warn"
            ]
        if spec.log_group:
            await self._log_group(spec, shared)
        async with self.client("lambda") as lam:
            await lam.create_function(**params)
            if spec.reserved is not None:
                await lam.put_function_concurrency(
                    FunctionName=name, ReservedConcurrentExecutions=spec.reserved
                )
            if spec.publish:
                version = (await lam.publish_version(FunctionName=name))["Version"]
                if spec.alias == "version":
                    await lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
                    if spec.provisioned_alias:
                        await lam.put_provisioned_concurrency_config(
                            FunctionName=name,
                            Qualifier="live",
                            ProvisionedConcurrentExecutions=spec.provisioned_alias,
                        )
                if spec.provisioned_version:
                    await lam.put_provisioned_concurrency_config(
                        FunctionName=name,
                        Qualifier=version,
                        ProvisionedConcurrentExecutions=spec.provisioned_version,
                    )
                if spec.code_change:  # deployed again without publishing
                    await lam.update_function_code(
                        FunctionName=name,
                        ZipFile=_zip("def handler(event, context):\n    return 2\n"),
                    )
                if spec.version_age is not None:
                    await common.backdate_function(
                        self.account, self.region, name, version, spec.version_age
                    )
            if spec.latest_age is not None:
                await common.backdate_function(
                    self.account, self.region, name, "$LATEST", spec.latest_age
                )
            if spec.alias == "latest":
                await lam.create_alias(FunctionName=name, Name="live", FunctionVersion="$LATEST")
            for i, perm in enumerate(spec.permissions):
                await lam.add_permission(
                    FunctionName=name, StatementId=f"p{i}", **self._permission(perm, shared)
                )
            if spec.url_auth:
                await lam.create_function_url_config(FunctionName=name, AuthType=spec.url_auth)
            if spec.on_failure:
                await lam.put_function_event_invoke_config(
                    FunctionName=name,
                    DestinationConfig={"OnFailure": {"Destination": shared["queue"]}},
                )

    async def _log_group(self, spec: FunctionSpec, shared: dict[str, Any]) -> None:
        group = f"/aws/lambda/{spec.name}"
        async with self.client("logs") as logs:
            await logs.create_log_group(logGroupName=group)
            if spec.log_retention is not None:
                await logs.put_retention_policy(
                    logGroupName=group, retentionInDays=spec.log_retention
                )
            if spec.log_export == "subscription":
                await logs.put_subscription_filter(
                    logGroupName=group,
                    filterName="central",
                    filterPattern="",
                    destinationArn=shared["log_export"]["stream"],
                    roleArn=f"arn:aws:iam::{self.account}:role/logs-to-kinesis",
                )
            elif spec.log_export == "task":
                now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
                await logs.create_export_task(
                    taskName=f"{spec.name}-daily",
                    logGroupName=group,
                    fromTime=now_ms - 86_400_000,
                    to=now_ms - 3_600_000,  # the exported range ended an hour ago
                    destination=shared["log_export"]["bucket"],
                    destinationPrefix=spec.name,
                )

    def _permission(self, kind: Permission, shared: dict[str, Any]) -> dict[str, Any]:
        invoke = {"Action": "lambda:InvokeFunction"}
        if kind.startswith("api:"):
            api_id = shared["apis"][kind.split(":", 1)[1]]
            return {
                **invoke,
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": f"arn:aws:execute-api:{self.region}:{self.account}:{api_id}/prod/GET/",
            }
        if kind == "public":
            return {**invoke, "Principal": "*"}
        if kind == "s3-unscoped":
            return {**invoke, "Principal": "s3.amazonaws.com"}
        return {
            **invoke,
            "Principal": "s3.amazonaws.com",
            "SourceArn": "arn:aws:s3:::demo-uploads",
            "SourceAccount": self.account,
        }

    async def _region_posture(self) -> None:
        if self.region != PRIMARY:
            return  # the secondary region has neither AWS Config nor a trail: two violations
        async with self.client("config") as cfg:
            await cfg.put_configuration_recorder(
                ConfigurationRecorder={
                    "name": "default",
                    "roleARN": f"arn:aws:iam::{self.account}:role/config",
                    "recordingGroup": {"allSupported": True, "includeGlobalResourceTypes": True},
                }
            )
            await cfg.put_delivery_channel(
                DeliveryChannel={"name": "default", "s3BucketName": f"config-{self.account}"}
            )
            await cfg.start_configuration_recorder(ConfigurationRecorderName="default")
        async with self.client("s3") as s3, self.client("cloudtrail") as ct:
            bucket = f"trail-{self.account}-{self.region}"
            await s3.create_bucket(Bucket=bucket)
            await ct.create_trail(Name="management", S3BucketName=bucket, IsMultiRegionTrail=False)
            await ct.start_logging(Name="management")


async def set_concurrency_limit(account: str, region: str, limit: int) -> None:
    """Set an account-region's Lambda concurrency limit in the embedded moto server's shim (AWS
    changes it through a Service Quotas request; moto has no such state)."""
    body = {"AccountId": account, "Region": region, "ConcurrentExecutions": limit}
    await common.shim("/posture-shim/lambda/account-limit", body)


async def write_concurrency_metrics(
    cloudwatch: Callable[[], Any],
    profile: ConcurrencyProfile,
    now: dt.datetime,
    functions: Iterable[str] | None = None,
) -> None:
    """Write the profile's datapoints, the first of each series one minute before `now`.

    `cloudwatch` makes the client (only created when there is something to write); throttles are
    written for `functions` only (those seeded), so the account total stays the sum over existing
    functions.
    """
    minute = now.replace(second=0, microsecond=0)
    wanted = set(functions) if functions is not None else None
    data: list[dict[str, Any]] = []

    def series(name: str, values: Iterable[float], dims: list[dict[str, str]]) -> None:
        for i, value in enumerate(values):
            data.append(
                {
                    "MetricName": name,
                    "Dimensions": dims,
                    "Timestamp": minute - dt.timedelta(minutes=i + 1),
                    "Value": value,
                    "Unit": "Count",
                }
            )

    series("ConcurrentExecutions", profile.concurrent, [])
    series("UnreservedConcurrentExecutions", profile.unreserved, [])
    series("ClaimedAccountConcurrency", profile.claimed, [])
    for fn, values in sorted(profile.throttles.items()):
        if wanted is None or fn in wanted:
            series("Throttles", values, [{"Name": "FunctionName", "Value": fn}])
    if not data:
        return
    async with cloudwatch() as cw:
        for i in range(0, len(data), 500):  # PutMetricData takes up to 1000 datapoints
            await cw.put_metric_data(Namespace="AWS/Lambda", MetricData=data[i : i + 500])


def _minute_of(profile: ConcurrencyProfile, step: int) -> ConcurrencyProfile:
    """One datapoint of each of the profile's series, cycling through them."""

    def pick(values: tuple[float, ...]) -> tuple[float, ...]:
        return (values[step % len(values)],) if values else ()

    return ConcurrencyProfile(
        profile.limit,
        pick(profile.concurrent),
        pick(profile.unreserved),
        pick(profile.claimed),
        {fn: pick(v) for fn, v in profile.throttles.items()},
    )


async def simulate_load(
    accounts: Iterable[str], regions: Iterable[str] = DEMO_REGIONS, every: float = 60.0
) -> None:
    """Keep the busy account-regions busy while the demo runs: every minute, write the next
    datapoint of their profile (the seeded ones leave the lookback window after a while)."""
    session = get_session()
    seeders = [Seeder(a, session) for a in accounts]
    busy = [r for r in regions if CONCURRENCY[r].concurrent]
    step = 0
    while True:
        await asyncio.sleep(every)
        step += 1
        this_minute = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        for seeder in seeders:
            creds = await seeder._credentials()
            for region in busy:
                await write_concurrency_metrics(
                    partial(seeder.client, "cloudwatch", region, **creds),
                    _minute_of(CONCURRENCY[region], step),
                    this_minute,
                )


def expected_concurrency(region: str, only: Iterable[str] | None = None) -> dict[str, Any]:
    """The concurrency figures the daemon must report for a seeded account-region (every
    datapoint still inside the lookback window), derived from the estate's definition."""
    profile = CONCURRENCY[region]
    specs = functions_in(region, only)
    seeded = {s.name for s in specs}
    reserved = {s.name: s.reserved for s in specs if s.reserved is not None}
    limit = profile.limit if profile.limit is not None else 1000
    total = sum(reserved.values())
    top = sorted(reserved, key=lambda name: (-reserved[name], name))[:10]
    throttled = {name: v for name, v in profile.throttles.items() if name in seeded}
    provisioned = {}
    for s in specs:
        if s.provisioned_alias and s.publish and s.alias == "version":
            provisioned[(s.name, "live")] = s.provisioned_alias
        if s.provisioned_version and s.publish:
            provisioned[(s.name, "1")] = s.provisioned_version  # the first published version
    peak = max(profile.concurrent, default=0.0)
    return {
        "limit": limit,
        "unreserved": limit - total,
        "reserved": total,
        "function_reserved": reserved,
        "provisioned": provisioned,
        "concurrent_peak": peak,
        "unreserved_peak": max(profile.unreserved, default=0.0),
        "claimed_peak": max(profile.claimed) if profile.claimed else None,
        "headroom": limit - peak,
        "throttles": float(sum(sum(v) for v in throttled.values())),
        "function_throttles": {name: float(sum(throttled.get(name, ()))) for name in top},
        # one datapoint per minute; the account's Throttles add up the functions' per minute
        "datapoints": {
            "ConcurrentExecutions": len(profile.concurrent),
            "UnreservedConcurrentExecutions": len(profile.unreserved),
            "ClaimedAccountConcurrency": len(profile.claimed),
            "Throttles": max((len(v) for v in throttled.values()), default=0),
        },
    }


async def create_organization(
    names: Iterable[str], session: AioSession | None = None
) -> dict[str, str]:
    """An organization with the given member accounts; returns {name: account id}."""
    session = session or get_session()
    out: dict[str, str] = {}
    async with session.create_client("organizations", region_name=PRIMARY) as org:
        await org.create_organization(FeatureSet="ALL")
        for name in names:
            created = await org.create_account(Email=f"{name}@example.com", AccountName=name)
            account_id = created["CreateAccountStatus"].get("AccountId")
            if not account_id:
                accounts = (await org.list_accounts())["Accounts"]
                account_id = next(a["Id"] for a in accounts if a["Name"] == name)
            out[name] = str(account_id)
    return out


async def seed_vendor_layers(
    session: AioSession,
    accounts: Iterable[str],
    regions: Iterable[str],
    only: Iterable[str] | None = None,
) -> dict[str, dict[str, str]]:
    """The vendor's layers the selected functions use, shared with the member accounts: the
    telemetry layer (published once) and a new version of the legacy layer, which
    `retire_vendor_layers` deletes once the members' functions use it. {region: {name: ARN}}."""
    only = tuple(only) if only is not None else None
    accounts = tuple(accounts)
    out: dict[str, dict[str, str]] = {}
    vendor = Seeder(VENDOR_ACCOUNT, session)
    creds = await vendor._credentials()
    for region in regions:
        wanted = {
            layer
            for spec in functions_in(region, only)
            for layer in spec.layers
            if layer in VENDOR_LAYERS
        }
        if not wanted:
            continue
        out[region] = {}
        async with vendor.client("lambda", region, **creds) as lam:
            for name in sorted(wanted):
                existing = (await lam.list_layer_versions(LayerName=name))["LayerVersions"]
                if existing and name == VENDOR_LAYERS[0]:
                    arn, number = existing[0]["LayerVersionArn"], existing[0]["Version"]
                else:
                    published = await lam.publish_layer_version(
                        LayerName=name, Content={"ZipFile": _zip()}
                    )
                    arn, number = published["LayerVersionArn"], published["Version"]
                for account in accounts:
                    # (already shared with this account by an earlier seeding: fine)
                    with contextlib.suppress(lam.exceptions.ResourceConflictException):
                        await lam.add_layer_version_permission(
                            LayerName=name,
                            VersionNumber=number,
                            StatementId=f"member-{account}",
                            Action="lambda:GetLayerVersion",
                            Principal=account,
                        )
                out[region][name] = arn
    return out


async def retire_vendor_layers(
    session: AioSession, layers: Mapping[str, Mapping[str, str]]
) -> None:
    """The vendor deletes the legacy layer version the members' functions still use."""
    vendor = Seeder(VENDOR_ACCOUNT, session)
    creds = await vendor._credentials()
    for region, arns in layers.items():
        arn = arns.get(VENDOR_LAYERS[1])
        if arn is None:
            continue
        async with vendor.client("lambda", region, **creds) as lam:
            await lam.delete_layer_version(
                LayerName=VENDOR_LAYERS[1], VersionNumber=int(arn.rsplit(":", 1)[1])
            )


async def seed_estate(
    accounts: Iterable[str],
    regions: Iterable[str] = DEMO_REGIONS,
    only: Iterable[str] | None = None,
) -> None:
    """Seed every account (concurrently) with the demo estate (or only the resources named)."""
    session = get_session()
    regions = tuple(regions)
    accounts = tuple(accounts)
    vendor = await seed_vendor_layers(session, accounts, regions, only)
    await asyncio.gather(*(Seeder(a, session, only, vendor).seed(regions) for a in accounts))
    await retire_vendor_layers(session, vendor)
