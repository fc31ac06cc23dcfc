"""The metrics contract: every metric the daemon exports, defined once.

Dashboards, alert rules and docs/metrics.md depend on these names and labels; tests check that each
of them only uses what is listed here. `source` says where a metric comes from: "state" metrics are
rendered at scrape time from the latest result of each target (so they vanish with the resource),
"health" metrics are the daemon's own instrumented counters and gauges, "runtime" metrics are the
standard process metrics of the Prometheus client library (Linux only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ACCOUNT = "aws_account_id"
REGION = "aws_region"
SERVICE = "aws_service"
TARGET_LABELS = (ACCOUNT, REGION, SERVICE)

MetricType = Literal["gauge", "counter", "histogram", "info"]
Source = Literal["state", "health", "runtime"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str  # the exposed family name (counters without the _total suffix)
    type: MetricType
    help: str
    labels: tuple[str, ...]
    source: Source

    @property
    def exposed(self) -> str:
        """The sample name users query (counters end in _total, info metrics in _info)."""
        if self.type == "counter":
            return self.name + "_total"
        if self.type == "info":
            return self.name + "_info"
        return self.name


def _d(
    name: str,
    type_: MetricType,
    help_: str,
    labels: tuple[str, ...],
    source: Source,
) -> MetricDef:
    return MetricDef(name, type_, help_, labels, source)


# --- compliance state (custom collector, rendered from the state store) -----------------------
VIOLATIONS = _d(
    "posture_violations",
    "gauge",
    "Resources currently violating the control, exempted ones excluded "
    "(0 for every evaluated control).",
    (*TARGET_LABELS, "control", "severity"),
    "state",
)
EVALUATED = _d(
    "posture_evaluated_resources",
    "gauge",
    "Resources the control was evaluated on (pass or fail) in the last successful sweep.",
    (*TARGET_LABELS, "control"),
    "state",
)
EVALUATION_ERRORS = _d(
    "posture_control_evaluation_errors",
    "gauge",
    "Resources the control could not be evaluated on (data unreadable or denied): "
    "neither pass nor fail.",
    (*TARGET_LABELS, "control"),
    "state",
)
RESOURCE_VIOLATION = _d(
    "posture_resource_violation",
    "gauge",
    "1 for each resource violating a control (capped; see posture_resource_series_dropped).",
    (*TARGET_LABELS, "control", "severity", "resource"),
    "state",
)
RESOURCE_SERIES_DROPPED = _d(
    "posture_resource_series_dropped",
    "gauge",
    "Per-resource violation series left out by the series cap at the last scrape.",
    (),
    "state",
)
EXEMPTIONS = _d(
    "posture_exemptions",
    "gauge",
    "Findings covered by an exemption, by state (active, or expired and therefore not applied).",
    (*TARGET_LABELS, "control", "state"),
    "state",
)
RESOURCES = _d(
    "posture_resources",
    "gauge",
    "Resources seen in the last successful sweep.",
    (*TARGET_LABELS, "resource_type"),
    "state",
)
ACCOUNT_INFO = _d(
    "posture_account",
    "info",
    "Account names from AWS Organizations or the policy (names stay off other series).",
    (ACCOUNT, "account_name"),
    "state",
)
CONTROL_INFO = _d(
    "posture_control",
    "info",
    "Static description of each enabled control, for joins in dashboards.",
    ("control", SERVICE, "severity", "resource_type", "title", "security_hub"),
    "state",
)
TARGET_UP = _d(
    "posture_target_up",
    "gauge",
    "1 if the last reconcile of the target succeeded, 0 if it failed (results are then kept from "
    "the last success).",
    TARGET_LABELS,
    "state",
)
TARGET_LAST_SUCCESS = _d(
    "posture_target_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the target's last successful reconcile (0 if never).",
    TARGET_LABELS,
    "state",
)
TARGET_LAST_ATTEMPT = _d(
    "posture_target_last_attempt_timestamp_seconds",
    "gauge",
    "Unix time the target's last reconcile finished, successful or not.",
    TARGET_LABELS,
    "state",
)
TARGET_FAILURES = _d(
    "posture_target_consecutive_failures",
    "gauge",
    "Reconciles of the target that failed in a row (0 after a success).",
    TARGET_LABELS,
    "state",
)
ACCOUNT_UP = _d(
    "posture_account_up",
    "gauge",
    "1 if credentials for the account (AssumeRole) and its region discovery last succeeded.",
    (ACCOUNT,),
    "state",
)

# --- Lambda concurrency per account-region (measures: daemon/controls/concurrency.py) ----------
# A part AWS would not give (GetAccountSettings or GetMetricData failed) leaves its series absent.
ACCOUNT_REGION = (ACCOUNT, REGION)
LAMBDA_CONCURRENCY_LIMIT = _d(
    "posture_lambda_concurrency_limit",
    "gauge",
    "Account concurrency limit of Lambda in the region (GetAccountSettings ConcurrentExecutions).",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_UNRESERVED = _d(
    "posture_lambda_unreserved_concurrency",
    "gauge",
    "Unreserved concurrency pool: the limit minus every reservation "
    "(GetAccountSettings UnreservedConcurrentExecutions; AWS keeps at least 100).",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_RESERVED = _d(
    "posture_lambda_reserved_concurrency",
    "gauge",
    "Sum of the functions' reserved concurrency (absent when one function could not be read).",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_FUNCTION_RESERVED = _d(
    "posture_lambda_function_reserved_concurrency",
    "gauge",
    "Reserved concurrency of a function (only functions with a reservation; 0 = throttled).",
    (*ACCOUNT_REGION, "function"),
    "state",
)
LAMBDA_PROVISIONED = _d(
    "posture_lambda_provisioned_concurrency",
    "gauge",
    "Provisioned concurrency requested for a function's alias or version (qualifier).",
    (*ACCOUNT_REGION, "function", "qualifier"),
    "state",
)
LAMBDA_PROVISIONED_ALLOCATED = _d(
    "posture_lambda_provisioned_concurrency_allocated",
    "gauge",
    "Provisioned concurrency allocated (ready) for a function's alias or version; below the "
    "requested figure while allocation is in progress or failed.",
    (*ACCOUNT_REGION, "function", "qualifier"),
    "state",
)
LAMBDA_CONCURRENT_PEAK = _d(
    "posture_lambda_concurrent_executions_peak",
    "gauge",
    "Highest ConcurrentExecutions (1-minute Maximum) in the lookback window; 0 when CloudWatch "
    "had no datapoints (see posture_lambda_concurrency_datapoints).",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_UNRESERVED_PEAK = _d(
    "posture_lambda_unreserved_concurrent_executions_peak",
    "gauge",
    "Highest UnreservedConcurrentExecutions in the lookback window; 0 without datapoints.",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_CLAIMED_PEAK = _d(
    "posture_lambda_claimed_concurrency_peak",
    "gauge",
    "Highest ClaimedAccountConcurrency (unreserved in use + reserved + provisioned) in the "
    "lookback window; absent when CloudWatch has no such datapoints.",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_HEADROOM = _d(
    "posture_lambda_concurrency_headroom",
    "gauge",
    "Concurrency limit minus the peak of ConcurrentExecutions in the lookback window.",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_THROTTLES = _d(
    "posture_lambda_throttles",
    "gauge",
    "Throttled invocations of all functions in the lookback window (CloudWatch Throttles, Sum).",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_FUNCTION_THROTTLES = _d(
    "posture_lambda_function_throttles",
    "gauge",
    "Throttled invocations in the lookback window of the functions with the largest "
    "reservations (the policy's concurrency.top_functions).",
    (*ACCOUNT_REGION, "function"),
    "state",
)
LAMBDA_DATAPOINTS = _d(
    "posture_lambda_concurrency_datapoints",
    "gauge",
    "CloudWatch datapoints behind each account-level figure in the lookback window, by "
    "metric (ConcurrentExecutions, UnreservedConcurrentExecutions, ClaimedAccountConcurrency, "
    "Throttles); 0 means idle or not emitted, not measured.",
    (*ACCOUNT_REGION, "metric"),
    "state",
)
LAMBDA_LOOKBACK = _d(
    "posture_lambda_concurrency_lookback_seconds",
    "gauge",
    "The lookback window of the concurrency peaks and throttles (policy concurrency section).",
    (),
    "state",
)
LAMBDA_MIN_HEADROOM_RATIO = _d(
    "posture_lambda_concurrency_min_headroom_ratio",
    "gauge",
    "min_headroom_ratio of lambda-concurrency-headroom for the account-region (overrides "
    "applied; absent where the control is disabled): for alert rules.",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_MIN_UNRESERVED = _d(
    "posture_lambda_concurrency_min_unreserved",
    "gauge",
    "min_unreserved of lambda-unreserved-concurrency for the account-region: for alert rules.",
    ACCOUNT_REGION,
    "state",
)
LAMBDA_MAX_RESERVED_FRACTION = _d(
    "posture_lambda_concurrency_max_reserved_fraction",
    "gauge",
    "max_reserved_fraction of lambda-reserved-concurrency-fraction for the account-region: for "
    "alert rules.",
    ACCOUNT_REGION,
    "state",
)

# --- backups (measures: daemon/controls/backup.py; kind="export": daemon/controls/export.py) --
BACKUP_LAST_TIMESTAMP = _d(
    "posture_backup_last_timestamp_seconds",
    "gauge",
    "Unix time of the newest backup of a resource, by kind (version: newest published Lambda "
    "version; snapshot: newest available RDS snapshot, automated or manual; restorable: RDS "
    "LatestRestorableTime; recovery_point: AWS Backup's last backup; export: the daemon's "
    "configuration export). The age is time() minus this.",
    (*TARGET_LABELS, "resource", "kind"),
    "state",
)
BACKUP_MISSING = _d(
    "posture_backup_missing",
    "gauge",
    "1 for a resource with no backup of a kind its backup policy requires, 0 when it has one "
    "(absent where the kind is not required or could not be read).",
    (*TARGET_LABELS, "resource", "kind"),
    "state",
)
BACKUP_MAX_AGE = _d(
    "posture_backup_max_age_seconds",
    "gauge",
    "The backup age limit in force for the resource and kind (the policy's overrides applied); "
    "absent where no age limit applies: the control is disabled or does not apply, or (kind "
    "version) $LATEST matches the newest published version, so nothing is unpublished.",
    (*TARGET_LABELS, "resource", "kind"),
    "state",
)
BACKUP_POLICY_MAX_AGE = _d(
    "posture_backup_policy_max_age_seconds",
    "gauge",
    "The backup policy's default age limit by service and kind (the control's parameter before "
    "overrides; absent where the policy disables the control): for dashboards.",
    (SERVICE, "kind"),
    "state",
)

# --- data freshness (the per-resource detail cache; daemon/collectors/cache.py) -----------------
DATA_OLDEST_FETCH = _d(
    "posture_data_oldest_fetch_timestamp_seconds",
    "gauge",
    "Unix time at which the oldest per-resource detail or account-region lookup the target's "
    "last sweep evaluated was read from AWS (both are cached until a change or max_data_age); "
    "the maximum data age of the target is time() minus this.",
    TARGET_LABELS,
    "state",
)

# --- the daemon's own health (instrumented) ------------------------------------------------------
DATA_AGE = _d(
    "posture_data_age_seconds",
    "histogram",
    "Age of each resource's cached detail, and of each account-region lookup, when a sweep "
    "evaluated it (0 for those read in that sweep): how much of the estate is served from the "
    "cache, and how old.",
    (SERVICE,),
    "health",
)
RATE_LIMIT = _d(
    "posture_aws_rate_limit",
    "gauge",
    "Current pacing rate in requests/s of a quota bucket (share x quota, lowered on throttling "
    "and restored on success: AIMD). Global services (IAM) have one bucket per account, "
    'aws_region="global".',
    (ACCOUNT, REGION, "bucket"),
    "health",
)
RECONCILE_DURATION = _d(
    "posture_reconcile_duration_seconds",
    "histogram",
    "Time to reconcile one target: collect, evaluate, publish.",
    (SERVICE,),
    "health",
)
RECONCILE_INTERVAL = _d(
    "posture_reconcile_interval_seconds",
    "gauge",
    "Configured time between two sweeps of a target (POSTURE_RECONCILER__INTERVAL_SECONDS, before "
    "jitter): alert rules measure staleness in intervals.",
    (),
    "health",
)
RECONCILES = _d(
    "posture_reconciles",
    "counter",
    "Reconciles finished, by result (success or failure).",
    (SERVICE, "result"),
    "health",
)
API_REQUESTS = _d(
    "posture_aws_api_requests",
    "counter",
    "AWS API requests sent, every attempt including retries.",
    (SERVICE, "operation"),
    "health",
)
API_ERRORS = _d(
    "posture_aws_api_errors",
    "counter",
    "AWS API requests that failed, by error code (throttling codes included).",
    (SERVICE, "operation", "error_code"),
    "health",
)
API_THROTTLES = _d(
    "posture_aws_api_throttles",
    "counter",
    "AWS API requests throttled, by target account and region.",
    TARGET_LABELS,
    "health",
)
API_DURATION = _d(
    "posture_aws_api_call_duration_seconds",
    "histogram",
    "Duration of one AWS API call as the daemon saw it, retries included.",
    (SERVICE,),
    "health",
)
WORKERS_ACTIVE = _d(
    "posture_workers_active", "gauge", "Reconcile workers busy right now.", (), "health"
)
WORKERS_MAX = _d("posture_workers_max", "gauge", "Reconcile workers configured.", (), "health")
QUEUE_DEPTH = _d(
    "posture_workqueue_depth", "gauge", "Targets ready and waiting for a worker.", (), "health"
)
QUEUE_LONGEST_WAIT = _d(
    "posture_workqueue_longest_wait_seconds",
    "gauge",
    "How long the oldest ready target has waited for a worker.",
    (),
    "health",
)
TARGETS = _d("posture_targets", "gauge", "Targets assigned to this replica.", (SERVICE,), "health")
POLICY_RELOADS = _d(
    "posture_policy_reloads", "counter", "Policy reloads that were applied.", (), "health"
)
POLICY_RELOAD_FAILURES = _d(
    "posture_policy_reload_failures",
    "counter",
    "Policy reloads rejected because the new file was invalid (the old policy stays).",
    (),
    "health",
)
POLICY_RELOAD_OK = _d(
    "posture_policy_last_reload_successful",
    "gauge",
    "1 if the last attempt to load the policy file succeeded, 0 while the file on disk is rejected "
    "(the daemon keeps running the previous policy).",
    (),
    "health",
)
POLICY_LAST_RELOAD = _d(
    "posture_policy_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time the running policy was loaded.",
    (),
    "health",
)
POLICY_INFO = _d(
    "posture_policy",
    "info",
    "The running policy: its file and content digest.",
    ("source", "digest"),
    "health",
)
DISCOVERY_ERRORS = _d(
    "posture_discovery_errors",
    "counter",
    "Failed account or region discoveries (Organizations ListAccounts, EC2 DescribeRegions).",
    ("stage",),
    "health",
)
BUILD_INFO = _d(
    "posture_build",
    "info",
    "Version and source revision of the daemon.",
    ("version", "revision"),
    "health",
)
EXPORT_SNAPSHOTS = _d(
    "posture_export_snapshots",
    "counter",
    "Configuration snapshots by result: written; concurrent (another writer wrote or is writing "
    "the same snapshot); failed.",
    ("result",),
    "health",
)
EXPORT_FAILURES = _d(
    "posture_export_failures",
    "counter",
    "Export failures by stage: index (bucket listing or event source mappings), read (the "
    "function), encrypt (KMS), code (package download or upload), write, retention, internal "
    "(a bug: logged with its traceback).",
    ("stage",),
    "health",
)
EXPORT_BYTES = _d(
    "posture_export_bytes",
    "counter",
    "Bytes uploaded to the export bucket (documents and packages; server-side copies excluded).",
    (),
    "health",
)
EXPORT_PRUNED = _d(
    "posture_export_pruned",
    "counter",
    "Deletions by retention: snapshot, partial (unfinished), orphans, claim.",
    ("kind",),
    "health",
)
SHARD_ORDINAL = _d("posture_shard_ordinal", "gauge", "This replica's shard index.", (), "health")
TOTAL_SHARDS = _d(
    "posture_total_shards", "gauge", "Number of shards the accounts are split into.", (), "health"
)

# --- the process, from the Prometheus client library (ProcessCollector; Linux only) ------------
PROCESS_START = _d(
    "process_start_time_seconds",
    "gauge",
    "Start time of the process since the Unix epoch.",
    (),
    "runtime",
)
PROCESS_CPU = _d(
    "process_cpu_seconds", "counter", "User and system CPU time spent, in seconds.", (), "runtime"
)
PROCESS_RSS = _d(
    "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", (), "runtime"
)
PROCESS_VMS = _d(
    "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", (), "runtime"
)
PROCESS_OPEN_FDS = _d("process_open_fds", "gauge", "Open file descriptors.", (), "runtime")
PROCESS_MAX_FDS = _d("process_max_fds", "gauge", "Most open file descriptors.", (), "runtime")

ALL: tuple[MetricDef, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricDef))


def exposed_names() -> set[str]:
    """Every sample name a query may use (histograms with their _bucket/_sum/_count)."""
    out: set[str] = set()
    for d in ALL:
        out.add(d.exposed)
        if d.type == "histogram":
            out.update({d.name + "_bucket", d.name + "_sum", d.name + "_count"})
    return out
