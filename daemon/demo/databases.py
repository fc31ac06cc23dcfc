"""The demo estate's RDS resources: DB instances and Aurora clusters, each declaring by hand the
controls it violates.

Backups: an instance with automated backups off, one with a short retention, one whose newest
snapshot is three days old (moto stamps everything "now": the shim backdates it), manual snapshots
that are fresh, unencrypted, shared with one account or public (instance and cluster snapshots),
and AWS Backup recovery points (registered in the shim: moto has no backup jobs) that are recent,
stale or missing. moto creates an automated snapshot with every instance and cluster (even with
retention 0) and reports a LatestRestorableTime of "now" for every one; the daemon ignores the
latter where the retention is 0, as AWS omits it there.

moto 5.2 represents every field the RDS controls read. Two habits to mind (both avoided here):
an instance created without VpcSecurityGroupIds gets a security group id that EC2 does not know,
and one encrypted without KmsKeyId reports the placeholder key "default_kms_key_id". So every
demo database names its security group and key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from daemon.demo import common
from daemon.demo.common import SECONDARY, RegionClients, Regions, in_region, selected
from daemon.demo.common import violates as _v

DB_PORT = 6543  # the demo's non-default port
BackupPlan = Literal["fresh", "stale", "none"]  # AWS Backup's newest recovery point
RECOVERY_POINT_AGE = {"fresh": dt.timedelta(hours=3), "stale": dt.timedelta(days=3)}


@dataclass(frozen=True)
class SnapshotSpec:
    """A manual snapshot of the database (or cluster) it belongs to."""

    name: str
    violates: frozenset[str] = frozenset()
    restore: tuple[str, ...] = ()  # the restore attribute: "all" (public) or account ids


MASTER_PASSWORD = "demo-Only-Passw0rd"  # moto needs one; never printed by the daemon


@dataclass(frozen=True)
class DbSpec:
    name: str
    violates: frozenset[str] = frozenset()
    regions: Regions = "primary"
    engine: str = "postgres"
    encrypted: bool = True
    public: bool = False
    multi_az: bool = True
    env: str = "prod"
    deletion_protection: bool = True
    auto_minor: bool = True
    iam_auth: bool = True
    monitoring: int = 60
    logs: tuple[str, ...] = ("postgresql",)
    sg: Literal["private", "open"] = "private"
    port: int = DB_PORT
    tags: dict[str, str] = field(default_factory=dict)
    # backups
    retention: int = 7
    snapshot_age: dt.timedelta | None = None  # backdate the automated snapshot
    created_age: dt.timedelta | None = None  # backdate the instance
    snapshots: tuple[SnapshotSpec, ...] = ()
    backup_plan: BackupPlan = "fresh"


@dataclass(frozen=True)
class AuroraSpec:
    name: str
    violates: frozenset[str] = frozenset()
    regions: Regions = "primary"
    engine: str = "aurora-postgresql"
    encrypted: bool = True
    deletion_protection: bool = True
    iam_auth: bool = True
    logs: tuple[str, ...] = ("postgresql",)
    env: str = "prod"
    port: int = DB_PORT
    members: tuple[str, ...] = ("a", "b")  # one member per Availability Zone suffix
    snapshots: tuple[SnapshotSpec, ...] = ()
    backup_plan: BackupPlan = "fresh"


INSTANCES: tuple[DbSpec, ...] = (
    DbSpec("orders-db", regions="all"),
    DbSpec(
        "unencrypted-db",
        _v("rds-storage-encrypted"),
        encrypted=False,
        snapshots=(SnapshotSpec("unencrypted-db-manual", _v("rds-snapshot-encrypted")),),
    ),
    DbSpec("public-db", _v("rds-instance-not-public"), public=True),
    DbSpec("single-az-prod", _v("rds-multi-az"), multi_az=False),
    DbSpec("single-az-dev", multi_az=False, env="dev"),  # not production: Multi-AZ not required
    DbSpec("unprotected-db", _v("rds-deletion-protection"), deletion_protection=False),
    DbSpec("pinned-version-db", _v("rds-auto-minor-version-upgrade"), auto_minor=False),
    DbSpec("password-auth-db", _v("rds-iam-authentication"), iam_auth=False),
    DbSpec("unmonitored-db", _v("rds-enhanced-monitoring"), monitoring=0),
    # exempted by tag in the demo policy: a failure, but not a violation
    DbSpec(
        "reporting-replica",
        monitoring=0,
        tags={"posture/exempt": "rds-enhanced-monitoring"},
    ),
    DbSpec("no-log-exports-db", _v("rds-log-exports"), logs=()),
    DbSpec(
        "reporting-mysql",
        engine="mysql",
        logs=("error", "slowquery"),
        snapshots=(
            SnapshotSpec("reporting-mysql-nightly"),
            SnapshotSpec("reporting-mysql-for-analytics", restore=("210987654321",)),
            SnapshotSpec("reporting-mysql-public", _v("rds-snapshot-not-public"), ("all",)),
        ),
    ),
    DbSpec("open-sg-db", _v("rds-security-group-no-public-ingress"), sg="open"),
    DbSpec("default-port-db", _v("rds-non-default-port"), port=5432),
    # backups off, for a month: no point-in-time restore, nothing in AWS Backup
    DbSpec(
        "no-backups-db",
        _v("rds-automated-backups", "rds-backup-age", "rds-backup-plan"),
        retention=0,
        created_age=dt.timedelta(days=30),
        backup_plan="none",
    ),
    DbSpec("short-retention-db", _v("rds-automated-backups"), retention=3),
    # the newest snapshot and recovery point are three days old
    DbSpec(
        "stale-backup-db",
        _v("rds-backup-age", "rds-backup-plan"),
        snapshot_age=dt.timedelta(days=3),
        backup_plan="stale",
    ),
)

CLUSTERS: tuple[AuroraSpec, ...] = (
    AuroraSpec(
        "orders-aurora",
        regions="all",
        snapshots=(SnapshotSpec("orders-aurora-pre-migration"),),
    ),
    AuroraSpec(
        "legacy-aurora",
        _v("rds-storage-encrypted", "rds-deletion-protection", "rds-multi-az", "rds-backup-plan"),
        backup_plan="none",
        snapshots=(
            SnapshotSpec(
                "legacy-aurora-final",
                _v("rds-snapshot-encrypted", "rds-snapshot-not-public"),
                ("all",),
            ),
        ),
        engine="aurora-mysql",
        encrypted=False,
        deletion_protection=False,
        logs=("error", "slowquery"),
        port=3307,
        members=("a",),
    ),
)


def instance_arn(account: str, region: str, name: str) -> str:
    return f"arn:aws:rds:{region}:{account}:db:{name}"


def cluster_arn(account: str, region: str, name: str) -> str:
    return f"arn:aws:rds:{region}:{account}:cluster:{name}"


def snapshot_arn(account: str, region: str, name: str, cluster: bool = False) -> str:
    kind = "cluster-snapshot" if cluster else "snapshot"
    return f"arn:aws:rds:{region}:{account}:{kind}:{name}"


def member_name(cluster: str, az: str) -> str:
    return f"{cluster}-{az}"


def instances_in(region: str, only: Iterable[str] | None = None) -> list[DbSpec]:
    return [d for d in INSTANCES if in_region(d.regions, region) and selected(d.name, only)]


def clusters_in(region: str, only: Iterable[str] | None = None) -> list[AuroraSpec]:
    return [c for c in CLUSTERS if in_region(c.regions, region) and selected(c.name, only)]


def expected(account: str, region: str, only: Iterable[str] | None = None) -> set[tuple[str, str]]:
    """(control, resource ARN) of every violation the databases hold, by construction."""
    only = tuple(only) if only is not None else None
    out: set[tuple[str, str]] = set()
    instances, clusters = instances_in(region, only), clusters_in(region, only)
    for db in instances:
        out.update((c, instance_arn(account, region, db.name)) for c in db.violates)
        for snap in db.snapshots:
            out.update((c, snapshot_arn(account, region, snap.name)) for c in snap.violates)
    for cluster in clusters:
        out.update((c, cluster_arn(account, region, cluster.name)) for c in cluster.violates)
        for snap in cluster.snapshots:
            arn = snapshot_arn(account, region, snap.name, cluster=True)
            out.update((c, arn) for c in snap.violates)
    # only the primary region has an AWS Config recorder (estate.RegionSeeder._region_posture)
    if region == SECONDARY and (instances or clusters):
        out.add(("rds-config-recording", f"arn:aws::{region}:{account}:account-region"))
    return out


def db_count(region: str, only: Iterable[str] | None = None) -> tuple[int, int]:
    """(DB instances including cluster members, DB clusters) seeded in the region."""
    clusters = clusters_in(region, only)
    return len(instances_in(region, only)) + sum(len(c.members) for c in clusters), len(clusters)


async def _security_groups(rs: RegionClients, shared: dict[str, Any]) -> dict[str, str]:
    """A private group (the port from the VPC only, HTTPS from anywhere) and an open one."""
    async with rs.client("ec2") as ec2:
        out = {}
        for kind in ("private", "open"):
            sg = await ec2.create_security_group(
                GroupName=f"db-{kind}", Description=f"database ({kind})", VpcId=shared["vpc"]
            )
            group = sg["GroupId"]
            source = "0.0.0.0/0" if kind == "open" else "10.20.0.0/16"
            rules: list[dict[str, Any]] = [
                {
                    "IpProtocol": "tcp",
                    "FromPort": DB_PORT,
                    "ToPort": DB_PORT,
                    "IpRanges": [{"CidrIp": source}],
                },
                # open to the world, but not the database port: not a violation
                {
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                    "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
                },
            ]
            await ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=rules)
            out[kind] = group
        return out


async def seed_rds(
    rs: RegionClients, shared: dict[str, Any], only: Iterable[str] | None = None
) -> None:
    region = rs.region
    instances, clusters = instances_in(region, only), clusters_in(region, only)
    if not (instances or clusters):
        return
    groups = await _security_groups(rs, shared)
    async with rs.client("rds") as rds:
        for db in instances:
            params: dict[str, Any] = {
                "DBInstanceIdentifier": db.name,
                "Engine": db.engine,
                "DBInstanceClass": "db.t4g.micro",
                "AllocatedStorage": 20,
                "MasterUsername": "app",
                "MasterUserPassword": MASTER_PASSWORD,
                "StorageEncrypted": db.encrypted,
                "PubliclyAccessible": db.public,
                "MultiAZ": db.multi_az,
                "DeletionProtection": db.deletion_protection,
                "AutoMinorVersionUpgrade": db.auto_minor,
                "EnableIAMDatabaseAuthentication": db.iam_auth,
                "MonitoringInterval": db.monitoring,
                "EnableCloudwatchLogsExports": list(db.logs),
                "VpcSecurityGroupIds": [groups[db.sg]],
                "Port": db.port,
                "BackupRetentionPeriod": db.retention,
                "CopyTagsToSnapshot": True,
                "Tags": [
                    {"Key": "env", "Value": db.env},
                    {"Key": "app", "Value": db.name},
                    *({"Key": k, "Value": v} for k, v in db.tags.items()),
                ],
            }
            if db.encrypted:
                params["KmsKeyId"] = shared["kms"]
            if db.monitoring:
                params["MonitoringRoleArn"] = f"arn:aws:iam::{rs.account}:role/rds-monitoring"
            await rds.create_db_instance(**params)
        for cluster in clusters:
            cparams: dict[str, Any] = {
                "DBClusterIdentifier": cluster.name,
                "Engine": cluster.engine,
                "MasterUsername": "app",
                "MasterUserPassword": MASTER_PASSWORD,
                "StorageEncrypted": cluster.encrypted,
                "DeletionProtection": cluster.deletion_protection,
                "EnableIAMDatabaseAuthentication": cluster.iam_auth,
                "EnableCloudwatchLogsExports": list(cluster.logs),
                "VpcSecurityGroupIds": [groups["private"]],
                "Port": cluster.port,
                "BackupRetentionPeriod": 14,
                "Tags": [
                    {"Key": "env", "Value": cluster.env},
                    {"Key": "app", "Value": cluster.name},
                ],
            }
            if cluster.encrypted:
                cparams["KmsKeyId"] = shared["kms"]
            await rds.create_db_cluster(**cparams)
            for az in cluster.members:
                await rds.create_db_instance(
                    DBInstanceIdentifier=member_name(cluster.name, az),
                    DBClusterIdentifier=cluster.name,
                    Engine=cluster.engine,
                    DBInstanceClass="db.r6g.large",
                    AvailabilityZone=f"{region}{az}",
                    PubliclyAccessible=False,
                    AutoMinorVersionUpgrade=True,
                    MonitoringInterval=30,
                    MonitoringRoleArn=f"arn:aws:iam::{rs.account}:role/rds-monitoring",
                    Tags=[{"Key": "env", "Value": cluster.env}],
                )
    await _backups(rs, instances, clusters)


async def _backups(rs: RegionClients, instances: list[DbSpec], clusters: list[AuroraSpec]) -> None:
    """Manual snapshots and their sharing, old backups (backdated), AWS Backup recovery points."""
    account, region = rs.account, rs.region
    async with rs.client("rds") as rds:
        for db in instances:
            for snap in db.snapshots:
                await rds.create_db_snapshot(
                    DBInstanceIdentifier=db.name, DBSnapshotIdentifier=snap.name
                )
                if snap.restore:
                    await rds.modify_db_snapshot_attribute(
                        DBSnapshotIdentifier=snap.name,
                        AttributeName="restore",
                        ValuesToAdd=list(snap.restore),
                    )
            if db.snapshot_age is not None:
                automated = await rds.describe_db_snapshots(
                    DBInstanceIdentifier=db.name, SnapshotType="automated"
                )
                for found in automated["DBSnapshots"]:
                    await common.backdate_rds(
                        account,
                        region,
                        db.snapshot_age,
                        DBSnapshotIdentifier=found["DBSnapshotIdentifier"],
                    )
            if db.created_age is not None:
                await common.backdate_rds(
                    account, region, db.created_age, DBInstanceIdentifier=db.name
                )
        for cluster in clusters:
            for snap in cluster.snapshots:
                await rds.create_db_cluster_snapshot(
                    DBClusterIdentifier=cluster.name, DBClusterSnapshotIdentifier=snap.name
                )
                if snap.restore:
                    await rds.modify_db_cluster_snapshot_attribute(
                        DBClusterSnapshotIdentifier=snap.name,
                        AttributeName="restore",
                        ValuesToAdd=list(snap.restore),
                    )
    registered: list[Awaitable[None]] = []
    for db in instances:
        if db.backup_plan != "none":
            arn = instance_arn(account, region, db.name)
            age = RECOVERY_POINT_AGE[db.backup_plan]
            registered.append(common.register_recovery_point(account, region, arn, "RDS", age))
    for cluster in clusters:
        if cluster.backup_plan != "none":
            arn = cluster_arn(account, region, cluster.name)
            age = RECOVERY_POINT_AGE[cluster.backup_plan]
            registered.append(common.register_recovery_point(account, region, arn, "Aurora", age))
    for call in registered:
        await call
