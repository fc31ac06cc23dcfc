"""Snapshots of AWS Lambda and of the region-wide services its controls read.

A function's data comes from several API calls. Each call that failed for a reason other than
"the thing does not exist" leaves its aspect name in `errors`; a control that needs that aspect is
then reported as `error` for that function, never as `pass`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from daemon.model import secrets
from daemon.model.core import EMPTY_TAGS, RegionResource, Target
from daemon.model.export import ASPECT_EXPORT as _ASPECT_EXPORT
from daemon.model.export import ExportCoverage, FunctionExport
from daemon.model.iampolicy import PolicyDocument

# Lambda functions carry reduced environment variables (the same value ECS containers carry).
EnvVar = secrets.EnvVar

FUNCTION = "lambda-function"
LAYER_VERSION = "lambda-layer-version"
ACCOUNT_REGION = "account-region"

# Aspects: the separately fetched parts of a function's data. Controls declare which they need.
ASPECT_CONFIG = "configuration"  # ListFunctions: always present when the function is listed
ASPECT_ENV = "environment"  # environment variables (unreadable when KMS decryption is denied)
ASPECT_FUNCTION = "get_function"  # GetFunction: tags, reserved concurrency
ASPECT_POLICY = "policy"  # GetPolicy
ASPECT_URL = "url"  # GetFunctionUrlConfig
ASPECT_ALIASES = "aliases"  # ListAliases
ASPECT_VERSIONS = "versions"  # ListFunctions(FunctionVersion=ALL)
ASPECT_CODE_SIGNING = "code_signing"  # ListCodeSigningConfigs + ListFunctionsByCodeSigningConfig
ASPECT_INVOKE_CONFIG = "invoke_config"  # GetFunctionEventInvokeConfig
ASPECT_ROLE = "role"  # IAM role and its policies
ASPECT_LOG_GROUP = "log_group"  # CloudWatch Logs DescribeLogGroups
ASPECT_SUBNETS = "subnets"  # EC2 DescribeSubnets
ASPECT_WEB = "web_stages"  # API Gateway stages (WAF association)
ASPECT_LAYER_POLICY = "layer_policy"  # GetLayerVersionPolicy
ASPECT_CONFIG_RECORDER = "config_recorder"
ASPECT_CLOUDTRAIL = "cloudtrail"
ASPECT_PROVISIONED = "provisioned_concurrency"  # ListProvisionedConcurrencyConfigs (per function)
ASPECT_LAYERS = "layer_versions"  # ListLayerVersions (own) / GetLayerVersionByArn (other accounts)
# CloudWatch Logs DescribeSubscriptionFilters + DescribeExportTasks (only while lambda-log-export
# may run: the collector skips them otherwise, and the aspect is then absent, not failed)
ASPECT_LOG_EXPORT = "log_export"
# Aspects of the account-region's Lambda concurrency (on RegionPosture.errors):
ASPECT_ACCOUNT_SETTINGS = "account_settings"  # GetAccountSettings: limit and unreserved pool
ASPECT_CONCURRENCY_METRICS = "concurrency_metrics"  # CloudWatch GetMetricData: peaks, throttles
ASPECT_RESERVATIONS = "reservations"  # every function's reserved concurrency (GetFunction)
# The configuration export's index of the account-region in its bucket (daemon/export/):
ASPECT_EXPORT = _ASPECT_EXPORT


@dataclass(frozen=True, slots=True)
class LayerRef:
    arn: str  # layer version ARN as the function references it
    account_id: str
    name: str
    version: int | None


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    function_version: str


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    version: str
    code_sha256: str
    last_modified: datetime | None


@dataclass(frozen=True, slots=True)
class ManagedPolicy:
    arn: str
    name: str
    document: PolicyDocument | None  # None when the document could not be read (see parse_error)
    parse_error: str | None = None

    @property
    def aws_managed(self) -> bool:
        return self.arn.startswith("arn:aws:iam::aws:policy/") or ":iam::aws:policy/" in self.arn


@dataclass(frozen=True, slots=True)
class InlinePolicy:
    name: str
    document: PolicyDocument | None
    parse_error: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRole:
    arn: str
    name: str
    managed: tuple[ManagedPolicy, ...] = ()
    inline: tuple[InlinePolicy, ...] = ()

    def documents(self) -> tuple[PolicyDocument, ...]:
        docs = [p.document for p in self.managed if p.document is not None]
        docs += [q.document for q in self.inline if q.document is not None]
        return tuple(docs)

    def unreadable(self) -> tuple[str, ...]:
        names = [p.name for p in self.managed if p.document is None]
        names += [q.name for q in self.inline if q.document is None]
        return tuple(names)


@dataclass(frozen=True, slots=True)
class LogGroup:
    name: str
    arn: str
    retention_days: int | None  # None: never expire
    subscription_filters: int | None = None  # None: not read (lambda-log-export is off)
    subscription_destinations: tuple[str, ...] = ()  # destinationArn of each filter
    last_export_task: datetime | None = None  # end ("to") of the newest COMPLETED export task


@dataclass(frozen=True, slots=True)
class ApiStage:
    """An API Gateway REST API stage that may invoke the function (from its resource policy)."""

    api_id: str
    stage: str
    web_acl_arn: str | None
    found: bool = True  # False: the policy names an API id that is not a REST API in this region


@dataclass(frozen=True, slots=True)
class ProvisionedConcurrency:
    """A provisioned concurrency configuration of one alias or published version."""

    qualifier: str  # alias name or version number
    requested: int
    allocated: int
    available: int | None = None
    status: str = ""  # IN_PROGRESS | READY | FAILED


@dataclass(frozen=True, slots=True)
class LambdaFunction:
    arn: str
    name: str
    account_id: str
    region: str
    runtime: str | None
    package_type: str
    handler: str | None
    role_arn: str
    memory_mb: int | None
    timeout_s: int | None
    code_sha256: str
    last_modified: datetime | None
    revision_id: str | None
    env_vars: tuple[EnvVar, ...] = ()
    env_kms_key_arn: str | None = None
    vpc_subnet_ids: tuple[str, ...] = ()
    vpc_security_group_ids: tuple[str, ...] = ()
    vpc_azs: frozenset[str] | None = None  # None when subnets could not be resolved
    layers: tuple[LayerRef, ...] = ()
    missing_layers: tuple[str, ...] = ()  # referenced layer versions that no longer exist
    tracing_mode: str | None = None
    dead_letter_target: str | None = None
    on_failure_destination: str | None = None
    reserved_concurrency: int | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    policy: PolicyDocument | None = None  # None: no resource-based policy
    url_auth_type: str | None = None  # None: no function URL
    aliases: tuple[Alias, ...] = ()
    versions: tuple[PublishedVersion, ...] = ()  # published versions, not $LATEST
    code_signing_config_arn: str | None = None
    untrusted_artifact_action: str | None = None  # "Enforce" | "Warn"
    role: ExecutionRole | None = None
    log_group_name: str = ""
    log_group: LogGroup | None = None  # None: the log group does not exist
    web_stages: tuple[ApiStage, ...] = ()
    provisioned: tuple[ProvisionedConcurrency, ...] = ()  # by qualifier
    # digest of the normalised configuration and attachments a sweep reads
    # (daemon/model/lambdaconfig.py); "" when a part of it could not be read, or when the
    # export (its only reader) is off: a sweep does not compute what nothing reads
    config_fingerprint: str = ""
    export: FunctionExport | None = None  # None: the daemon's export is disabled
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = FUNCTION

    @property
    def last_export(self) -> datetime | None:
        """When the newest valid configuration snapshot of the daemon's export was taken (None:
        the export is off, or holds nothing valid for this function)."""
        if self.export is None or self.export.latest is None:
            return None
        return self.export.latest.captured_at

    def newest_version(self) -> PublishedVersion | None:
        """The newest published version (highest number); None when only $LATEST exists."""
        numbered = [v for v in self.versions if v.version.isdigit()]
        return max(numbered, key=lambda v: int(v.version), default=None)


@dataclass(frozen=True, slots=True)
class LayerVersion:
    arn: str
    name: str
    version: int
    account_id: str
    region: str
    policy: PolicyDocument | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = LAYER_VERSION


@dataclass(frozen=True, slots=True)
class ConfigRecorder:
    name: str
    recording: bool
    all_supported: bool
    resource_types: frozenset[str]
    excluded_types: frozenset[str] = frozenset()

    def records(self, resource_type: str) -> bool:
        if not self.recording:
            return False
        if self.all_supported:
            return resource_type not in self.excluded_types
        return resource_type in self.resource_types


@dataclass(frozen=True, slots=True)
class Trail:
    name: str
    arn: str
    home_region: str
    multi_region: bool
    logging: bool
    management_events: bool  # write (or all) management events are selected


@dataclass(frozen=True, slots=True)
class ConcurrencyWindow:
    """What the collector asks CloudWatch for (from the policy's `concurrency` section)."""

    lookback_seconds: int = 900
    period_seconds: int = 60
    top_functions: int = 10  # functions, by reserved concurrency, whose throttles are queried


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """GetAccountSettings for one account-region."""

    concurrency_limit: int  # AccountLimit.ConcurrentExecutions
    unreserved_concurrency: int  # AccountLimit.UnreservedConcurrentExecutions
    function_count: int | None = None  # AccountUsage.FunctionCount


@dataclass(frozen=True, slots=True)
class MetricWindow:
    """One CloudWatch query over the lookback window.

    `value` is the maximum (gauges) or the sum (counts) of the datapoints, 0 when there were none;
    `datapoints` says how many there were, so "idle" is never mistaken for a measurement.
    """

    datapoints: int = 0
    value: float = 0.0


@dataclass(frozen=True, slots=True)
class ConcurrencyUsage:
    """Account-level Lambda concurrency from CloudWatch (AWS/Lambda, no dimensions)."""

    window: ConcurrencyWindow
    concurrent: MetricWindow  # ConcurrentExecutions, Maximum
    unreserved: MetricWindow  # UnreservedConcurrentExecutions, Maximum
    claimed: MetricWindow  # ClaimedAccountConcurrency, Maximum (not emitted everywhere)
    throttles: MetricWindow  # Throttles, Sum
    function_throttles: tuple[tuple[str, MetricWindow], ...] = ()  # top functions, Sum


@dataclass(frozen=True, slots=True)
class LambdaConcurrency:
    """The account-region's concurrency budget. A part that could not be read is None, and the
    reason is an aspect error on the RegionPosture (never a guessed default)."""

    settings: AccountSettings | None
    usage: ConcurrencyUsage | None
    reserved_total: int | None  # sum of the functions' reservations (None: one is unreadable)
    reserved_functions: int = 0  # functions with a reservation


@dataclass(frozen=True, slots=True)
class RegionPosture(RegionResource):
    """Region-wide state that several services' controls read."""

    config_recorders: tuple[ConfigRecorder, ...] = ()
    trails: tuple[Trail, ...] = ()
    lambda_concurrency: LambdaConcurrency | None = None  # None: not collected


@dataclass(frozen=True, slots=True)
class LambdaSnapshot:
    target: Target
    collected_at: datetime
    functions: tuple[LambdaFunction, ...]
    layer_versions: tuple[LayerVersion, ...]
    region: RegionPosture
    export: ExportCoverage | None = None  # None: the daemon's export is disabled
    # functions per execution role, counted when this is built (`functions_with_role`), not
    # once for each function that asks
    _role_users: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_role_users", MappingProxyType(Counter(f.role_arn for f in self.functions))
        )

    def functions_with_role(self, role_arn: str) -> int:
        """How many of the snapshot's functions run with this execution role."""
        return self._role_users.get(role_arn, 0)

    def resources(
        self, resource_type: str
    ) -> Sequence[LambdaFunction | LayerVersion | RegionPosture]:
        if resource_type == FUNCTION:
            return self.functions
        if resource_type == LAYER_VERSION:
            return self.layer_versions
        if resource_type == ACCOUNT_REGION:
            return (self.region,)
        return ()

    def resource_counts(self) -> Mapping[str, int]:
        return MappingProxyType(
            {FUNCTION: len(self.functions), LAYER_VERSION: len(self.layer_versions)}
        )
