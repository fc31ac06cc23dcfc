"""What the dashboards share: variables, label selectors, PromQL fragments, thresholds."""

from __future__ import annotations

from daemon import DOCS_URL
from daemon.dashboards.grafana import Link, Thresholds, ValueText, Variable

TAGS = ("posture-daemon",)
TARGET = ("aws_account_id", "aws_region", "aws_service")
ACCOUNT_REGION = ("aws_account_id", "aws_region")

# --- variables ---------------------------------------------------------------------------------
DATASOURCE = Variable(
    "datasource",
    "Data source",
    "datasource",
    description="The Prometheus that scrapes posture-daemon.",
)
JOB = Variable(
    "job",
    "Job",
    "query",
    "label_values(posture_build_info, job)",
    description="The scrape job(s) of posture-daemon (one per installation).",
)
ACCOUNT = Variable(
    "account",
    "Account",
    "query",
    'label_values(posture_target_up{job=~"$job"}, aws_account_id)',
    description="AWS account id(s).",
)
REGION = Variable(
    "region",
    "Region",
    "query",
    'label_values(posture_target_up{job=~"$job", aws_account_id=~"$account"}, aws_region)',
    description="AWS region(s).",
)
SERVICE = Variable(
    "service",
    "Service",
    "query",
    'label_values(posture_target_up{job=~"$job"}, aws_service)',
    description="Scanned service(s): lambda, ecr, ecs, rds.",
)
SEVERITY = Variable(
    "severity",
    "Severity",
    "custom",
    "critical,high,medium,low",
    description="Severity of the controls (as the policy sets it for the account).",
)
INSTANCE = Variable(
    "instance",
    "Instance",
    "query",
    'label_values(posture_build_info{job=~"$job"}, instance)',
    description="Replica(s) of posture-daemon (one per shard).",
)
DOCS = Variable(
    "docs",
    "Docs",
    "constant",
    DOCS_URL,
    multi=False,
    include_all=False,
    description="Where the project's docs/ are published (the Helm chart's docsUrl).",
)

# --- PromQL ------------------------------------------------------------------------------------


def sel(metric: str, scope: str, *extra: str) -> str:
    """`metric{scope, extra...}`: scope is the dashboard's variable matchers."""
    inner = ", ".join(x for x in (scope, *extra) if x)
    return f"{metric}{{{inner}}}"


def by(labels: tuple[str, ...] | list[str]) -> str:
    return ", ".join(labels)


def dedup(selector: str, labels: tuple[str, ...]) -> str:
    """One series per identity: replicas reporting the same target (a rollout, two shards for a
    moment) are not counted twice."""
    return f"max by ({by(labels)}) ({selector})"


def rate_of(selector: str) -> str:
    return f"rate({selector}[$__rate_interval])"


# --- thresholds and mappings -------------------------------------------------------------------
ZERO_GOOD: Thresholds = ((None, "green"), (1, "red"))  # any is bad
ZERO_GOOD_ORANGE: Thresholds = ((None, "green"), (1, "orange"))
NEUTRAL: Thresholds = ((None, "text"),)
SCORE: Thresholds = ((None, "red"), (0.8, "orange"), (0.95, "green"))
HEADROOM: Thresholds = ((None, "red"), (0.1, "orange"), (0.2, "green"))
BUSY: Thresholds = ((None, "green"), (0.8, "orange"), (0.95, "red"))
UP: Thresholds = ((None, "red"), (1, "green"))
RATIO_OVER_ONE: Thresholds = ((None, "green"), (0.8, "orange"), (1, "red"))

UP_TEXT = (ValueText("down", value=0, color="red"), ValueText("up", value=1, color="green"))
# posture_target_last_success_timestamp_seconds is 0 before the first success: its age is huge
NEVER = ValueText("never", low=1e9, high=None, color="red")

CONTROL_DOC = Link(
    "Control reference and remediation", "${docs}/controls.md#${__data.fields.control}"
)
