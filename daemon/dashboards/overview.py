"""Posture / Overview: what is out of compliance, where, and whether the picture is current."""

from __future__ import annotations

from daemon.dashboards.common import (
    CONTROL_DOC,
    DATASOURCE,
    DOCS,
    JOB,
    NEVER,
    SCORE,
    TAGS,
    TARGET,
    UP_TEXT,
    ZERO_GOOD,
    ZERO_GOOD_ORANGE,
    dedup,
    sel,
)
from daemon.dashboards.grafana import SEVERITY_COLORS, Column, Dashboard, Panel, Query, Row

S = 'job=~"$job"'
CONTROL = (*TARGET, "control")
VIOLATIONS = dedup(sel("posture_violations", S), (*CONTROL, "severity"))
EVALUATED = dedup(sel("posture_evaluated_resources", S), CONTROL)


def _score(labels: str) -> str:
    return f"1 - sum by ({labels}) ({VIOLATIONS}) / (sum by ({labels}) ({EVALUATED}) > 0)"


def _severity(severity: str) -> str:
    matcher = f'severity="{severity}"'
    return f"sum({dedup(sel('posture_violations', S, matcher), CONTROL)}) or vector(0)"


# targets failing, or without success for three reconcile intervals
_TARGET_AGE = dedup(f"time() - {sel('posture_target_last_success_timestamp_seconds', S)}", TARGET)
_FAILING_OR_STALE = (
    f"({dedup(sel('posture_target_up', S), TARGET)} == 0)"
    f" or ({_TARGET_AGE} > 3 * scalar(max({sel('posture_reconcile_interval_seconds', S)})))"
)

_IF_FAILING_OR_STALE = f"and on (aws_account_id, aws_region, aws_service) ({_FAILING_OR_STALE})"
_CRITICAL = dedup(
    sel("posture_resource_violation", S, 'severity="critical"'), (*CONTROL, "resource")
)
_TITLES = f"max by (control, title) ({sel('posture_control_info', S)})"

DASHBOARD = Dashboard(
    uid="posture-overview",
    title="Posture / Overview",
    description="Compliance of every scanned AWS account and region: violations by severity, "
    "compliance score, top controls and accounts, critical findings and target freshness.",
    tags=(*TAGS, "compliance"),
    variables=(DATASOURCE, JOB, DOCS),
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
            "Compliance now",
            (
                Panel(
                    "Critical violations",
                    "Resources violating a critical control right now (exempted ones excluded). "
                    "Each is listed in 'Critical violations' below.",
                    "stat",
                    (Query(_severity("critical")),),
                    unit="none",
                    thresholds=ZERO_GOOD,
                    color_mode="background",
                    width=4,
                    height=4,
                ),
                Panel(
                    "High violations",
                    "Resources violating a high-severity control right now.",
                    "stat",
                    (Query(_severity("high")),),
                    unit="none",
                    thresholds=ZERO_GOOD_ORANGE,
                    color_mode="background",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Compliance score",
                    "Share of evaluated checks (resource x control) that pass, over every "
                    "account and region. Exempted failures count as passed; checks that could "
                    "not be evaluated are left out (see 'Not evaluated').",
                    "stat",
                    (Query(_score("job")),),
                    unit="percentunit",
                    thresholds=SCORE,
                    min=0,
                    max=1,
                    decimals=1,
                    sparkline=True,
                    width=4,
                    height=4,
                ),
                Panel(
                    "Not evaluated",
                    "Checks the daemon could not evaluate (data denied or unreadable): neither "
                    "compliant nor violating. Unknown is not compliant.",
                    "stat",
                    (
                        Query(
                            "sum("
                            + dedup(sel("posture_control_evaluation_errors", S), CONTROL)
                            + ") or vector(0)"
                        ),
                    ),
                    unit="none",
                    thresholds=ZERO_GOOD_ORANGE,
                    width=4,
                    height=4,
                ),
                Panel(
                    "Failing targets",
                    "Targets (account x region x service) whose last reconcile failed: their "
                    "figures are those of the last success.",
                    "stat",
                    (
                        Query(
                            f"count({dedup(sel('posture_target_up', S), TARGET)} == 0) or vector(0)"
                        ),
                    ),
                    unit="none",
                    thresholds=ZERO_GOOD,
                    color_mode="background",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Accounts",
                    "AWS accounts scanned.",
                    "stat",
                    (Query(f"count(count by (aws_account_id) ({sel('posture_target_up', S)}))"),),
                    unit="none",
                    thresholds=((None, "blue"),),
                    width=4,
                    height=4,
                ),
            ),
        ),
        Row(
            "Trends",
            (
                Panel(
                    "Violations by severity",
                    "Resources violating controls over time, stacked by the controls' severity.",
                    "timeseries",
                    (Query(f"sum by (severity) ({VIOLATIONS})", "{{severity}}"),),
                    unit="none",
                    thresholds=((None, "green"),),
                    stack=True,
                    min=0,
                    series_colors=SEVERITY_COLORS,
                    width=12,
                ),
                Panel(
                    "Compliance score per account",
                    "Share of passing checks per account over time.",
                    "timeseries",
                    (Query(_score("aws_account_id"), "{{aws_account_id}}"),),
                    unit="percentunit",
                    thresholds=SCORE,
                    threshold_style="dashed",
                    min=0,
                    max=1,
                    width=12,
                ),
            ),
        ),
        Row(
            "Where",
            (
                Panel(
                    "Compliance score per account and region",
                    "Share of passing checks, violations and unevaluated checks per "
                    "account-region; lowest score first.",
                    "table",
                    (
                        Query(_score("aws_account_id, aws_region"), "Score"),
                        Query(f"sum by (aws_account_id, aws_region) ({VIOLATIONS})", "Violations"),
                        Query(
                            "sum by (aws_account_id, aws_region) ("
                            + dedup(sel("posture_control_evaluation_errors", S), CONTROL)
                            + ")",
                            "Not evaluated",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("aws_account_id"),
                        Column("aws_region"),
                        Column("Score", "percentunit", "gauge", SCORE, min=0, max=1),
                        Column("Violations", "none"),
                        Column("Not evaluated", "none"),
                    ),
                    sort_by=("Score", False),
                    width=12,
                    height=10,
                ),
                Panel(
                    "Top controls by violations",
                    "The ten controls with the most violating resources, all accounts.",
                    "bargauge",
                    (Query(f"topk(10, sum by (control) ({VIOLATIONS}))", "{{control}}"),),
                    unit="none",
                    thresholds=((None, "orange"),),
                    width=6,
                    height=10,
                ),
                Panel(
                    "Top accounts by violations",
                    "The ten accounts with the most violating resources.",
                    "bargauge",
                    (
                        Query(
                            f"topk(10, sum by (aws_account_id) ({VIOLATIONS}))",
                            "{{aws_account_id}}",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "orange"),),
                    width=6,
                    height=10,
                ),
            ),
        ),
        Row(
            "Critical findings and freshness",
            (
                Panel(
                    "Critical violations",
                    "Every resource violating a critical control, with the control's title; "
                    "the control links to its reference (rationale and remediation).",
                    "table",
                    (
                        Query(
                            f"({_CRITICAL} * on (control) group_left (title) {_TITLES})"
                            " or on (aws_account_id, aws_region, aws_service, control, resource) "
                            + _CRITICAL,
                            "",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "red"),),
                    columns=(
                        Column("aws_account_id"),
                        Column("aws_region"),
                        Column("aws_service"),
                        Column("control", link=CONTROL_DOC),
                        Column("title"),
                        Column("resource"),
                    ),
                    sort_by=("aws_account_id", False),
                    width=24,
                    height=10,
                ),
                Panel(
                    "Stale or failing targets",
                    "Targets whose last reconcile failed, or without a success for three "
                    "reconcile intervals. Their figures on this dashboard are old.",
                    "table",
                    (
                        Query(
                            f"{dedup(sel('posture_target_up', S), TARGET)} {_IF_FAILING_OR_STALE}",
                            "Up",
                        ),
                        Query(
                            dedup(sel("posture_target_consecutive_failures", S), TARGET)
                            + f" {_IF_FAILING_OR_STALE}",
                            "Failures in a row",
                        ),
                        Query(
                            f"{_TARGET_AGE} {_IF_FAILING_OR_STALE}",
                            "Last success",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("aws_account_id"),
                        Column("aws_region"),
                        Column("aws_service"),
                        Column("Up", cell="color-text", mappings=UP_TEXT),
                        Column("Failures in a row", "none"),
                        Column("Last success", "s", mappings=(NEVER,)),
                    ),
                    sort_by=("Last success", True),
                    width=24,
                    height=8,
                ),
            ),
        ),
    ),
)
