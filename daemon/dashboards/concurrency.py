"""Posture / Lambda concurrency: headroom per account-region against the policy, the limit against
the peak and the reservations over time, the unreserved pool, throttles."""

from __future__ import annotations

from daemon.dashboards.common import (
    ACCOUNT,
    ACCOUNT_REGION,
    DATASOURCE,
    HEADROOM,
    JOB,
    REGION,
    TAGS,
    ZERO_GOOD,
    ZERO_GOOD_ORANGE,
    dedup,
    sel,
)
from daemon.dashboards.grafana import Column, Dashboard, Panel, Query, Row

S = 'job=~"$job", aws_account_id=~"$account", aws_region=~"$region"'
AR = ACCOUNT_REGION


def one(metric: str) -> str:
    """A per-account-region series of the selection, one per account-region."""
    return dedup(sel(metric, S), AR)


HEADROOM_RATIO = one("posture:lambda_concurrency_headroom_ratio")
MIN_HEADROOM = one("posture_lambda_concurrency_min_headroom_ratio")
LEGEND = "{{aws_account_id}} {{aws_region}}"

DASHBOARD = Dashboard(
    uid="posture-concurrency",
    title="Posture / Lambda concurrency",
    description="How close each account-region runs to its Lambda concurrency limit: headroom "
    "at the peak against the policy's minimum, limit vs peak vs reservations, the unreserved "
    "pool and throttled invocations. Figures cover the policy's lookback window.",
    tags=(*TAGS, "lambda", "concurrency"),
    variables=(DATASOURCE, JOB, ACCOUNT, REGION),
    rows=(
        Row(
            "Summary",
            (
                Panel(
                    "Lowest headroom",
                    "The smallest share of its concurrency limit an account-region left free at "
                    "its peak in the lookback window.",
                    "stat",
                    (Query(f"min({HEADROOM_RATIO})"),),
                    unit="percentunit",
                    thresholds=HEADROOM,
                    min=0,
                    max=1,
                    decimals=1,
                    color_mode="background",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Below the headroom minimum",
                    "Account-regions whose headroom is below the policy's min_headroom_ratio "
                    "(alert PostureLambdaConcurrencyHeadroomLow after 15 minutes).",
                    "stat",
                    (Query(f"count({HEADROOM_RATIO} < {MIN_HEADROOM}) or vector(0)"),),
                    unit="none",
                    thresholds=ZERO_GOOD,
                    color_mode="background",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Unreserved pool below minimum",
                    "Account-regions whose unreserved pool is below the policy's min_unreserved.",
                    "stat",
                    (
                        Query(
                            f"count({one('posture:lambda_unreserved_concurrency_margin')} < 0)"
                            " or vector(0)"
                        ),
                    ),
                    unit="none",
                    thresholds=ZERO_GOOD,
                    color_mode="background",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Throttled invocations",
                    "Invocations Lambda throttled in the lookback window, all selected "
                    "account-regions (CloudWatch Throttles).",
                    "stat",
                    (Query(f"sum({one('posture_lambda_throttles')}) or vector(0)"),),
                    unit="none",
                    thresholds=ZERO_GOOD_ORANGE,
                    width=6,
                    height=4,
                ),
            ),
        ),
        Row(
            "Headroom",
            (
                Panel(
                    "Headroom per account-region",
                    "Per account-region: the share of the limit left free at the peak, the "
                    "policy's minimum, the limit, the peak, the reservations and the unreserved "
                    "pool. Lowest headroom first.",
                    "table",
                    (
                        Query(HEADROOM_RATIO, "Headroom"),
                        Query(MIN_HEADROOM, "Minimum"),
                        Query(one("posture_lambda_concurrency_limit"), "Limit"),
                        Query(one("posture_lambda_concurrent_executions_peak"), "Peak"),
                        Query(one("posture_lambda_reserved_concurrency"), "Reserved"),
                        Query(one("posture_lambda_unreserved_concurrency"), "Unreserved"),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("aws_account_id"),
                        Column("aws_region"),
                        Column("Headroom", "percentunit", "gauge", HEADROOM, min=0, max=1),
                        Column("Minimum", "percentunit"),
                        Column("Limit", "none"),
                        Column("Peak", "none"),
                        Column("Reserved", "none"),
                        Column("Unreserved", "none"),
                    ),
                    sort_by=("Headroom", False),
                    width=24,
                    height=9,
                ),
                Panel(
                    "Headroom against the policy minimum",
                    "Share of the limit left free at the peak (solid) and the policy's "
                    "min_headroom_ratio (dashed), per account-region.",
                    "timeseries",
                    (
                        Query(HEADROOM_RATIO, "headroom " + LEGEND),
                        Query(MIN_HEADROOM, "minimum " + LEGEND),
                    ),
                    unit="percentunit",
                    thresholds=HEADROOM,
                    threshold_style="off",
                    min=0,
                    max=1,
                    width=12,
                ),
                Panel(
                    "Limit, peak and reserved",
                    "Per account-region: the concurrency limit, the peak of concurrent "
                    "executions in the lookback window, the claimed peak (unreserved in use + "
                    "reserved + provisioned) and the sum of reservations.",
                    "timeseries",
                    (
                        Query(one("posture_lambda_concurrency_limit"), "limit " + LEGEND),
                        Query(one("posture_lambda_concurrent_executions_peak"), "peak " + LEGEND),
                        Query(one("posture_lambda_claimed_concurrency_peak"), "claimed " + LEGEND),
                        Query(one("posture_lambda_reserved_concurrency"), "reserved " + LEGEND),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    legend="table",
                    width=12,
                ),
            ),
        ),
        Row(
            "Unreserved pool and reservations",
            (
                Panel(
                    "Unreserved pool",
                    "The unreserved concurrency (limit minus reservations, shared by every "
                    "function without one; AWS keeps at least 100), its peak use, and the "
                    "policy's min_unreserved (dashed).",
                    "timeseries",
                    (
                        Query(one("posture_lambda_unreserved_concurrency"), "pool " + LEGEND),
                        Query(
                            one("posture_lambda_unreserved_concurrent_executions_peak"),
                            "peak use " + LEGEND,
                        ),
                        Query(
                            one("posture_lambda_concurrency_min_unreserved"), "minimum " + LEGEND
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    legend="table",
                    width=12,
                ),
                Panel(
                    "Largest reservations",
                    "The ten functions with the largest reserved concurrency (0 = the function "
                    "is throttled entirely).",
                    "bargauge",
                    (
                        Query(
                            "topk(10, "
                            + dedup(
                                sel("posture_lambda_function_reserved_concurrency", S),
                                (*AR, "function"),
                            )
                            + ")",
                            "{{function}} ({{aws_account_id}} {{aws_region}})",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "blue"),),
                    width=12,
                ),
                Panel(
                    "Provisioned concurrency",
                    "Provisioned concurrency requested and allocated (ready) per function alias "
                    "or version; allocated below requested means allocation is in progress or "
                    "failed.",
                    "table",
                    (
                        Query(
                            dedup(
                                sel("posture_lambda_provisioned_concurrency", S),
                                (*AR, "function", "qualifier"),
                            ),
                            "Requested",
                        ),
                        Query(
                            dedup(
                                sel("posture_lambda_provisioned_concurrency_allocated", S),
                                (*AR, "function", "qualifier"),
                            ),
                            "Allocated",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("aws_account_id"),
                        Column("aws_region"),
                        Column("function"),
                        Column("qualifier"),
                        Column("Requested", "none"),
                        Column("Allocated", "none"),
                    ),
                    sort_by=("Requested", True),
                    width=24,
                    height=7,
                ),
            ),
        ),
        Row(
            "Throttles",
            (
                Panel(
                    "Throttled invocations",
                    "Invocations Lambda throttled in the lookback window, per account-region.",
                    "timeseries",
                    (Query(one("posture_lambda_throttles"), LEGEND),),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=12,
                ),
                Panel(
                    "Throttled functions",
                    "Throttled invocations in the lookback window of the functions with the "
                    "largest reservations (the policy's concurrency.top_functions).",
                    "bargauge",
                    (
                        Query(
                            "topk(10, "
                            + dedup(
                                sel("posture_lambda_function_throttles", S),
                                (*AR, "function"),
                            )
                            + " > 0)",
                            "{{function}} ({{aws_account_id}} {{aws_region}})",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "orange"),),
                    width=12,
                ),
                Panel(
                    "CloudWatch datapoints behind the figures",
                    "Datapoints CloudWatch returned for each account-level figure in the "
                    "lookback window: 0 means idle or not emitted (a peak of 0 is then not a "
                    "measurement).",
                    "table",
                    (
                        Query(
                            dedup(sel("posture_lambda_concurrency_datapoints", S), (*AR, "metric")),
                            "Datapoints",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "orange"), (1, "text")),
                    columns=(
                        Column("aws_account_id"),
                        Column("aws_region"),
                        Column("metric"),
                        Column("Datapoints", "none", "color-text", ((None, "orange"), (1, "text"))),
                    ),
                    width=24,
                    height=8,
                ),
            ),
        ),
    ),
)
