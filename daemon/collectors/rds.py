"""Amazon RDS: DB instances and DB clusters, their security groups and KMS keys, their snapshots
and backups, and the AWS Config recorders of the account-region.

DescribeDBInstances and DescribeDBClusters return everything the controls need, tags included;
the security groups in use are read with one DescribeSecurityGroups per target, and each distinct
KMS key with one DescribeKey. The RDS API also lists Amazon DocumentDB and Neptune resources:
those are not RDS databases and are skipped.

Backups: DescribeDBSnapshots and DescribeDBClusterSnapshots (automated, manual and AWS Backup's
snapshots, one paginated walk each per target); the `restore` attribute of each *manual* snapshot
(Describe*SnapshotAttributes: who may restore it; automated snapshots cannot be shared); and,
only while the opt-in rds-backup-plan control may run, AWS Backup's ListProtectedResources (one
paginated walk per target).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from daemon.aws.errors import AwsError, ErrorKind
from daemon.collectors import ec2, kms, region
from daemon.collectors.base import (
    AspectErrors,
    CollectContext,
    Operation,
    concurrently,
    parse_timestamp,
)
from daemon.collectors.cache import DetailCache, Lookups, digest
from daemon.model import frozen_errors, frozen_tags
from daemon.model import rds as m
from daemon.model.awslambda import RegionPosture
from daemon.model.ec2 import SecurityGroup
from daemon.model.kms import KmsKey

SERVICE = "rds"

OPERATIONS: tuple[Operation, ...] = (
    Operation("rds", "DescribeDBInstances", "rds:DescribeDBInstances"),
    Operation("rds", "DescribeDBClusters", "rds:DescribeDBClusters"),
    Operation("rds", "DescribeDBSnapshots", "rds:DescribeDBSnapshots"),
    Operation("rds", "DescribeDBClusterSnapshots", "rds:DescribeDBClusterSnapshots"),
    Operation("rds", "DescribeDBSnapshotAttributes", "rds:DescribeDBSnapshotAttributes"),
    Operation(
        "rds", "DescribeDBClusterSnapshotAttributes", "rds:DescribeDBClusterSnapshotAttributes"
    ),
    # a plain read, granted with the rest; called only while rds-backup-plan may run
    Operation("backup", "ListProtectedResources", "backup:ListProtectedResources"),
    *ec2.OPERATIONS,
    *kms.OPERATIONS,
    *region.CONFIG_OPERATIONS,
)

NOT_RDS_ENGINES = frozenset({"docdb", "neptune"})
BACKUP_PLAN_CONTROL = "rds-backup-plan"
CONFIG_CONTROL = "rds-config-recording"

D = TypeVar("D", m.DbInstance, m.DbCluster)


def _tags(raw: dict[str, Any]) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value", "")) for t in raw.get("TagList") or []}


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _sg_ids(raw: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        str(g["VpcSecurityGroupId"])
        for g in raw.get("VpcSecurityGroups") or []
        if g.get("VpcSecurityGroupId")
    )


def db_instance(raw: dict[str, Any], account_id: str, region: str) -> m.DbInstance:
    """A DescribeDBInstances entry as a frozen value (no I/O; security groups and keys later)."""
    endpoint = raw.get("Endpoint") or {}
    port = endpoint.get("Port") or raw.get("DbInstancePort") or None
    identifier = str(raw.get("DBInstanceIdentifier", ""))
    return m.DbInstance(
        arn=str(raw.get("DBInstanceArn") or f"arn:aws:rds:{region}:{account_id}:db:{identifier}"),
        identifier=identifier,
        account_id=account_id,
        region=region,
        engine=str(raw.get("Engine", "")),
        engine_version=str(raw.get("EngineVersion", "")),
        instance_class=str(raw.get("DBInstanceClass", "")),
        status=str(raw.get("DBInstanceStatus", "")),
        cluster_id=raw.get("DBClusterIdentifier") or None,
        port=_int(port) or None,
        publicly_accessible=bool(raw.get("PubliclyAccessible")),
        multi_az=bool(raw.get("MultiAZ")),
        availability_zone=raw.get("AvailabilityZone"),
        secondary_availability_zone=raw.get("SecondaryAvailabilityZone"),
        storage_encrypted=bool(raw.get("StorageEncrypted")),
        kms_key_id=raw.get("KmsKeyId") or None,
        deletion_protection=bool(raw.get("DeletionProtection")),
        auto_minor_version_upgrade=bool(raw.get("AutoMinorVersionUpgrade")),
        iam_auth=bool(raw.get("IAMDatabaseAuthenticationEnabled")),
        monitoring_interval=_int(raw.get("MonitoringInterval")),
        monitoring_role_arn=raw.get("MonitoringRoleArn") or None,
        log_exports=tuple(raw.get("EnabledCloudwatchLogsExports") or ()),
        security_group_ids=_sg_ids(raw),
        backup_retention_days=_int(raw.get("BackupRetentionPeriod")),
        preferred_backup_window=raw.get("PreferredBackupWindow"),
        latest_restorable_time=parse_timestamp(raw.get("LatestRestorableTime")),
        copy_tags_to_snapshot=bool(raw.get("CopyTagsToSnapshot")),
        read_replica_source=raw.get("ReadReplicaSourceDBInstanceIdentifier") or None,
        read_replicas=tuple(raw.get("ReadReplicaDBInstanceIdentifiers") or ()),
        backup_target=raw.get("BackupTarget"),
        resource_id=raw.get("DbiResourceId"),
        created_at=parse_timestamp(raw.get("InstanceCreateTime")),
        tags=frozen_tags(_tags(raw)),
    )


def db_cluster(raw: dict[str, Any], account_id: str, region: str) -> m.DbCluster:
    """A DescribeDBClusters entry as a frozen value (no I/O; security groups and keys later)."""
    identifier = str(raw.get("DBClusterIdentifier", ""))
    monitoring = raw.get("MonitoringInterval")
    return m.DbCluster(
        arn=str(
            raw.get("DBClusterArn") or f"arn:aws:rds:{region}:{account_id}:cluster:{identifier}"
        ),
        identifier=identifier,
        account_id=account_id,
        region=region,
        engine=str(raw.get("Engine", "")),
        engine_version=str(raw.get("EngineVersion", "")),
        engine_mode=raw.get("EngineMode"),
        status=str(raw.get("Status", "")),
        port=_int(raw.get("Port")) or None,
        publicly_accessible=raw.get("PubliclyAccessible"),
        multi_az=bool(raw.get("MultiAZ")),
        availability_zones=tuple(raw.get("AvailabilityZones") or ()),
        storage_encrypted=bool(raw.get("StorageEncrypted")),
        kms_key_id=raw.get("KmsKeyId") or None,
        deletion_protection=bool(raw.get("DeletionProtection")),
        auto_minor_version_upgrade=raw.get("AutoMinorVersionUpgrade"),
        iam_auth=bool(raw.get("IAMDatabaseAuthenticationEnabled")),
        monitoring_interval=None if monitoring is None else _int(monitoring),
        log_exports=tuple(raw.get("EnabledCloudwatchLogsExports") or ()),
        security_group_ids=_sg_ids(raw),
        members=tuple(
            m.ClusterMember(str(x.get("DBInstanceIdentifier", "")), bool(x.get("IsClusterWriter")))
            for x in raw.get("DBClusterMembers") or []
        ),
        backup_retention_days=_int(raw.get("BackupRetentionPeriod")),
        preferred_backup_window=raw.get("PreferredBackupWindow"),
        earliest_restorable_time=parse_timestamp(raw.get("EarliestRestorableTime")),
        latest_restorable_time=parse_timestamp(raw.get("LatestRestorableTime")),
        copy_tags_to_snapshot=bool(raw.get("CopyTagsToSnapshot")),
        backtrack_window_seconds=raw.get("BacktrackWindow"),
        resource_id=raw.get("DbClusterResourceId"),
        created_at=parse_timestamp(raw.get("ClusterCreateTime")),
        tags=frozen_tags(_tags(raw)),
    )


def db_snapshot(raw: dict[str, Any], account_id: str, region: str, cluster: bool) -> m.DbSnapshot:
    """A DescribeDBSnapshots / DescribeDBClusterSnapshots entry as a frozen value."""
    if cluster:
        identifier = str(raw.get("DBClusterSnapshotIdentifier", ""))
        arn = raw.get("DBClusterSnapshotArn") or (
            f"arn:aws:rds:{region}:{account_id}:cluster-snapshot:{identifier}"
        )
        db_identifier = str(raw.get("DBClusterIdentifier", ""))
        resource_id = raw.get("DbClusterResourceId")
        encrypted = bool(raw.get("StorageEncrypted"))
    else:
        identifier = str(raw.get("DBSnapshotIdentifier", ""))
        arn = raw.get("DBSnapshotArn") or f"arn:aws:rds:{region}:{account_id}:snapshot:{identifier}"
        db_identifier = str(raw.get("DBInstanceIdentifier", ""))
        resource_id = raw.get("DbiResourceId")
        encrypted = bool(raw.get("Encrypted"))
    return m.DbSnapshot(
        arn=str(arn),
        identifier=identifier,
        account_id=account_id,
        region=region,
        cluster=cluster,
        db_identifier=db_identifier,
        db_resource_id=resource_id or None,
        snapshot_type=str(raw.get("SnapshotType") or ""),
        status=str(raw.get("Status") or ""),
        created_at=parse_timestamp(raw.get("SnapshotCreateTime")),
        encrypted=encrypted,
        kms_key_id=raw.get("KmsKeyId") or None,
        engine=str(raw.get("Engine") or ""),
        tags=frozen_tags(_tags(raw)),
        resource_type=m.DB_CLUSTER_SNAPSHOT if cluster else m.DB_SNAPSHOT,
    )


class RdsCollector:
    service = SERVICE
    operations = OPERATIONS

    def __init__(self, details: DetailCache[tuple[str, ...]] | None = None) -> None:
        # the `restore` attribute of each manual snapshot (who may restore it): re-read when the
        # snapshot is new, on the rolling refresh, or after a change event
        self.details: DetailCache[tuple[str, ...]] = details or DetailCache(0)
        # AWS Config recorders, security groups and KMS keys: read again when the databases name
        # others, after a change event, or on the rolling refresh
        self.lookups = Lookups(self.details.max_age, self.details.lookahead)

    def invalidate(self, account_id: str, region: str, resource: str | None = None) -> None:
        """Forget cached snapshot attributes: one snapshot by ARN, or all of the account-region."""
        self.details.invalidate((account_id, region), resource)
        self.lookups.invalidate((account_id, region))

    async def collect(self, ctx: CollectContext) -> m.RdsSnapshot:
        t = ctx.target

        async def posture_of() -> RegionPosture | None:
            if not ctx.wants(CONFIG_CONTROL):
                return None
            return await ctx.lookup(
                self.lookups,
                "config-recorders",
                lambda: region.collect_region(ctx, trails=False),
                ok=lambda posture: not posture.errors,
            )

        # independent listings at once; what depends on the databases follows
        (
            listed_instances,
            listed_clusters,
            (snapshots, snapshots_error),
            protected_of,
            posture,
        ) = await concurrently(
            ctx.api.all_items("rds", "describe_db_instances", "DBInstances"),
            ctx.api.all_items("rds", "describe_db_clusters", "DBClusters"),
            self._snapshots(ctx),
            self._protected(ctx),
            posture_of(),
        )
        protected, protected_error = protected_of
        raw_instances = [r for r in listed_instances if r.get("Engine") not in NOT_RDS_ENGINES]
        raw_clusters = [r for r in listed_clusters if r.get("Engine") not in NOT_RDS_ENGINES]
        instances = [db_instance(r, t.account_id, t.region) for r in raw_instances]
        clusters = [db_cluster(r, t.account_id, t.region) for r in raw_clusters]
        databases: list[m.Database] = [*instances, *clusters]

        group_ids = sorted({g for db in databases for g in db.security_group_ids})
        key_ids = [db.kms_key_id for db in databases if db.storage_encrypted and db.kms_key_id]
        (groups, groups_error), keys = await concurrently(
            ctx.lookup(
                self.lookups,
                "security-groups",
                lambda: ec2.security_groups(ctx, group_ids),
                key=digest(group_ids),
                ok=lambda found: found[1] is None,
            ),
            kms.cached_keys(ctx, self.lookups, key_ids),
        )
        shared = {
            m.ASPECT_SNAPSHOTS: snapshots_error,
            m.ASPECT_BACKUP_PLAN: protected_error,
        }
        return m.RdsSnapshot(
            target=t,
            collected_at=ctx.now,
            instances=tuple(
                sorted(
                    (self._resolve(ctx, i, groups, groups_error, keys, shared) for i in instances),
                    key=lambda i: i.arn,
                )
            ),
            clusters=tuple(
                sorted(
                    (self._resolve(ctx, c, groups, groups_error, keys, shared) for c in clusters),
                    key=lambda c: c.arn,
                )
            ),
            snapshots=tuple(sorted(snapshots, key=lambda x: x.arn)),
            protected=protected,
            region=posture,
        )

    # --- backups ---------------------------------------------------------------------------------

    async def _snapshots(self, ctx: CollectContext) -> tuple[list[m.DbSnapshot], str | None]:
        """Every DB and DB cluster snapshot of the target, with the `restore` attribute of the
        manual ones. A denied listing is an aspect error on every database (returned here)."""
        t = ctx.target
        try:
            raw_instance = await ctx.api.all_items("rds", "describe_db_snapshots", "DBSnapshots")
            raw_cluster = await ctx.api.all_items(
                "rds", "describe_db_cluster_snapshots", "DBClusterSnapshots"
            )
        except AwsError as err:
            if err.kind.retryable:
                raise
            return [], err.code
        found = [
            db_snapshot(r, t.account_id, t.region, cluster=False)
            for r in raw_instance
            if r.get("Engine") not in NOT_RDS_ENGINES
        ] + [
            db_snapshot(r, t.account_id, t.region, cluster=True)
            for r in raw_cluster
            if r.get("Engine") not in NOT_RDS_ENGINES
        ]
        self.details.retain((t.account_id, t.region), (snap.arn for snap in found))
        read = await ctx.gather(found, lambda snap: self._restore_attribute(ctx, snap))
        return [s for s in read if s is not None], None

    async def _restore_attribute(
        self, ctx: CollectContext, snap: m.DbSnapshot
    ) -> m.DbSnapshot | None:
        """Who may restore a manual snapshot (None: it was deleted since it was listed)."""
        if snap.snapshot_type != "manual":
            return snap  # automated and AWS Backup snapshots cannot be shared
        scope = (ctx.target.account_id, ctx.target.region)
        now = ctx.now.timestamp()
        key = (str(snap.created_at), snap.status)
        entry = self.details.get(scope, snap.arn, key, now)
        if entry is not None:
            ctx.served(entry.fetched_at)
            return replace(snap, restore_accounts=entry.value)
        if snap.cluster:
            call = ctx.api.call(
                "rds",
                "describe_db_cluster_snapshot_attributes",
                DBClusterSnapshotIdentifier=snap.identifier,
            )
            result_key, list_key = (
                "DBClusterSnapshotAttributesResult",
                "DBClusterSnapshotAttributes",
            )
        else:
            call = ctx.api.call(
                "rds", "describe_db_snapshot_attributes", DBSnapshotIdentifier=snap.identifier
            )
            result_key, list_key = "DBSnapshotAttributesResult", "DBSnapshotAttributes"
        try:
            resp = await call
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return None
            if err.kind.retryable:
                raise
            self.details.discard(scope, snap.arn)
            return replace(snap, errors=frozen_errors({m.ASPECT_SNAPSHOT_ATTRIBUTES: err.code}))
        attributes = (resp.get(result_key) or {}).get(list_key) or []
        accounts = next(
            (
                tuple(str(v) for v in a.get("AttributeValues") or [])
                for a in attributes
                if a.get("AttributeName") == "restore"
            ),
            (),
        )
        self.details.put(scope, snap.arn, key, accounts, now)
        ctx.served(now)
        return replace(snap, restore_accounts=accounts)

    @staticmethod
    async def _protected(
        ctx: CollectContext,
    ) -> tuple[Mapping[str, m.RecoveryPoint] | None, str | None]:
        """AWS Backup's protected resources of the account-region, by ARN (only while the opt-in
        rds-backup-plan control may run: otherwise None, and no call)."""
        if not ctx.wants(BACKUP_PLAN_CONTROL):
            return None, None
        try:
            items = await ctx.api.all_items("backup", "list_protected_resources", "Results")
        except AwsError as err:
            if err.kind.retryable:
                raise
            return None, err.code
        out: dict[str, m.RecoveryPoint] = {}
        for r in items:
            arn = str(r.get("ResourceArn") or "")
            if not arn:
                continue
            out[arn] = m.RecoveryPoint(
                resource_arn=arn,
                resource_type=str(r.get("ResourceType") or ""),
                last_backup=parse_timestamp(r.get("LastBackupTime")),
                vault_arn=r.get("LastBackupVaultArn"),
                recovery_point_arn=r.get("LastRecoveryPointArn"),
            )
        return out, None

    @staticmethod
    def _resolve(
        ctx: CollectContext,
        db: D,
        groups: Mapping[str, SecurityGroup],
        groups_error: str | None,
        keys: Mapping[str, KmsKey | str],
        shared_errors: Mapping[str, str | None],
    ) -> D:
        """The database with its security groups and KMS key filled in, and aspect errors."""
        errors = AspectErrors()
        for aspect, code in shared_errors.items():
            if code:
                errors.fail(aspect, code)
        resolved: list[SecurityGroup] = []
        if groups_error:
            errors.fail(m.ASPECT_SECURITY_GROUPS, groups_error)
        else:
            missing = [g for g in db.security_group_ids if g not in groups]
            resolved = [groups[g] for g in db.security_group_ids if g in groups]
            if missing:
                errors.fail(m.ASPECT_SECURITY_GROUPS, "SecurityGroupNotFound")
                ctx.issue(
                    db.arn, m.ASPECT_SECURITY_GROUPS, f"security group(s) not found: {missing}"
                )
        key: KmsKey | None = None
        if db.storage_encrypted and db.kms_key_id:
            found = keys.get(db.kms_key_id)
            if isinstance(found, str):
                errors.fail(m.ASPECT_KMS_KEY, found)
            else:
                key = found
        return replace(
            db,
            security_groups=tuple(resolved),
            kms_key=key,
            errors=frozen_errors(errors.errors),
        )
