"""Posture / Account drilldown: one account (or a few), control by control and resource by
resource, filtered by region, service and severity."""

from __future__ import annotations

from daemon.dashboards.common import (
    ACCOUNT,
    CONTROL_DOC,
    DATASOURCE,
    DOCS,
    JOB,
    REGION,
    SCORE,
    SERVICE,
    SEVERITY,
    TAGS,
    TARGET,
    UP,
    ZERO_GOOD,
    ZERO_GOOD_ORANGE,
    dedup,
    sel,
)
from daemon.dashboards.grafana import (
    SEVERITY_COLORS,
    Column,
    Dashboard,
    Panel,
    Query,
    Row,
    ValueText,
)

S = 'job=~"$job", aws_account_id=~"$account", aws_region=~"$region", aws_service=~"$service"'
CONTROL = (*TARGET, "control")
SEV = 'severity=~"$severity"'
VIOLATIONS = dedup(sel("posture_violations", S, SEV), (*CONTROL, "severity"))
# controls of the selected severities (the severity the policy gives them in that account)
_IN_SEVERITY = "and on (aws_account_id, aws_region, aws_service, control) " + dedup(
    sel("posture_violations", S, SEV), CONTROL
)
EVALUATED = f"{dedup(sel('posture_evaluated_resources', S), CONTROL)} {_IN_SEVERITY}"
ERRORS = f"{dedup(sel('posture_control_evaluation_errors', S), CONTROL)} {_IN_SEVERITY}"
EXEMPTIONS = f"{dedup(sel('posture_exemptions', S), (*CONTROL, 'state'))} {_IN_SEVERITY}"
TITLES = "max by (control, title) (" + sel("posture_control_info", 'job=~"$job"') + ")"
RESOURCES = dedup(sel("posture_resource_violation", S, SEV), (*CONTROL, "severity", "resource"))


def _with_title(expr: str, labels: str) -> str:
    """Add the control's title; keep rows whose control has no title series."""
    return f"(({expr}) * on (control) group_left (title) {TITLES}) or on ({labels}) ({expr})"


DASHBOARD = Dashboard(
    uid="posture-account",
    title="Posture / Account drilldown",
    description="One account's compliance control by control and resource by resource; "
    "filter by region, service and severity.",
    tags=(*TAGS, "compliance"),
    variables=(DATASOURCE, JOB, ACCOUNT, REGION, SERVICE, SEVERITY, DOCS),
    rows=(
        Row(
            "Summary",
            (
                Panel(
                    "Violations",
                    "Resources violating the selected controls (exempted ones excluded).",
                    "stat",
                    (Query(f"sum({VIOLATIONS}) or vector(0)"),),
                    unit="none",
                    thresholds=ZERO_GOOD_ORANGE,
                    color_mode="background",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Compliance score",
                    "Share of evaluated checks (resource x control) of the selection that pass.",
                    "stat",
                    (
                        Query(
                            f"1 - sum({VIOLATIONS}) / (sum({EVALUATED}) > 0)",
                        ),
                    ),
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
                    "Checks that could not be evaluated (data denied or unreadable).",
                    "stat",
                    (Query(f"sum({ERRORS}) or vector(0)"),),
                    unit="none",
                    thresholds=ZERO_GOOD_ORANGE,
                    width=4,
                    height=4,
                ),
                Panel(
                    "Exempted",
                    "Failing checks covered by an active exemption (not counted as violations); "
                    "expired exemptions no longer apply.",
                    "stat",
                    (
                        Query(
                            "sum("
                            + dedup(sel("posture_exemptions", S, 'state="active"'), CONTROL)
                            + f" {_IN_SEVERITY}) or vector(0)"
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "blue"),),
                    width=4,
                    height=4,
                ),
                Panel(
                    "Resources",
                    "Resources seen in the last successful sweeps, all types.",
                    "stat",
                    (
                        Query(
                            f"sum({dedup(sel('posture_resources', S), (*TARGET, 'resource_type'))})"
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "blue"),),
                    width=4,
                    height=4,
                ),
                Panel(
                    "Targets up",
                    "Share of the selected targets whose last reconcile succeeded.",
                    "stat",
                    (
                        Query(
                            f"avg({dedup(sel('posture_target_up', S), TARGET)})",
                        ),
                    ),
                    unit="percentunit",
                    thresholds=UP,
                    min=0,
                    max=1,
                    color_mode="background",
                    width=4,
                    height=4,
                ),
            ),
        ),
        Row(
            "Controls",
            (
                Panel(
                    "Per-control breakdown",
                    "Each control of the selection: its severity and title, the resources it "
                    "evaluated, how many violate it, could not be evaluated, or are exempted. "
                    "The control links to its reference (rationale and remediation).",
                    "table",
                    (
                        Query(
                            _with_title(
                                f"sum by (control, severity) ({VIOLATIONS})", "control, severity"
                            ),
                            "Violations",
                        ),
                        Query(f"sum by (control) ({EVALUATED})", "Evaluated"),
                        Query(f"sum by (control) ({ERRORS})", "Not evaluated"),
                        Query(f"sum by (control) ({EXEMPTIONS})", "Exemptions"),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("control", link=CONTROL_DOC),
                        Column("severity"),
                        Column("title"),
                        Column("Violations", "none", "color-text", ZERO_GOOD),
                        Column("Evaluated", "none"),
                        Column("Not evaluated", "none", "color-text", ZERO_GOOD_ORANGE),
                        Column("Exemptions", "none"),
                    ),
                    sort_by=("Violations", True),
                    width=24,
                    height=12,
                ),
                Panel(
                    "Violations by control",
                    "Resources violating each control over time.",
                    "timeseries",
                    (Query(f"sum by (control) ({VIOLATIONS}) > 0", "{{control}}"),),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    legend="table",
                    width=12,
                ),
                Panel(
                    "Violations by severity",
                    "Resources violating controls over time, stacked by severity.",
                    "timeseries",
                    (Query(f"sum by (severity) ({VIOLATIONS})", "{{severity}}"),),
                    unit="none",
                    thresholds=((None, "green"),),
                    stack=True,
                    min=0,
                    series_colors=SEVERITY_COLORS,
                    width=12,
                ),
            ),
        ),
        Row(
            "Resources",
            (
                Panel(
                    "Violating resources",
                    "Every resource violating a control of the selection (capped by "
                    "POSTURE_METRICS__RESOURCE_SERIES_LIMIT, lowest severities dropped first).",
                    "table",
                    (
                        Query(
                            _with_title(
                                RESOURCES,
                                "aws_account_id, aws_region, aws_service, control, severity, "
                                "resource",
                            ),
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("aws_region"),
                        Column("aws_service"),
                        Column(
                            "severity",
                            cell="color-text",
                            mappings=tuple(
                                ValueText(name, value=name, color=color)
                                for name, color in SEVERITY_COLORS.items()
                            ),
                        ),
                        Column("control", link=CONTROL_DOC),
                        Column("title"),
                        Column("resource"),
                    ),
                    sort_by=("severity", False),
                    width=24,
                    height=12,
                ),
                Panel(
                    "Exemptions",
                    "Findings covered by an exemption of the policy, by state: active (applied) "
                    "or expired (no longer applied: the finding counts as a violation again).",
                    "table",
                    (Query(f"({EXEMPTIONS}) > 0", "Findings"),),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        Column("aws_account_id"),
                        Column("aws_region"),
                        Column("aws_service"),
                        Column("control", link=CONTROL_DOC),
                        Column("state"),
                        Column("Findings", "none"),
                    ),
                    width=12,
                    height=8,
                ),
                Panel(
                    "Resources seen by type",
                    "Resources found in the last successful sweeps, by type.",
                    "timeseries",
                    (
                        Query(
                            "sum by (resource_type) ("
                            + dedup(sel("posture_resources", S), (*TARGET, "resource_type"))
                            + ")",
                            "{{resource_type}}",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "green"),),
                    min=0,
                    width=12,
                    height=8,
                ),
            ),
        ),
    ),
)
