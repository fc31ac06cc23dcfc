"""Posture / Backups: the age of every resource's newest backup against its policy limit, and
the resources without one."""

from __future__ import annotations

from daemon.dashboards.common import (
    ACCOUNT,
    DATASOURCE,
    JOB,
    RATIO_OVER_ONE,
    REGION,
    SERVICE,
    TAGS,
    TARGET,
    ZERO_GOOD,
    ZERO_GOOD_ORANGE,
    dedup,
    sel,
)
from daemon.dashboards.grafana import Column, Dashboard, Panel, Query, Row, Variable

KIND = Variable(
    "kind",
    "Kind",
    "query",
    'label_values(posture_backup_missing{job=~"$job"}, kind)',
    description="Kind of backup: version (published Lambda version), snapshot, restorable "
    "(RDS point-in-time restore), recovery_point (AWS Backup), export (configuration export).",
)
S = (
    'job=~"$job", aws_account_id=~"$account", aws_region=~"$region", aws_service=~"$service", '
    'kind=~"$kind"'
)
# posture:backup_oldest_age_seconds and posture:backup_missing_resources aggregate the job away
S_RECORDED = S.removeprefix('job=~"$job", ')
RESOURCE = (*TARGET, "resource", "kind")
AGE = dedup(sel("posture:backup_age_seconds", S), RESOURCE)
RATIO = dedup(sel("posture:backup_age_ratio", S), RESOURCE)
LIMIT = dedup(sel("posture_backup_max_age_seconds", S), RESOURCE)
MISSING = dedup(sel("posture_backup_missing", S), RESOURCE)

_RESOURCE_COLUMNS = (
    Column("aws_account_id"),
    Column("aws_region"),
    Column("aws_service"),
    Column("resource"),
    Column("kind"),
)

DASHBOARD = Dashboard(
    uid="posture-backup",
    title="Posture / Backups",
    description="Age of each resource's newest backup (Lambda versions, RDS snapshots and "
    "point-in-time restore, AWS Backup recovery points, configuration exports) against the "
    "limit the backup policy sets for it, and the resources without a required backup.",
    tags=(*TAGS, "backup"),
    variables=(DATASOURCE, JOB, ACCOUNT, REGION, SERVICE, KIND),
    rows=(
        Row(
            "Summary",
            (
                Panel(
                    "Backups older than their limit",
                    "Resource backups (per kind) older than the limit in force for that "
                    "resource (the policy's overrides applied).",
                    "stat",
                    (Query(f"count({RATIO} > 1) or vector(0)"),),
                    unit="none",
                    thresholds=ZERO_GOOD,
                    color_mode="background",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Missing backups",
                    "Resources without any backup of a kind their policy requires.",
                    "stat",
                    (Query(f"sum({MISSING}) or vector(0)"),),
                    unit="none",
                    thresholds=ZERO_GOOD,
                    color_mode="background",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Oldest backup",
                    "Age of the oldest newest-backup in the selection (resources whose "
                    "$LATEST matches an old version count too; they have no limit).",
                    "stat",
                    (Query(f"max({AGE})"),),
                    unit="s",
                    thresholds=((None, "text"),),
                    width=6,
                    height=4,
                ),
                Panel(
                    "Worst age / limit",
                    "The highest backup age relative to its limit: above 100%, a backup is "
                    "older than the policy allows.",
                    "stat",
                    (Query(f"max({RATIO})"),),
                    unit="percentunit",
                    thresholds=RATIO_OVER_ONE,
                    decimals=0,
                    width=6,
                    height=4,
                ),
            ),
        ),
        Row(
            "Age against the policy",
            (
                Panel(
                    "Backup age per resource",
                    "Every resource's newest backup by kind: its age, the limit in force for "
                    "it and the age as a share of the limit; oldest first. No limit: the "
                    "control is off or does not apply, or $LATEST matches the newest version.",
                    "table",
                    (
                        Query(AGE, "Age"),
                        Query(LIMIT, "Limit"),
                        Query(RATIO, "Age / limit"),
                    ),
                    unit="s",
                    thresholds=((None, "text"),),
                    columns=(
                        *_RESOURCE_COLUMNS,
                        Column("Age", "s"),
                        Column("Limit", "s"),
                        Column("Age / limit", "percentunit", "gauge", RATIO_OVER_ONE, min=0, max=2),
                    ),
                    sort_by=("Age", True),
                    width=24,
                    height=12,
                ),
                Panel(
                    "Oldest backup by kind against the policy default",
                    "The oldest newest-backup per service and kind over time (solid), and the "
                    "policy's default limit for it (dashed; overrides may set other limits per "
                    "resource).",
                    "timeseries",
                    (
                        Query(
                            "max by (aws_service, kind) ("
                            + dedup(
                                sel("posture:backup_oldest_age_seconds", S_RECORDED),
                                (*TARGET, "kind"),
                            )
                            + ")",
                            "oldest {{aws_service}} {{kind}}",
                        ),
                        Query(
                            "max by (aws_service, kind) ("
                            + sel(
                                "posture_backup_policy_max_age_seconds",
                                'job=~"$job", aws_service=~"$service", kind=~"$kind"',
                            )
                            + ")",
                            "limit {{aws_service}} {{kind}}",
                        ),
                    ),
                    unit="s",
                    thresholds=((None, "green"),),
                    min=0,
                    legend="table",
                    width=12,
                    height=9,
                ),
                Panel(
                    "Oldest backups",
                    "The ten resources whose newest backup is oldest.",
                    "bargauge",
                    (Query(f"topk(10, {AGE})", "{{resource}} ({{kind}})"),),
                    unit="s",
                    thresholds=((None, "blue"),),
                    width=12,
                    height=9,
                ),
            ),
        ),
        Row(
            "Problems",
            (
                Panel(
                    "Backups older than their limit",
                    "Resources whose newest backup of a kind is older than their limit "
                    "(alert PostureBackupTooOld after 30 minutes).",
                    "table",
                    (
                        Query(f"{RATIO} > 1", "Age / limit"),
                        Query(
                            f"{AGE} and on "
                            "(aws_account_id, aws_region, aws_service, resource, kind) "
                            f"({RATIO} > 1)",
                            "Age",
                        ),
                    ),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=(
                        *_RESOURCE_COLUMNS,
                        Column("Age", "s"),
                        Column("Age / limit", "percentunit", "color-text", RATIO_OVER_ONE),
                    ),
                    sort_by=("Age / limit", True),
                    width=12,
                    height=10,
                ),
                Panel(
                    "Missing backups",
                    "Resources without any backup of a kind their policy requires (alert "
                    "PostureBackupMissing after an hour).",
                    "table",
                    (Query(f"{MISSING} == 1", "Missing"),),
                    unit="none",
                    thresholds=((None, "text"),),
                    columns=_RESOURCE_COLUMNS,
                    sort_by=("aws_account_id", False),
                    width=12,
                    height=10,
                ),
                Panel(
                    "Resources without a backup, by kind",
                    "Resources missing a required backup per account-region, service and kind, "
                    "over time.",
                    "timeseries",
                    (
                        Query(
                            "sum by (aws_service, kind) ("
                            + dedup(
                                sel("posture:backup_missing_resources", S_RECORDED),
                                (*TARGET, "kind"),
                            )
                            + ")",
                            "{{aws_service}} {{kind}}",
                        ),
                    ),
                    unit="none",
                    thresholds=ZERO_GOOD_ORANGE,
                    min=0,
                    width=24,
                    height=8,
                ),
            ),
        ),
    ),
)
