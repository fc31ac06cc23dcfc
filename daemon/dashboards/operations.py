"""Posture / Daemon operations: is the daemon itself healthy, keeping up and reading AWS?"""

from __future__ import annotations

from daemon.dashboards.common import (
    BUSY,
    DATASOURCE,
    INSTANCE,
    JOB,
    NEVER,
    TAGS,
    TARGET,
    UP,
    UP_TEXT,
    ZERO_GOOD,
    ZERO_GOOD_ORANGE,
    rate_of,
    sel,
)
from daemon.dashboards.grafana import Column, Dashboard, Panel, Query, Row, ValueText

S = 'job=~"$job", instance=~"$instance"'
WHO = "{{instance}}"


def _quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({rate_of(sel(metric, S))}))"


DASHBOARD = Dashboard(
    uid="posture-operations",
    title="Posture / Daemon operations",
    description="The daemon's own health: scrape and targets, reconcile duration, work queue "
    "and workers (its concurrency headroom), AWS API calls, errors and throttles, policy "
    "reloads, discovery, configuration export, shards and the process.",
    tags=(*TAGS, "operations"),
    variables=(DATASOURCE, JOB, INSTANCE),
    annotations=(
        (
            "Policy reloads",
            Query(
                "changes("
                + sel("posture_policy_last_reload_success_timestamp_seconds", S)
                + "[2m]) > 0",
                "policy reloaded ({{instance}})",
            ),
            "purple",
        ),
    ),
    rows=(
        Row(
            "Health",
            (
                Panel(
                    "Replicas up",
                    "Replicas Prometheus can scrape, out of those it knows (alerts "
                    "PostureDaemonDown and PostureDaemonAbsent).",
                    "stat",
                    (Query(f"sum({sel('up', S)})"),),
                    unit="none",
                    thresholds=UP,
                    color_mode="background",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Targets failing",
                    "Targets whose last reconcile failed, of all targets of the selection.",
                    "stat",
                    (Query(f"count({sel('posture_target_up', S)} == 0) or vector(0)"),),
                    unit="none",
                    thresholds=ZERO_GOOD,
                    color_mode="background",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Targets",
                    "Targets (account x region x service) assigned to the selected replicas.",
                    "stat",
                    (Query(f"sum({sel('posture_targets', S)})"),),
                    unit="none",
                    thresholds=((None, "blue"),),
                    width=4,
                    height=4,
                ),
                Panel(
                    "Workers busy",
                    "Share of the reconcile workers busy, averaged over 5 minutes: the daemon's "
                    "own concurrency headroom. Near 100% with a growing queue wait, it does not "
                    "keep up.",
                    "stat",
                    (Query(f"max({sel('posture:workers_busy_ratio', S)})"),),
                    unit="percentunit",
                    thresholds=BUSY,
                    min=0,
                    max=1,
                    sparkline=True,
                    width=4,
                    height=4,
                ),
                Panel(
                    "Policy file",
                    "Whether the last load of the policy file succeeded on every replica "
                    "(REJECTED: the file on disk is invalid and the previous policy runs).",
                    "stat",
                    (Query(f"min({sel('posture_policy_last_reload_successful', S)})"),),
                    unit="none",
                    thresholds=UP,
                    mappings=(
                        ValueText("REJECTED", value=0, color="red"),
                        ValueText("OK", value=1, color="green"),
                    ),
                    color_mode="background",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Version",
                    "Version and source revision of the running daemon (several values during "
                    "a rollout).",
                    "stat",
                    (
                        Query(
                            f"count by (version, revision) ({sel('posture_build_info', S)})",
                            "{{version}} ({{revision}})",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "blue"),),
                    width=4,
                    height=4,
                ),
            ),
        ),
        Row(
            "Reconcile",
            (
                Panel(
                    "Reconcile duration",
                    "Time to collect, evaluate and publish one target, by service: median and "
                    "90th percentile.",
                    "timeseries",
                    (
                        Query(
                            _quantile(
                                0.5, "posture_reconcile_duration_seconds_bucket", "aws_service"
                            ),
                            "p50 {{aws_service}}",
                        ),
                        Query(
                            _quantile(
                                0.9, "posture_reconcile_duration_seconds_bucket", "aws_service"
                            ),
                            "p90 {{aws_service}}",
                        ),
                    ),
                    unit="s",
                    thresholds=((None, "green"),),
                    min=0,
                    legend="table",
                    width=12,
                ),
                Panel(
                    "Reconciles",
                    "Reconciles finished per second, by service and result.",
                    "timeseries",
                    (
                        Query(
                            "sum by (aws_service, result) ("
                            + rate_of(sel("posture_reconciles_total", S))
                            + ")",
                            "{{aws_service}} {{result}}",
                        ),
                    ),
                    unit="ops",
                    thresholds=((None, "green"),),
                    min=0,
                    width=12,
                ),
            ),
        ),
        Row(
            "Work queue and workers",
            (
                Panel(
                    "Queue depth",
                    "Targets ready and waiting for a worker.",
                    "timeseries",
                    (Query(sel("posture_workqueue_depth", S), WHO),),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=8,
                ),
                Panel(
                    "Oldest waiting target",
                    "How long the oldest ready target has waited for a worker (solid), against "
                    "the reconcile interval (dashed): above it for 15 minutes, alert "
                    "PostureWorkqueueBacklog.",
                    "timeseries",
                    (
                        Query(sel("posture_workqueue_longest_wait_seconds", S), "wait " + WHO),
                        Query(sel("posture_reconcile_interval_seconds", S), "interval " + WHO),
                    ),
                    unit="s",
                    thresholds=((None, "green"),),
                    min=0,
                    width=8,
                ),
                Panel(
                    "Workers",
                    "Reconcile workers busy against those configured "
                    "(POSTURE_RECONCILER__WORKERS).",
                    "timeseries",
                    (
                        Query(sel("posture_workers_active", S), "active " + WHO),
                        Query(sel("posture_workers_max", S), "max " + WHO),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=8,
                ),
            ),
        ),
        Row(
            "AWS API",
            (
                Panel(
                    "AWS API calls by operation",
                    "Requests per second to AWS, every attempt including retries; the 15 "
                    "busiest operations.",
                    "timeseries",
                    (
                        Query(
                            "topk(15, sum by (aws_service, operation) ("
                            + rate_of(sel("posture_aws_api_requests_total", S))
                            + "))",
                            "{{aws_service}} {{operation}}",
                        ),
                    ),
                    unit="reqps",
                    thresholds=((None, "green"),),
                    min=0,
                    legend="table",
                    width=12,
                    height=9,
                ),
                Panel(
                    "AWS API errors by operation",
                    "Failed requests per second by operation and error code (not-found "
                    "answers are normal for optional configuration; AccessDenied is not).",
                    "timeseries",
                    (
                        Query(
                            "sum by (aws_service, operation, error_code) ("
                            + rate_of(sel("posture_aws_api_errors_total", S))
                            + ") > 0",
                            "{{aws_service}} {{operation}} {{error_code}}",
                        ),
                    ),
                    unit="reqps",
                    thresholds=((None, "green"),),
                    min=0,
                    legend="table",
                    width=12,
                    height=9,
                ),
                Panel(
                    "AWS API throttles",
                    "Throttled requests per second by account, region and service (alert "
                    "PostureAwsApiThrottling when sustained for 30 minutes).",
                    "timeseries",
                    (
                        Query(
                            "sum by (aws_account_id, aws_region, aws_service) ("
                            + rate_of(sel("posture_aws_api_throttles_total", S))
                            + ")",
                            "{{aws_account_id}} {{aws_region}} {{aws_service}}",
                        ),
                    ),
                    unit="reqps",
                    thresholds=((None, "green"),),
                    min=0,
                    width=12,
                ),
                Panel(
                    "AWS API call duration",
                    "90th percentile of one call's duration as the daemon saw it (retries "
                    "included), by service.",
                    "timeseries",
                    (
                        Query(
                            _quantile(
                                0.9, "posture_aws_api_call_duration_seconds_bucket", "aws_service"
                            ),
                            "p90 {{aws_service}}",
                        ),
                    ),
                    unit="s",
                    thresholds=((None, "green"),),
                    min=0,
                    width=12,
                ),
            ),
        ),
        Row(
            "Targets and accounts",
            (
                Panel(
                    "Target health",
                    "Every target of the selection: last reconcile result, failures in a row, "
                    "time since the last success and the last attempt. Failing first.",
                    "table",
                    (
                        Query(sel("posture_target_up", S), "Up"),
                        Query(sel("posture_target_consecutive_failures", S), "Failures in a row"),
                        Query(
                            f"time() - {sel('posture_target_last_success_timestamp_seconds', S)}",
                            "Last success",
                        ),
                        Query(
                            f"time() - {sel('posture_target_last_attempt_timestamp_seconds', S)}",
                            "Last attempt",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        *(Column(label) for label in TARGET),
                        Column("instance"),
                        Column("Up", cell="color-text", mappings=UP_TEXT),
                        Column("Failures in a row", "none", "color-text", ZERO_GOOD_ORANGE),
                        Column("Last success", "s", mappings=(NEVER,)),
                        Column("Last attempt", "s"),
                    ),
                    sort_by=("Up", False),
                    width=16,
                    height=10,
                ),
                Panel(
                    "Accounts",
                    "Whether the daemon can enter each account (AssumeRole and region "
                    "discovery; alert PostureAccountDown).",
                    "table",
                    (Query(sel("posture_account_up", S), "Up"),),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("aws_account_id"),
                        Column("instance"),
                        Column("Up", cell="color-text", mappings=UP_TEXT),
                    ),
                    sort_by=("Up", False),
                    width=8,
                    height=10,
                ),
                Panel(
                    "Targets per service",
                    "Targets assigned to the selected replicas, by service.",
                    "timeseries",
                    (
                        Query(
                            f"sum by (aws_service) ({sel('posture_targets', S)})", "{{aws_service}}"
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=12,
                ),
                Panel(
                    "Discovery errors",
                    "Failed discoveries per hour by stage: organizations (ListAccounts), "
                    "regions (DescribeRegions), credentials (the daemon's own account).",
                    "timeseries",
                    (
                        Query(
                            "sum by (stage) (increase("
                            + sel("posture_discovery_errors_total", S)
                            + "[1h]))",
                            "{{stage}}",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=12,
                ),
            ),
        ),
        Row(
            "Policy",
            (
                Panel(
                    "Policy reloads",
                    "Policy reloads applied and rejected (invalid file; the previous policy "
                    "keeps running), per hour.",
                    "timeseries",
                    (
                        Query(
                            f"sum(increase({sel('posture_policy_reloads_total', S)}[1h]))",
                            "applied",
                        ),
                        Query(
                            f"sum(increase({sel('posture_policy_reload_failures_total', S)}[1h]))",
                            "rejected",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    series_colors={"applied": "green", "rejected": "red"},
                    width=12,
                ),
                Panel(
                    "Running policy",
                    "The policy each replica runs: its file, content digest and when it was "
                    "loaded.",
                    "table",
                    (
                        Query(
                            "(time() - "
                            + sel("posture_policy_last_reload_success_timestamp_seconds", S)
                            + ") * on (job, instance) group_left (source, digest) "
                            + sel("posture_policy_info", S),
                            "Loaded",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("instance"),
                        Column("source"),
                        Column("digest"),
                        Column("Loaded", "s"),
                    ),
                    width=12,
                ),
            ),
        ),
        Row(
            "Configuration export",
            (
                Panel(
                    "Export snapshots",
                    "Configuration snapshots per hour by result: written, concurrent (another "
                    "writer had it), failed.",
                    "timeseries",
                    (
                        Query(
                            "sum by (result) (increase("
                            + sel("posture_export_snapshots_total", S)
                            + "[1h]))",
                            "{{result}}",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    series_colors={"written": "green", "concurrent": "blue", "failed": "red"},
                    width=6,
                ),
                Panel(
                    "Export failures",
                    "Export failures per hour by stage (alert PostureExportFailing when "
                    "sustained).",
                    "timeseries",
                    (
                        Query(
                            "sum by (stage) (increase("
                            + sel("posture_export_failures_total", S)
                            + "[1h]))",
                            "{{stage}}",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=6,
                ),
                Panel(
                    "Export uploads",
                    "Bytes uploaded to the export bucket per second (server-side copies of "
                    "unchanged packages excluded).",
                    "timeseries",
                    (Query(f"sum({rate_of(sel('posture_export_bytes_total', S))})", "uploaded"),),
                    unit="Bps",
                    thresholds=((None, "green"),),
                    min=0,
                    width=6,
                ),
                Panel(
                    "Export retention",
                    "Deletions by the export's retention per hour, by kind: snapshot, partial "
                    "(unfinished), orphans, claim.",
                    "timeseries",
                    (
                        Query(
                            "sum by (kind) (increase("
                            + sel("posture_export_pruned_total", S)
                            + "[1h]))",
                            "{{kind}}",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=6,
                ),
            ),
        ),
        Row(
            "Shards and process",
            (
                Panel(
                    "Shards",
                    "Each replica's shard and the number of shards it believes exist: every "
                    "shard exactly once, and one total (alerts PostureShardsMissing, "
                    "PostureShardsMisconfigured).",
                    "table",
                    (
                        Query(sel("posture_shard_ordinal", S), "Shard"),
                        Query(sel("posture_total_shards", S), "Of"),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(Column("instance"), Column("Shard", "none"), Column("Of", "none")),
                    sort_by=("Shard", False),
                    width=8,
                ),
                Panel(
                    "Memory",
                    "Resident memory of each replica.",
                    "timeseries",
                    (Query(sel("process_resident_memory_bytes", S), WHO),),
                    unit="bytes",
                    thresholds=((None, "green"),),
                    min=0,
                    width=8,
                ),
                Panel(
                    "CPU",
                    "CPU time used per second (1 = one core).",
                    "timeseries",
                    (Query(rate_of(sel("process_cpu_seconds_total", S)), WHO),),
                    unit="percentunit",
                    thresholds=((None, "green"),),
                    min=0,
                    width=8,
                ),
                Panel(
                    "Resource series dropped",
                    "posture_resource_violation series left out by the cap "
                    "(POSTURE_METRICS__RESOURCE_SERIES_LIMIT) at the last scrape.",
                    "timeseries",
                    (Query(sel("posture_resource_series_dropped", S), WHO),),
                    unit="none",
                    thresholds=ZERO_GOOD_ORANGE,
                    min=0,
                    width=12,
                ),
                Panel(
                    "Open file descriptors",
                    "File descriptors open (sockets to AWS included) against the process limit.",
                    "timeseries",
                    (
                        Query(sel("process_open_fds", S), "open " + WHO),
                        Query(sel("process_max_fds", S), "max " + WHO),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=12,
                ),
            ),
        ),
    ),
)
