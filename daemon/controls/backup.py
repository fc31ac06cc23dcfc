"""The backup policy: Lambda and RDS backup controls, and the backup age gauges behind them.

The policy is the controls' parameters (thresholds such as `max_backup_age_days`), overridable per
account, region and tag with the policy file's generic `controls.<id>.overrides` — one mechanism
for every control, validated with the YAML line of a mistake. The measures read the same
parameters, so what the gauges say and what the controls judge never disagree:

- `posture_backup_last_timestamp_seconds{resource,kind}`: when the newest backup of each kind was
  taken (timestamps, not ages: `time() - x` stays right between sweeps);
- `posture_backup_missing{resource,kind}`: 1 where a kind the policy requires has no backup at all
  (never a made-up huge age), 0 where it has one;
- `posture_backup_max_age_seconds{resource,kind}`: the limit in force for that resource, overrides
  applied (a single number per service would be wrong wherever an override applies);
- `posture_backup_policy_max_age_seconds{aws_service,kind}`: the policy's default, for dashboards.

Kinds: `version` (Lambda: the newest published version), `snapshot` (RDS: the newest available
snapshot, automated, manual or AWS Backup's), `restorable` (RDS: LatestRestorableTime, only while
automated backups are on), `recovery_point` (AWS Backup's last backup, opt-in). The `export` kind
(the daemon's configuration export) belongs to the export feature.

Edges decided here:
- Lambda: only `$LATEST` (no published version) is a missing backup. The age of unpublished code
  is measured from `$LATEST`'s LastModified (the last change AWS reports); the age of the backup
  from the newest version's. A function whose code equals its newest version is fully backed up,
  however old that version is: no age limit applies to it.
- RDS: a DB cluster is judged as a whole (its members have no backups of their own); instance read
  replicas are skipped unless `check_read_replicas`. LatestRestorableTime counts only while the
  backup retention is above 0 (without automated backups there is no point-in-time restore, even
  if an endpoint reports a time). A database younger than the age limit that has no backup yet is
  pending, not failing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, model_validator

from daemon.controls.common import config_recording, glob_any, short
from daemon.controls.registry import (
    EvalContext,
    NoParams,
    Outcome,
    Params,
    control,
    errored,
    failed,
    passed,
)
from daemon.measures import Sample, policy_measure, sample, target_measure
from daemon.metrics import names as n
from daemon.model import Severity, Snapshot, rds
from daemon.model import awslambda as lam
from daemon.policy.compiled import Policy

LAMBDA_VERSION_CURRENT = "lambda-version-current"
LAMBDA_BACKUP_AGE = "lambda-backup-age"
LAMBDA_LOG_RETENTION = "lambda-log-retention"
LAMBDA_LOG_EXPORT = "lambda-log-export"
LAMBDA_LAYERS_EXIST = "lambda-layer-versions-exist"
LAMBDA_CONFIG_RECOVERABLE = "lambda-config-recoverable"
RDS_AUTOMATED_BACKUPS = "rds-automated-backups"
RDS_BACKUP_AGE = "rds-backup-age"
RDS_SNAPSHOT_ENCRYPTED = "rds-snapshot-encrypted"
RDS_SNAPSHOT_NOT_PUBLIC = "rds-snapshot-not-public"
RDS_BACKUP_PLAN = "rds-backup-plan"
RDS_CONFIG_RECORDING = "rds-config-recording"

VERSION, SNAPSHOT, RESTORABLE, RECOVERY_POINT = (
    "version",
    "snapshot",
    "restorable",
    "recovery_point",
)
STACK_TAG = "aws:cloudformation:stack-name"
HOUR = 3600.0
DAY = 86400.0

LAMBDA_VERSIONS_DOCS = "https://docs.aws.amazon.com/lambda/latest/dg/configuration-versions.html"
RDS_BACKUP_DOCS = (
    "https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_WorkingWithAutomatedBackups.html"
)


def age_text(delta: dt.timedelta) -> str:
    """A short human age: minutes below 2 h, hours below 2 days, days after."""
    return seconds_text(delta.total_seconds())


def seconds_text(seconds: float) -> str:
    """age_text for a number of seconds (policy limits: any size, no timedelta to overflow)."""
    seconds = max(0.0, seconds)
    if seconds < 2 * HOUR:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY:
        return f"{seconds / HOUR:.1f} h"
    return f"{seconds / DAY:.1f} d"


# --- Lambda: versions ----------------------------------------------------------------------------


class VersionCurrentParams(Params):
    max_unpublished_age_hours: float = Field(
        default=24,
        gt=0,
        description="How long $LATEST may differ from the newest published version (or, with no "
        "published version, exist unpublished), counted from $LATEST's LastModified.",
    )


@control(
    id=LAMBDA_VERSION_CURRENT,
    service="lambda",
    resource_type=lam.FUNCTION,
    title="The code in $LATEST is published as a version",
    severity=Severity.MEDIUM,
    rationale="""A published version is Lambda's own immutable backup of a function's code and
    configuration: it is what an alias can be rolled back to and what can be restored when
    $LATEST is overwritten or broken. Code that stays in $LATEST without ever being published has
    no such copy.""",
    remediation="""Publish a version after every deployment (PublishVersion, `--publish` in the
    CLI, AutoPublishAlias in SAM, `currentVersion` in the CDK) and point the live alias at it.""",
    params=VersionCurrentParams,
    requires=(lam.ASPECT_VERSIONS,),
    references=(LAMBDA_VERSIONS_DOCS,),
)
def version_current(
    fn: lam.LambdaFunction, p: VersionCurrentParams, ctx: EvalContext
) -> Outcome | None:
    newest = fn.newest_version()
    if newest is not None and newest.code_sha256 == fn.code_sha256:
        return passed(f"version {newest.version} holds the code of $LATEST")
    if fn.last_modified is None:
        return errored("$LATEST has no LastModified")
    since = fn.last_modified
    if newest is not None and newest.last_modified is not None:
        since = max(since, newest.last_modified)  # the change came after that version
    lag = ctx.now - since
    what = (
        "no published version"
        if newest is None
        else f"$LATEST code differs from version {newest.version}"
    )
    limit = p.max_unpublished_age_hours * HOUR
    if lag.total_seconds() > limit:
        return failed(f"{what}, unpublished for {age_text(lag)} (limit {seconds_text(limit)})")
    return passed(f"{what}, unpublished for {age_text(lag)}: within {seconds_text(limit)}")


class LambdaBackupAgeParams(Params):
    max_backup_age_days: float = Field(
        default=7,
        gt=0,
        description="Largest age of the newest published version while $LATEST differs from it.",
    )


@control(
    id=LAMBDA_BACKUP_AGE,
    service="lambda",
    resource_type=lam.FUNCTION,
    title="The newest published version is recent while $LATEST has changed",
    severity=Severity.MEDIUM,
    rationale="""When $LATEST has moved on from the newest published version, everything deployed
    since that version exists nowhere else. The older that version, the more work a restore from
    it loses; a function without any published version has no backup at all.""",
    remediation="""Publish a version of the current code (and point the alias at it once tested);
    make publishing part of every deployment so the newest version follows the code.""",
    params=LambdaBackupAgeParams,
    requires=(lam.ASPECT_VERSIONS,),
    references=(LAMBDA_VERSIONS_DOCS,),
)
def lambda_backup_age(
    fn: lam.LambdaFunction, p: LambdaBackupAgeParams, ctx: EvalContext
) -> Outcome | None:
    newest = fn.newest_version()
    if newest is None:
        return failed("no published version: only $LATEST, no backup")
    if newest.last_modified is None:
        return errored(f"version {newest.version} has no LastModified")
    age = ctx.now - newest.last_modified
    if newest.code_sha256 == fn.code_sha256:
        return passed(f"version {newest.version} ({age_text(age)} old) holds the code of $LATEST")
    limit = p.max_backup_age_days * DAY
    text = f"$LATEST differs from version {newest.version}, published {age_text(age)} ago"
    if age.total_seconds() > limit:
        return failed(f"{text} (limit {seconds_text(limit)})")
    return passed(f"{text}: within {seconds_text(limit)}")


# --- Lambda: logs ----------------------------------------------------------------------------


class LogRetentionParams(Params):
    min_log_retention_days: int = Field(
        default=30, ge=1, description="Least retention of the function's log group, in days."
    )
    allow_never_expire: bool = Field(
        default=True,
        description="Whether a log group that never expires complies (false: a retention "
        "period must be set, for example where personal data must not be kept forever).",
    )


@control(
    id=LAMBDA_LOG_RETENTION,
    service="lambda",
    resource_type=lam.FUNCTION,
    title="The function's logs are kept long enough",
    severity=Severity.MEDIUM,
    rationale="""A function's CloudWatch logs are the record of what it did: investigations and
    restores need them for at least the period incidents take to notice. A short retention
    deletes them first; an unlimited one may keep data longer than it is allowed to.""",
    remediation="""Set the log group's retention (PutRetentionPolicy, or RetentionInDays on the
    AWS::Logs::LogGroup) to at least the policy's minimum.""",
    params=LogRetentionParams,
    requires=(lam.ASPECT_LOG_GROUP,),
    security_hub="CloudWatch.16",
    aws_config_rule="cw-loggroup-retention-period-check",
)
def log_retention(
    fn: lam.LambdaFunction, p: LogRetentionParams, ctx: EvalContext
) -> Outcome | None:
    group = fn.log_group
    if group is None:
        return failed(f"log group {fn.log_group_name} does not exist: no logs are kept")
    days = group.retention_days
    if days is None:
        if p.allow_never_expire:
            return passed(f"{group.name} never expires")
        return failed(f"{group.name} never expires (a retention period is required)")
    if days < p.min_log_retention_days:
        return failed(f"{group.name} keeps logs {days} days, below {p.min_log_retention_days}")
    return passed(f"{group.name} keeps logs {days} days")


class LogExportParams(Params):
    allowed_destinations: list[str] = Field(
        default=[],
        description="If set, a subscription filter counts only when its destination ARN matches "
        "one of these globs (e.g. the central logging account's destination).",
    )
    max_export_task_age_hours: float | None = Field(
        default=48,
        gt=0,
        description="A completed CloudWatch Logs export task to S3 whose exported range ended "
        "within this many hours also counts; null: only subscription filters count.",
    )


@control(
    id=LAMBDA_LOG_EXPORT,
    service="lambda",
    resource_type=lam.FUNCTION,
    title="The function's logs are exported out of CloudWatch Logs",
    severity=Severity.LOW,
    rationale="""Logs that live only in the function's log group disappear with it, with the
    account, or at the end of the retention period. A subscription filter (to Firehose, Kinesis
    or a central logging account) or regular export tasks to S3 keep a copy elsewhere.""",
    remediation="""Add a subscription filter to the log group (PutSubscriptionFilter) that
    streams to the central logging destination, or schedule CreateExportTask to S3.""",
    params=LogExportParams,
    requires=(lam.ASPECT_LOG_GROUP, lam.ASPECT_LOG_EXPORT),
    default_enabled=False,
)
def log_export(fn: lam.LambdaFunction, p: LogExportParams, ctx: EvalContext) -> Outcome | None:
    group = fn.log_group
    if group is None:
        return failed(f"log group {fn.log_group_name} does not exist: nothing to export")
    if group.subscription_filters is None:
        return errored("subscription filters were not read")
    destinations = [
        d
        for d in group.subscription_destinations
        if not p.allowed_destinations or glob_any(d, p.allowed_destinations)
    ]
    if destinations:
        return passed(f"{group.name} streams to {short(destinations)}")
    exported = group.last_export_task
    if exported is not None and p.max_export_task_age_hours is not None:
        age = ctx.now - exported
        if age.total_seconds() <= p.max_export_task_age_hours * HOUR:
            return passed(f"{group.name} exported to S3 up to {age_text(age)} ago")
    found = (
        f"{group.subscription_filters} subscription filter(s), none to an allowed destination"
        if group.subscription_filters
        else "no subscription filter"
    )
    if exported is not None:
        found += f"; newest export task ended {age_text(ctx.now - exported)} ago"
    return failed(f"{group.name}: {found}")


# --- Lambda: dependencies and configuration ---------------------------------------------------


@control(
    id=LAMBDA_LAYERS_EXIST,
    service="lambda",
    resource_type=lam.FUNCTION,
    title="The layer versions the function uses still exist",
    severity=Severity.HIGH,
    rationale="""A function keeps running on a deleted layer version, but its configuration can no
    longer be applied: recreating the function, restoring it elsewhere or updating its
    configuration fails. The backup of its configuration is then no longer a backup.""",
    remediation="""Publish the layer again (from its source or a saved artifact) and update the
    function to that version; keep layer artifacts and never delete versions still in use.""",
    params=NoParams,
    requires=(lam.ASPECT_LAYERS,),
)
def layer_versions_exist(fn: lam.LambdaFunction, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if not fn.layers:
        return None
    if fn.missing_layers:
        return failed(f"deleted layer version(s): {short(list(fn.missing_layers))}")
    return passed(f"{len(fn.layers)} layer version(s), all exist")


class ConfigRecoverableParams(Params):
    managed_tags: list[str] = Field(
        default=[STACK_TAG],
        description="Tag keys that mark a function as managed by infrastructure as code (the "
        "stack tag CloudFormation, SAM and the CDK set); empty: infrastructure as code does not "
        "count.",
    )
    accept_export: bool = Field(
        default=True,
        description="Whether the daemon's own configuration export of the function counts.",
    )

    @model_validator(mode="after")
    def _something_counts(self) -> ConfigRecoverableParams:
        if not self.managed_tags and not self.accept_export:
            raise ValueError("set managed_tags or accept_export: nothing would count")
        return self


@control(
    id=LAMBDA_CONFIG_RECOVERABLE,
    service="lambda",
    resource_type=lam.FUNCTION,
    title="The function's configuration can be recreated",
    severity=Severity.MEDIUM,
    rationale="""AWS offers no export of a function's configuration (environment, role, memory,
    timeout, VPC, layers, triggers). Unless it is defined in a CloudFormation stack or exported
    by the daemon, a deleted or broken function has to be rebuilt from memory.""",
    remediation="""Manage the function with CloudFormation, SAM or the CDK, or turn on the
    daemon's configuration export for it.""",
    params=ConfigRecoverableParams,
    requires=(lam.ASPECT_FUNCTION,),
)
def config_recoverable(
    fn: lam.LambdaFunction, p: ConfigRecoverableParams, ctx: EvalContext
) -> Outcome | None:
    for key in p.managed_tags:
        if fn.tags.get(key):
            return passed(f"managed by infrastructure as code ({key}={fn.tags[key]})")
    if p.accept_export and fn.last_export is not None:
        return passed(f"exported by the daemon {age_text(ctx.now - fn.last_export)} ago")
    ways = []
    if p.managed_tags:
        ways.append(f"no {' or '.join(p.managed_tags)} tag")
    if p.accept_export:
        ways.append("not in the daemon's configuration export")
    return failed("; ".join(ways))


# --- RDS: automated backups and their age -------------------------------------------------------


def _judged(db: rds.Database, check_read_replicas: bool) -> bool:
    return check_read_replicas or not (
        isinstance(db, rds.DbInstance) and db.read_replica_source is not None
    )


def _kind(db: rds.Database) -> str:
    return "cluster" if isinstance(db, rds.DbCluster) else "instance"


class AutomatedBackupsParams(Params):
    min_retention_days: int = Field(
        default=7, ge=1, le=35, description="Least automated backup retention, in days."
    )
    check_read_replicas: bool = Field(
        default=False,
        description="Also judge instance read replicas (their source's backups usually cover "
        "them; some engines cannot back up a replica).",
    )


@control(
    id=RDS_AUTOMATED_BACKUPS,
    service="rds",
    resource_type=rds.DATABASE,
    title="Automated backups are on with enough retention",
    severity=Severity.HIGH,
    rationale="""Automated backups are RDS's daily snapshots plus transaction logs: they allow a
    point-in-time restore to any second in the retention period. Off (retention 0), the database
    has neither; a short retention loses the history needed to restore from before a problem
    that was noticed late.""",
    remediation="""Modify the instance or cluster with BackupRetentionPeriod of at least the
    policy's minimum (up to 35 days) and a PreferredBackupWindow outside peak hours.""",
    params=AutomatedBackupsParams,
    security_hub="RDS.11, RDS.50",
    aws_config_rule="db-instance-backup-enabled, rds-cluster-backup-retention-check",
    references=(RDS_BACKUP_DOCS,),
)
def automated_backups(
    db: rds.Database, p: AutomatedBackupsParams, ctx: EvalContext
) -> Outcome | None:
    if not _judged(db, p.check_read_replicas):
        return None
    days = db.backup_retention_days
    if days <= 0:
        return failed(f"automated backups are off ({_kind(db)} retention 0)")
    if days < p.min_retention_days:
        return failed(f"backup retention {days} days, below {p.min_retention_days}")
    window = f", window {db.preferred_backup_window}" if db.preferred_backup_window else ""
    return passed(f"backup retention {days} days{window}")


class RdsBackupAgeParams(Params):
    max_backup_age_hours: float = Field(
        default=26,
        gt=0,
        description="Largest age of the newest snapshot and of the latest restorable time "
        "(a daily backup window plus slack).",
    )
    require: list[Literal["snapshot", "restorable"]] = Field(
        default=["snapshot", "restorable"],
        min_length=1,
        description="Which backups must be recent: 'snapshot' (the newest available snapshot, "
        "automated, manual or AWS Backup's) and 'restorable' (point-in-time restore).",
    )
    check_read_replicas: bool = Field(
        default=False, description="Also judge instance read replicas."
    )


def restorable_time(db: rds.Database) -> dt.datetime | None:
    """The latest point-in-time restore target, only while automated backups are on."""
    if db.backup_retention_days <= 0:
        return None
    return db.latest_restorable_time


@control(
    id=RDS_BACKUP_AGE,
    service="rds",
    resource_type=rds.DATABASE,
    title="The newest backup is recent",
    severity=Severity.HIGH,
    rationale="""Backups being configured is not backups being taken: a failed backup window, a
    stuck instance or a retention of 0 leaves the newest snapshot and the latest restorable time
    behind. Their age is the data a restore would lose.""",
    remediation="""Check the database's events (backup failures, storage-full, instance not
    available), its backup window and retention; take a manual snapshot now if the automated
    one is late.""",
    params=RdsBackupAgeParams,
    requires=(rds.ASPECT_SNAPSHOTS,),
    references=(RDS_BACKUP_DOCS,),
)
def rds_backup_age(db: rds.Database, p: RdsBackupAgeParams, ctx: EvalContext) -> Outcome | None:
    snapshot = ctx.snapshot
    if not isinstance(snapshot, rds.RdsSnapshot) or not _judged(db, p.check_read_replicas):
        return None
    limit = p.max_backup_age_hours * HOUR
    problems: list[str] = []
    notes: list[str] = []
    newest: dict[str, dt.datetime | None] = {}
    if SNAPSHOT in p.require:
        snap = snapshot.newest_snapshot(db)
        newest[SNAPSHOT] = snap.created_at if snap is not None else None
        if snap is not None and snap.created_at is not None:
            notes.append(
                f"newest snapshot {snap.identifier} ({snap.snapshot_type}) "
                f"{age_text(ctx.now - snap.created_at)} old"
            )
    if RESTORABLE in p.require:
        restorable = newest[RESTORABLE] = restorable_time(db)
        if restorable is not None:
            notes.append(f"restorable to {age_text(ctx.now - restorable)} ago")
    created = db.created_at
    young = created is not None and (ctx.now - created).total_seconds() <= limit
    for kind, when in newest.items():
        label = "snapshot" if kind == SNAPSHOT else "point-in-time restore"
        if when is None:
            if young and created is not None:
                notes.append(f"no {label} yet (created {age_text(ctx.now - created)} ago)")
            else:
                problems.append(f"no {label}")
        elif (ctx.now - when).total_seconds() > limit:
            problems.append(f"{label} {age_text(ctx.now - when)} old")
    if problems:
        return failed(f"{', '.join(problems)} (limit {seconds_text(limit)}); " + "; ".join(notes))
    return passed("; ".join(notes))


class BackupPlanParams(Params):
    max_recovery_point_age_hours: float = Field(
        default=26, gt=0, description="Largest age of AWS Backup's newest recovery point."
    )
    check_read_replicas: bool = Field(
        default=False, description="Also judge instance read replicas."
    )


@control(
    id=RDS_BACKUP_PLAN,
    service="rds",
    resource_type=rds.DATABASE,
    title="AWS Backup protects the database with a recent recovery point",
    severity=Severity.MEDIUM,
    rationale="""RDS's own backups live and die with the database's account and region, and
    automated backups are deleted with the instance by default. An AWS Backup plan adds
    recovery points in a vault with its own retention, lock and cross-account or cross-region
    copies.""",
    remediation="""Assign the database to an AWS Backup plan (a backup selection by ARN or tag)
    with at least a daily rule, and check the plan's jobs if the newest recovery point is old.""",
    params=BackupPlanParams,
    requires=(rds.ASPECT_BACKUP_PLAN,),
    security_hub="RDS.26",
    aws_config_rule=(
        "rds-resources-protected-by-backup-plan, rds-last-backup-recovery-point-created"
    ),
    default_enabled=False,
)
def backup_plan(db: rds.Database, p: BackupPlanParams, ctx: EvalContext) -> Outcome | None:
    snapshot = ctx.snapshot
    if not isinstance(snapshot, rds.RdsSnapshot) or not _judged(db, p.check_read_replicas):
        return None
    if snapshot.protected is None:
        return errored("AWS Backup's protected resources were not read")
    point = snapshot.protected.get(db.arn)
    if point is None:
        return failed("no AWS Backup recovery point: not protected by a backup plan")
    if point.last_backup is None:
        return errored("AWS Backup reports no last backup time")
    age = ctx.now - point.last_backup
    limit = p.max_recovery_point_age_hours * HOUR
    text = f"newest recovery point {age_text(age)} old"
    if age.total_seconds() > limit:
        return failed(f"{text} (limit {seconds_text(limit)})")
    return passed(f"{text} in {point.vault_arn or 'a backup vault'}")


# --- RDS: snapshots ---------------------------------------------------------------------------


class SnapshotEncryptedParams(Params):
    include_automated: bool = Field(
        default=False,
        description="Also judge automated snapshots (they share their database's encryption, "
        "already judged by rds-storage-encrypted, and expire with its retention).",
    )


@control(
    id=RDS_SNAPSHOT_ENCRYPTED,
    service="rds",
    resource_type=rds.SNAPSHOT,
    title="Snapshots are encrypted",
    severity=Severity.MEDIUM,
    rationale="""A snapshot is a full copy of the database that outlives it and can be copied or
    shared; unencrypted, anyone who obtains it reads the data. Manual snapshots are kept until
    deleted, so one taken of an unencrypted database stays exposed after the database is fixed.""",
    remediation="""Copy the snapshot with a KMS key (CopyDBSnapshot / CopyDBClusterSnapshot with
    KmsKeyId), check the copy restores, then delete the unencrypted snapshot.""",
    params=SnapshotEncryptedParams,
    security_hub="RDS.4",
    aws_config_rule="rds-snapshot-encrypted",
)
def snapshot_encrypted(
    snap: rds.DbSnapshot, p: SnapshotEncryptedParams, ctx: EvalContext
) -> Outcome | None:
    if snap.automated and not p.include_automated:
        return None
    if snap.encrypted:
        return passed(f"encrypted with {snap.kms_key_id or 'a KMS key'}")
    return failed(f"{snap.snapshot_type} snapshot of {snap.db_identifier} is not encrypted")


class SnapshotPublicParams(Params):
    allowed_accounts: list[str] | None = Field(
        default=None,
        description="If set, sharing with accounts outside this list is a violation too.",
    )


@control(
    id=RDS_SNAPSHOT_NOT_PUBLIC,
    service="rds",
    resource_type=rds.SNAPSHOT,
    title="Snapshots are not shared publicly",
    severity=Severity.CRITICAL,
    rationale="""A snapshot shared with "all" can be restored by any AWS account: the whole
    database, with its users' password hashes, is public.""",
    remediation="""Remove "all" from the snapshot's restore attribute (ModifyDBSnapshotAttribute
    / ModifyDBClusterSnapshotAttribute with ValuesToRemove all); share with named accounts
    only.""",
    params=SnapshotPublicParams,
    requires=(rds.ASPECT_SNAPSHOT_ATTRIBUTES,),
    security_hub="RDS.1",
    aws_config_rule="rds-snapshots-public-prohibited",
)
def snapshot_not_public(
    snap: rds.DbSnapshot, p: SnapshotPublicParams, ctx: EvalContext
) -> Outcome | None:
    if snap.snapshot_type != "manual":
        return None  # automated and AWS Backup snapshots cannot be shared
    if snap.restore_accounts is None:
        return errored("the restore attribute was not read")
    if snap.public:
        return failed("restorable by any AWS account (restore attribute: all)")
    others = [a for a in snap.restore_accounts if a != snap.account_id]
    if p.allowed_accounts is not None:
        outside = [a for a in others if a not in p.allowed_accounts]
        if outside:
            return failed(f"shared with accounts outside allowed_accounts: {short(outside)}")
    if others:
        return passed(f"shared with {short(others)} only")
    return passed("not shared")


# --- RDS: AWS Config coverage -----------------------------------------------------------------


class RdsConfigRecordingParams(Params):
    resource_types: list[str] = Field(
        default=[
            "AWS::RDS::DBInstance",
            "AWS::RDS::DBCluster",
            "AWS::RDS::DBSnapshot",
            "AWS::RDS::DBClusterSnapshot",
        ],
        description="AWS Config resource types that must be recorded.",
    )


@control(
    id=RDS_CONFIG_RECORDING,
    service="rds",
    resource_type=rds.ACCOUNT_REGION,
    title="AWS Config records the RDS resources in the region",
    severity=Severity.MEDIUM,
    rationale="""AWS Config's configuration history shows when a database's backup retention
    was lowered, when a snapshot was shared or deleted, and what a database looked like before:
    the record a restore and an investigation start from. It applies where the account-region
    has RDS databases or snapshots.""",
    remediation="""Start a configuration recorder that records all supported resource types,
    or at least the RDS types named in the parameters, with a delivery channel.""",
    params=RdsConfigRecordingParams,
    requires=(rds.ASPECT_CONFIG_RECORDER,),
)
def rds_config_recording(
    region: lam.RegionPosture, p: RdsConfigRecordingParams, ctx: EvalContext
) -> Outcome | None:
    snapshot = ctx.snapshot
    if not isinstance(snapshot, rds.RdsSnapshot):
        return None
    if not (snapshot.instances or snapshot.clusters or snapshot.snapshots):
        return None  # nothing of RDS to record here
    return config_recording(region.config_recorders, p.resource_types)


# --- measures ----------------------------------------------------------------------------------


def _in_force(
    policy: Policy, control_id: str, resource: rds.Database | lam.LambdaFunction
) -> Params | None:
    """The control's parameters for this resource (overrides applied), None where it is off."""
    compiled = policy.controls.get(control_id)
    if compiled is None:
        return None
    eff = compiled.resolve(resource.account_id, resource.region, resource.tags)
    return eff.params if eff.enabled else None


def _series(
    arn: str,
    kind: str,
    when: dt.datetime | None,
    required: bool,
    limit_seconds: float | None,
) -> Iterator[Sample]:
    labels = {"resource": arn, "kind": kind}
    if when is not None:
        yield sample(n.BACKUP_LAST_TIMESTAMP.name, when.timestamp(), **labels)
    if required:
        yield sample(n.BACKUP_MISSING.name, 0 if when is not None else 1, **labels)
        if limit_seconds is not None:
            yield sample(n.BACKUP_MAX_AGE.name, limit_seconds, **labels)


@target_measure("lambda")
def lambda_backups(snapshot: Snapshot, policy: Policy, now: dt.datetime) -> Iterator[Sample]:
    """kind="version": the newest published version of each function."""
    if not isinstance(snapshot, lam.LambdaSnapshot):
        return
    for fn in snapshot.functions:
        if lam.ASPECT_VERSIONS in fn.errors:
            continue  # unknown: no series rather than a wrong one
        newest = fn.newest_version()
        params = _in_force(policy, LAMBDA_BACKUP_AGE, fn)
        limit = None
        if isinstance(params, LambdaBackupAgeParams) and (
            newest is None or newest.code_sha256 != fn.code_sha256
        ):
            limit = params.max_backup_age_days * DAY
        yield from _series(
            fn.arn,
            VERSION,
            newest.last_modified if newest is not None else None,
            params is not None,
            limit,
        )


@target_measure("rds")
def rds_backups(snapshot: Snapshot, policy: Policy, now: dt.datetime) -> Iterator[Sample]:
    """kinds snapshot, restorable and recovery_point of every database (clusters as a whole)."""
    if not isinstance(snapshot, rds.RdsSnapshot):
        return
    for db in snapshot.databases():
        age = _in_force(policy, RDS_BACKUP_AGE, db)
        judged = isinstance(age, RdsBackupAgeParams) and _judged(db, age.check_read_replicas)
        limit = age.max_backup_age_hours * HOUR if isinstance(age, RdsBackupAgeParams) else None
        required = set(age.require) if isinstance(age, RdsBackupAgeParams) and judged else set()
        if rds.ASPECT_SNAPSHOTS not in db.errors:
            newest = snapshot.newest_snapshot(db)
            yield from _series(
                db.arn,
                SNAPSHOT,
                newest.created_at if newest is not None else None,
                SNAPSHOT in required,
                limit,
            )
        yield from _series(db.arn, RESTORABLE, restorable_time(db), RESTORABLE in required, limit)
        if snapshot.protected is None or rds.ASPECT_BACKUP_PLAN in db.errors:
            continue
        plan = _in_force(policy, RDS_BACKUP_PLAN, db)
        point = snapshot.protected.get(db.arn)
        yield from _series(
            db.arn,
            RECOVERY_POINT,
            point.last_backup if point is not None else None,
            isinstance(plan, BackupPlanParams) and _judged(db, plan.check_read_replicas),
            plan.max_recovery_point_age_hours * HOUR
            if isinstance(plan, BackupPlanParams)
            else None,
        )


@policy_measure
def backup_policy(policy: Policy) -> Iterator[Sample]:
    """The policy's default age limits (before overrides), by service and kind."""

    def base(control_id: str) -> Params | None:
        compiled = policy.controls.get(control_id)
        return compiled.base.params if compiled is not None and compiled.base.enabled else None

    metric = n.BACKUP_POLICY_MAX_AGE.name
    versions = base(LAMBDA_BACKUP_AGE)
    if isinstance(versions, LambdaBackupAgeParams):
        yield sample(metric, versions.max_backup_age_days * DAY, aws_service="lambda", kind=VERSION)
    ages = base(RDS_BACKUP_AGE)
    if isinstance(ages, RdsBackupAgeParams):
        for kind in sorted(set(ages.require)):
            yield sample(metric, ages.max_backup_age_hours * HOUR, aws_service="rds", kind=kind)
    plan = base(RDS_BACKUP_PLAN)
    if isinstance(plan, BackupPlanParams):
        yield sample(
            metric,
            plan.max_recovery_point_age_hours * HOUR,
            aws_service="rds",
            kind=RECOVERY_POINT,
        )
