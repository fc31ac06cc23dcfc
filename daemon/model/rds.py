"""Snapshots of Amazon RDS: DB instances and DB clusters (Aurora and Multi-AZ DB clusters).

Settings that belong to a cluster (storage encryption, deletion protection, IAM authentication,
log exports, security groups, port, Multi-AZ) are judged on the cluster; its member instances are
judged only on what each instance sets for itself (public access, enhanced monitoring, minor
version upgrades). Controls of the `rds-database` kind therefore see every cluster and every
instance that is not a cluster member.

Backup-relevant fields (retention, restorable times, windows, copy-tags, replicas, resource ids)
are kept too, so backup controls and measures can read the same snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from daemon.model import awslambda, ec2, kms
from daemon.model.core import EMPTY_TAGS, Target
from daemon.model.ec2 import SecurityGroup
from daemon.model.kms import KmsKey

DB_INSTANCE = "rds-db-instance"
DB_CLUSTER = "rds-db-cluster"
DATABASE = "rds-database"  # a DB cluster, or a DB instance that is not a cluster member
DB_SNAPSHOT = "rds-db-snapshot"
DB_CLUSTER_SNAPSHOT = "rds-db-cluster-snapshot"
SNAPSHOT = "rds-snapshot"  # a DB snapshot or a DB cluster snapshot (what snapshot controls judge)
ACCOUNT_REGION = awslambda.ACCOUNT_REGION  # the account-region itself (AWS Config coverage)
RegionPosture = awslambda.RegionPosture

ASPECT_SECURITY_GROUPS = ec2.ASPECT_SECURITY_GROUPS  # ec2:DescribeSecurityGroups
ASPECT_KMS_KEY = kms.ASPECT_KMS_KEY  # kms:DescribeKey
ASPECT_SNAPSHOTS = "snapshots"  # DescribeDBSnapshots / DescribeDBClusterSnapshots (on databases)
ASPECT_SNAPSHOT_ATTRIBUTES = "snapshot_attributes"  # Describe*SnapshotAttributes (on snapshots)
ASPECT_BACKUP_PLAN = "backup_plan"  # backup:ListProtectedResources (on databases; opt-in)
ASPECT_CONFIG_RECORDER = awslambda.ASPECT_CONFIG_RECORDER  # on the account-region


@dataclass(frozen=True, slots=True)
class ClusterMember:
    identifier: str
    is_writer: bool


@dataclass(frozen=True, slots=True)
class DbInstance:
    arn: str
    identifier: str
    account_id: str
    region: str
    engine: str
    engine_version: str = ""
    instance_class: str = ""
    status: str = ""
    cluster_id: str | None = None  # DBClusterIdentifier: a member of this cluster
    port: int | None = None
    publicly_accessible: bool = False
    multi_az: bool = False
    availability_zone: str | None = None
    secondary_availability_zone: str | None = None
    storage_encrypted: bool = False
    kms_key_id: str | None = None
    kms_key: KmsKey | None = None
    deletion_protection: bool = False
    auto_minor_version_upgrade: bool = False
    iam_auth: bool = False
    monitoring_interval: int = 0  # seconds; 0: enhanced monitoring off
    monitoring_role_arn: str | None = None
    log_exports: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    security_groups: tuple[SecurityGroup, ...] = ()
    # backup-relevant
    backup_retention_days: int = 0
    preferred_backup_window: str | None = None
    latest_restorable_time: datetime | None = None
    copy_tags_to_snapshot: bool = False
    read_replica_source: str | None = None
    read_replicas: tuple[str, ...] = ()
    backup_target: str | None = None  # "region" | "outposts"
    resource_id: str | None = None  # DbiResourceId
    created_at: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = DB_INSTANCE

    @property
    def is_cluster_member(self) -> bool:
        return self.cluster_id is not None


@dataclass(frozen=True, slots=True)
class DbCluster:
    arn: str
    identifier: str
    account_id: str
    region: str
    engine: str
    engine_version: str = ""
    engine_mode: str | None = None  # provisioned | serverless | ...
    status: str = ""
    port: int | None = None
    publicly_accessible: bool | None = None  # Multi-AZ DB clusters only
    multi_az: bool = False
    availability_zones: tuple[str, ...] = ()
    storage_encrypted: bool = False
    kms_key_id: str | None = None
    kms_key: KmsKey | None = None
    deletion_protection: bool = False
    auto_minor_version_upgrade: bool | None = None  # Multi-AZ DB clusters only
    iam_auth: bool = False
    monitoring_interval: int | None = None  # Multi-AZ DB clusters only
    log_exports: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    security_groups: tuple[SecurityGroup, ...] = ()
    members: tuple[ClusterMember, ...] = ()
    # backup-relevant
    backup_retention_days: int = 0
    preferred_backup_window: str | None = None
    earliest_restorable_time: datetime | None = None
    latest_restorable_time: datetime | None = None
    copy_tags_to_snapshot: bool = False
    backtrack_window_seconds: int | None = None
    resource_id: str | None = None  # DbClusterResourceId
    created_at: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = DB_CLUSTER


Database = DbInstance | DbCluster


@dataclass(frozen=True, slots=True)
class DbSnapshot:
    """A DB snapshot or a DB cluster snapshot (automated, manual or AWS Backup's)."""

    arn: str
    identifier: str
    account_id: str
    region: str
    cluster: bool  # a DB cluster snapshot
    db_identifier: str  # DBInstanceIdentifier or DBClusterIdentifier it was taken of
    db_resource_id: str | None  # DbiResourceId / DbClusterResourceId of that database
    snapshot_type: str  # automated | manual | awsbackup | shared | public
    status: str
    created_at: datetime | None  # SnapshotCreateTime
    encrypted: bool
    kms_key_id: str | None = None
    engine: str = ""
    # Accounts the snapshot may be restored by ("all": everyone), from the `restore` attribute;
    # None when not read (automated snapshots cannot be shared, so they are not asked).
    restore_accounts: tuple[str, ...] | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = DB_SNAPSHOT

    @property
    def automated(self) -> bool:
        return self.snapshot_type == "automated"

    @property
    def public(self) -> bool:
        return "all" in (self.restore_accounts or ())

    @property
    def usable(self) -> bool:
        """A finished snapshot that a restore can start from."""
        return self.status == "available" and self.created_at is not None


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """What AWS Backup's ListProtectedResources says of a resource it has backed up."""

    resource_arn: str
    resource_type: str  # RDS | Aurora | ...
    last_backup: datetime | None
    vault_arn: str | None = None
    recovery_point_arn: str | None = None


@dataclass(frozen=True, slots=True)
class RdsSnapshot:
    target: Target
    collected_at: datetime
    instances: tuple[DbInstance, ...]
    clusters: tuple[DbCluster, ...]
    snapshots: tuple[DbSnapshot, ...] = ()
    # AWS Backup's protected resources by ARN; None when not read (rds-backup-plan is off, or the
    # read failed: the databases then carry an ASPECT_BACKUP_PLAN error)
    protected: Mapping[str, RecoveryPoint] | None = None
    region: RegionPosture | None = None  # AWS Config recorders of the account-region
    # the DB snapshots by (of a cluster, database identifier in lower case), indexed when this
    # is built (`snapshots_of`), so a database's are not found by a scan of all of them
    _by_database: Mapping[tuple[bool, str], tuple[DbSnapshot, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[bool, str], list[DbSnapshot]] = {}
        for s in self.snapshots:
            index.setdefault((s.cluster, s.db_identifier.lower()), []).append(s)
        object.__setattr__(
            self, "_by_database", MappingProxyType({k: tuple(v) for k, v in index.items()})
        )

    def resources(
        self, resource_type: str
    ) -> Sequence[DbInstance | DbCluster | DbSnapshot | RegionPosture]:
        if resource_type == DB_INSTANCE:
            return self.instances
        if resource_type == DB_CLUSTER:
            return self.clusters
        if resource_type == DATABASE:
            return self.databases()
        if resource_type == SNAPSHOT:
            return self.snapshots
        if resource_type in (DB_SNAPSHOT, DB_CLUSTER_SNAPSHOT):
            return tuple(s for s in self.snapshots if s.resource_type == resource_type)
        if resource_type == ACCOUNT_REGION:
            return (self.region,) if self.region is not None else ()
        return ()

    def resource_counts(self) -> Mapping[str, int]:
        counts = {DB_CLUSTER: len(self.clusters), DB_INSTANCE: len(self.instances)}
        for kind in (DB_SNAPSHOT, DB_CLUSTER_SNAPSHOT):
            counts[kind] = sum(1 for s in self.snapshots if s.resource_type == kind)
        return MappingProxyType(counts)

    def databases(self) -> tuple[Database, ...]:
        return (*self.clusters, *(i for i in self.instances if not i.is_cluster_member))

    def snapshots_of(self, db: Database) -> tuple[DbSnapshot, ...]:
        """The snapshots taken of this database (matched by resource id where both have one, so
        a database re-created under an old name does not inherit its predecessor's snapshots)."""
        named = self._by_database.get((isinstance(db, DbCluster), db.identifier.lower()), ())
        return tuple(
            s
            for s in named
            if not (s.db_resource_id and db.resource_id and s.db_resource_id != db.resource_id)
        )

    def newest_snapshot(self, db: Database) -> DbSnapshot | None:
        usable = [s for s in self.snapshots_of(db) if s.usable]
        return max(usable, key=lambda s: (s.created_at, s.identifier), default=None)

    def cluster(self, identifier: str) -> DbCluster | None:
        return next((c for c in self.clusters if c.identifier == identifier), None)
