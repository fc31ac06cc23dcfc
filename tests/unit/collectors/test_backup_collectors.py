"""The backup reads of the RDS and Lambda collectors on recorded answers (botocore-checked).

Covers what moto cannot produce: AWS Backup's ListProtectedResources (404 in moto), AWS Backup
snapshots (SnapshotType awsbackup), a snapshot deleted between listing and its attribute read,
denied snapshot and attribute reads, a cluster snapshot of another cluster's resource id,
DocumentDB cluster snapshots in the RDS API, export tasks of other log groups, and a layer
version of another account the owner does not let this account read.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from daemon.collectors.awslambda import LambdaCollector, _RegionData
from daemon.collectors.iam import RoleReader
from daemon.collectors.rds import RdsCollector
from daemon.model import awslambda as lam
from daemon.model import rds as m

from .recorded import FakeApi, context, error
from .test_rds_collector import ACCOUNT, CMK, REGION, answers, cluster

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def snapshot(ident: str, db: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "DBSnapshotIdentifier": ident,
        "DBInstanceIdentifier": db,
        "SnapshotCreateTime": NOW - dt.timedelta(hours=5),
        "Engine": "postgres",
        "AllocatedStorage": 100,
        "Status": "available",
        "Port": 6543,
        "AvailabilityZone": f"{REGION}a",
        "VpcId": "vpc-0a1b2c3d4e5f60000",
        "InstanceCreateTime": NOW - dt.timedelta(days=90),
        "MasterUsername": "app",
        "EngineVersion": "16.4",
        "LicenseModel": "postgresql-license",
        "SnapshotType": "automated" if ident.startswith("rds:") else "manual",
        "PercentProgress": 100,
        "StorageType": "gp3",
        "Encrypted": True,
        "KmsKeyId": CMK,
        "DBSnapshotArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:{ident}",
        "IAMDatabaseAuthenticationEnabled": True,
        "DbiResourceId": "db-ABCDEFGHIJKLMNOPQRSTUVWXY1",
        "TagList": [{"Key": "env", "Value": "prod"}],
        "SnapshotTarget": "region",
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}  # AWS leaves absent fields out


def cluster_snapshot(ident: str, db: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "AvailabilityZones": [f"{REGION}a", f"{REGION}b"],
        "DBClusterSnapshotIdentifier": ident,
        "DBClusterIdentifier": db,
        "SnapshotCreateTime": NOW - dt.timedelta(hours=2),
        "Engine": "aurora-postgresql",
        "EngineMode": "provisioned",
        "AllocatedStorage": 1,
        "Status": "available",
        "Port": 5432,
        "VpcId": "vpc-0a1b2c3d4e5f60000",
        "ClusterCreateTime": NOW - dt.timedelta(days=90),
        "MasterUsername": "app",
        "EngineVersion": "16.4",
        "SnapshotType": "automated" if ident.startswith("rds:") else "manual",
        "PercentProgress": 100,
        "StorageEncrypted": True,
        "KmsKeyId": CMK,
        "DBClusterSnapshotArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster-snapshot:{ident}",
        "IAMDatabaseAuthenticationEnabled": False,
        "DbClusterResourceId": "cluster-ABCDEFGHIJKLMNOPQRSTUVWXY2",
        "TagList": [],
    }
    raw.update(overrides)
    return raw


def attributes(ident: str, *accounts: str, cluster: bool = False) -> dict[str, Any]:
    if cluster:
        return {
            "DBClusterSnapshotAttributesResult": {
                "DBClusterSnapshotIdentifier": ident,
                "DBClusterSnapshotAttributes": [
                    {"AttributeName": "restore", "AttributeValues": list(accounts)}
                ],
            }
        }
    return {
        "DBSnapshotAttributesResult": {
            "DBSnapshotIdentifier": ident,
            "DBSnapshotAttributes": [
                {"AttributeName": "restore", "AttributeValues": list(accounts)}
            ],
        }
    }


def backup_answers(**extra: Any) -> dict[tuple[str, str], Any]:
    def instance_attributes(p: dict[str, Any]) -> Any:
        ident = p["DBSnapshotIdentifier"]
        if ident == "gone-meanwhile":
            return error("DBSnapshotNotFound")
        if ident == "locked":
            return error("AccessDenied")
        return attributes(ident, *({"public-copy": ["all"]}.get(ident, [])))

    table = answers()
    table[("rds", "describe_db_snapshots")] = {
        "DBSnapshots": [
            snapshot("rds:orders-2026-03-01-07-00", "orders"),
            snapshot("before-upgrade", "orders", SnapshotCreateTime=NOW - dt.timedelta(hours=1)),
            snapshot("public-copy", "orders", Encrypted=False, KmsKeyId=None),
            snapshot("gone-meanwhile", "orders"),
            snapshot("locked", "orders"),
            snapshot("awsbackup:job-1", "orders", SnapshotType="awsbackup", Status="creating"),
        ]
    }
    table[("rds", "describe_db_snapshot_attributes")] = instance_attributes
    table[("rds", "describe_db_cluster_snapshots")] = {
        "DBClusterSnapshots": [
            cluster_snapshot("rds:aurora-2026-03-01-10-00", "aurora"),
            cluster_snapshot("aurora-final", "aurora"),
            cluster_snapshot("docs-1", "docs", Engine="docdb"),
        ]
    }
    table[("rds", "describe_db_cluster_snapshot_attributes")] = lambda p: attributes(
        p["DBClusterSnapshotIdentifier"], "222233334444", cluster=True
    )
    table[("backup", "list_protected_resources")] = {
        "Results": [
            {
                "ResourceArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:aurora",
                "ResourceType": "Aurora",
                "LastBackupTime": NOW - dt.timedelta(hours=7),
                "ResourceName": "aurora",
                "LastBackupVaultArn": f"arn:aws:backup:{REGION}:{ACCOUNT}:backup-vault:prod",
                "LastRecoveryPointArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster-snapshot:"
                "awsbackup:job-2",
            }
        ]
    }
    table[("config", "describe_configuration_recorders")] = {
        "ConfigurationRecorders": [
            {
                "name": "default",
                "roleARN": f"arn:aws:iam::{ACCOUNT}:role/config",
                "recordingGroup": {
                    "allSupported": False,
                    "includeGlobalResourceTypes": False,
                    "resourceTypes": ["AWS::RDS::DBInstance", "AWS::RDS::DBCluster"],
                },
            }
        ]
    }
    table[("config", "describe_configuration_recorder_status")] = {
        "ConfigurationRecordersStatus": [{"name": "default", "recording": True}]
    }
    table.update({tuple(k.split(".", 1)): v for k, v in extra.items()})  # type: ignore[misc]
    return table


async def test_rds_snapshots_attributes_protection_and_recorders() -> None:
    api = FakeApi(backup_answers(), ACCOUNT, REGION)
    snap = await RdsCollector().collect(context(api, "rds"))
    by_id = {s.identifier: s for s in snap.snapshots}
    # the deleted-meanwhile snapshot is gone; DocumentDB's cluster snapshot is not RDS
    assert sorted(by_id) == [
        "aurora-final",
        "awsbackup:job-1",
        "before-upgrade",
        "locked",
        "public-copy",
        "rds:aurora-2026-03-01-10-00",
        "rds:orders-2026-03-01-07-00",
    ]
    assert by_id["public-copy"].public and not by_id["public-copy"].encrypted
    assert by_id["before-upgrade"].restore_accounts == ()
    assert by_id["aurora-final"].restore_accounts == ("222233334444",)
    assert (
        by_id["aurora-final"].resource_type == m.DB_CLUSTER_SNAPSHOT
        and by_id["aurora-final"].cluster
    )
    assert by_id["locked"].errors == {m.ASPECT_SNAPSHOT_ATTRIBUTES: "AccessDenied"}
    # automated and AWS Backup snapshots are never asked who may restore them
    assert by_id["rds:orders-2026-03-01-07-00"].restore_accounts is None
    assert api.count("rds", "describe_db_snapshot_attributes") == 4  # the manual ones
    assert api.count("rds", "describe_db_cluster_snapshot_attributes") == 1
    orders = next(i for i in snap.instances if i.identifier == "orders")
    aurora = snap.clusters[0]
    # the newest usable snapshot: the creating AWS Backup one does not count yet
    assert snap.newest_snapshot(orders).identifier == "before-upgrade"  # type: ignore[union-attr]
    assert snap.newest_snapshot(aurora).identifier in {
        "aurora-final",
        "rds:aurora-2026-03-01-10-00",
    }  # type: ignore[union-attr]
    assert snap.protected is not None and set(snap.protected) == {aurora.arn}
    assert snap.protected[aurora.arn].last_backup == NOW - dt.timedelta(hours=7)
    assert snap.region is not None and snap.region.config_recorders[0].records(
        "AWS::RDS::DBCluster"
    )
    assert dict(snap.resource_counts())[m.DB_SNAPSHOT] == 5


async def test_denied_listings_mark_every_database_and_leave_nothing_guessed() -> None:
    api = FakeApi(
        backup_answers(
            **{
                "rds.describe_db_cluster_snapshots": error("AccessDenied"),
                "backup.list_protected_resources": error("AccessDeniedException"),
            }
        ),
        ACCOUNT,
        REGION,
    )
    snap = await RdsCollector().collect(context(api, "rds"))
    assert snap.snapshots == () and snap.protected is None
    for db in snap.databases():
        assert db.errors.get(m.ASPECT_SNAPSHOTS) == "AccessDenied"
        assert db.errors.get(m.ASPECT_BACKUP_PLAN) == "AccessDeniedException"


async def test_opt_in_reads_are_skipped_while_their_controls_are_off() -> None:
    api = FakeApi(backup_answers(), ACCOUNT, REGION)
    enabled = frozenset({"rds-backup-age", "rds-snapshot-encrypted"})
    snap = await RdsCollector().collect(context(api, "rds", enabled))
    assert api.count("backup", "list_protected_resources") == 0 and snap.protected is None
    assert api.count("config", "describe_configuration_recorders") == 0 and snap.region is None


def test_snapshots_of_a_cluster_with_another_resource_id_are_not_its_own() -> None:
    from daemon.collectors.rds import db_cluster, db_snapshot

    aurora = db_cluster(cluster("aurora"), ACCOUNT, REGION)
    mine = db_snapshot(cluster_snapshot("a", "aurora"), ACCOUNT, REGION, cluster=True)
    old = db_snapshot(
        cluster_snapshot("b", "aurora", DbClusterResourceId="cluster-PREVIOUS"),
        ACCOUNT,
        REGION,
        cluster=True,
    )
    same_name = db_snapshot(snapshot("c", "aurora"), ACCOUNT, REGION, cluster=False)
    snap = m.RdsSnapshot(None, NOW, (), (aurora,), (mine, old, same_name))  # type: ignore[arg-type]
    assert snap.snapshots_of(aurora) == (mine,)
    orders = m.DbInstance("arn", "orders", ACCOUNT, REGION, "postgres")
    assert snap.newest_snapshot(orders) is None


# --- Lambda ------------------------------------------------------------------------------------


LOG_GROUP = "/aws/lambda/orders"
VENDOR = f"arn:aws:lambda:{REGION}:999988887777:layer:vendor:4"
PRIVATE = f"arn:aws:lambda:{REGION}:999988887777:layer:private:2"
GONE = f"arn:aws:lambda:{REGION}:999988887777:layer:vendor:3"


def lambda_answers(**extra: Any) -> dict[tuple[str, str], Any]:
    def layer(p: dict[str, Any]) -> Any:
        if p["Arn"] == GONE:
            return error("ResourceNotFoundException")
        if p["Arn"] == PRIVATE:
            return error("AccessDeniedException")
        return {
            "Content": {"CodeSha256": "abc", "CodeSize": 100},
            "LayerArn": p["Arn"].rsplit(":", 1)[0],
            "LayerVersionArn": p["Arn"],
            "Version": int(p["Arn"].rsplit(":", 1)[1]),
            "CreatedDate": "2025-11-01T10:00:00.000+0000",
        }

    table: dict[tuple[str, str], Any] = {
        ("lambda", "get_layer_version_by_arn"): layer,
        ("logs", "describe_export_tasks"): {
            "exportTasks": [
                {
                    "taskId": "t1",
                    "logGroupName": LOG_GROUP,
                    "from": 1,
                    "to": int((NOW - dt.timedelta(hours=30)).timestamp() * 1000),
                    "destination": "log-archive",
                    "status": {"code": "COMPLETED"},
                },
                {
                    "taskId": "t2",
                    "logGroupName": LOG_GROUP,
                    "from": 1,
                    "to": int((NOW - dt.timedelta(hours=6)).timestamp() * 1000),
                    "destination": "log-archive",
                    "status": {"code": "COMPLETED"},
                },
                {
                    "taskId": "t3",
                    "logGroupName": "/aws/lambda/someone-else",
                    "from": 1,
                    "to": int(NOW.timestamp() * 1000),
                    "destination": "log-archive",
                    "status": {"code": "COMPLETED"},
                },
            ]
        },
        ("logs", "describe_subscription_filters"): {
            "subscriptionFilters": [
                {
                    "filterName": "central",
                    "logGroupName": LOG_GROUP,
                    "filterPattern": "",
                    "destinationArn": f"arn:aws:logs:{REGION}:555566667777:destination:central",
                    "distribution": "ByLogStream",
                    "creationTime": 1,
                }
            ]
        },
    }
    table.update({tuple(k.split(".", 1)): v for k, v in extra.items()})  # type: ignore[misc]
    return table


def group() -> lam.LogGroup:
    return lam.LogGroup(LOG_GROUP, f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{LOG_GROUP}:*", 30)


async def test_log_export_reads_filters_and_the_newest_completed_task() -> None:
    api = FakeApi(lambda_answers(), ACCOUNT, REGION)
    collector = LambdaCollector(RoleReader(60))
    groups, errors = await collector._log_export(context(api, "lambda"), {LOG_GROUP: group()})
    found = groups[LOG_GROUP]
    assert errors == {}
    assert found.subscription_filters == 1
    assert found.subscription_destinations == (
        f"arn:aws:logs:{REGION}:555566667777:destination:central",
    )
    assert found.last_export_task is not None
    assert abs((NOW - found.last_export_task) - dt.timedelta(hours=6)) < dt.timedelta(seconds=1)
    assert api.calls[0] == ("logs", "describe_export_tasks", {"statusCode": "COMPLETED"})
    # off: no call at all, the aspect stays unread (None), never "no filters"
    off = FakeApi({}, ACCOUNT, REGION)
    groups, _ = await collector._log_export(
        context(off, "lambda", frozenset({"lambda-log-retention"})), {LOG_GROUP: group()}
    )
    assert off.calls == [] and groups[LOG_GROUP].subscription_filters is None


async def test_log_export_denied() -> None:
    api = FakeApi(
        lambda_answers(**{"logs.describe_subscription_filters": error("AccessDeniedException")}),
        ACCOUNT,
        REGION,
    )
    collector = LambdaCollector(RoleReader(60))
    _, errors = await collector._log_export(context(api, "lambda"), {LOG_GROUP: group()})
    assert errors == {LOG_GROUP: "AccessDeniedException"}


async def test_foreign_layers_exist_are_gone_or_unreadable() -> None:
    api = FakeApi(lambda_answers(), ACCOUNT, REGION)
    own = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:common:1"
    functions = [
        {"FunctionName": "a", "Layers": [{"Arn": VENDOR}, {"Arn": own}]},
        {"FunctionName": "b", "Layers": [{"Arn": VENDOR}, {"Arn": GONE}, {"Arn": PRIVATE}]},
    ]
    collector, ctx = LambdaCollector(RoleReader(60)), context(api, "lambda")
    found = await collector._foreign_layers(ctx, collector._foreign_layer_arns(ctx, functions))
    assert found == {VENDOR: True, GONE: False, PRIVATE: "AccessDeniedException"}
    assert api.count("lambda", "get_layer_version_by_arn") == 3  # once per ARN, own ones never
    assert _RegionData.__dataclass_fields__["foreign_layers"]  # the shared lookup the functions use
