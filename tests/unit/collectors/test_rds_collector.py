"""The RDS collector on recorded DescribeDBInstances/DescribeDBClusters answers (botocore-checked).

Covers what moto cannot produce: an AWS-managed KMS key (KeyManager AWS; moto marks every key
CUSTOMER), DocumentDB and Neptune resources in the RDS API, denied DescribeKey /
DescribeSecurityGroups, and a vanished security group.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from daemon.aws.errors import AwsError
from daemon.collectors.rds import RdsCollector
from daemon.controls.registry import EvalContext, get_control
from daemon.model import Status
from daemon.model import rds as m

from .recorded import FakeApi, context, error

ACCOUNT, REGION = "111122223333", "eu-west-1"
CMK = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
AWS_RDS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0987dcba-09fe-87dc-65ba-ab0987654321"
CREATED = dt.datetime(2025, 11, 3, 9, 30, tzinfo=dt.UTC)


def instance(identifier: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "DBInstanceIdentifier": identifier,
        "DBInstanceClass": "db.m6g.large",
        "Engine": "postgres",
        "DBInstanceStatus": "available",
        "MasterUsername": "app",
        "Endpoint": {
            "Address": f"{identifier}.c9akciq32.{REGION}.rds.amazonaws.com",
            "Port": 6543,
            "HostedZoneId": "Z1TTGA775OQIYO",
        },
        "AllocatedStorage": 100,
        "InstanceCreateTime": CREATED,
        "PreferredBackupWindow": "02:00-02:30",
        "BackupRetentionPeriod": 14,
        "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-0a1b2c3d4e5f60001", "Status": "active"}],
        "AvailabilityZone": f"{REGION}a",
        "SecondaryAvailabilityZone": f"{REGION}b",
        "PreferredMaintenanceWindow": "sun:03:00-sun:03:30",
        "LatestRestorableTime": CREATED + dt.timedelta(days=90),
        "MultiAZ": True,
        "EngineVersion": "16.4",
        "AutoMinorVersionUpgrade": True,
        "ReadReplicaDBInstanceIdentifiers": [],
        "PubliclyAccessible": False,
        "StorageType": "gp3",
        "DbInstancePort": 0,
        "StorageEncrypted": True,
        "KmsKeyId": CMK,
        "DbiResourceId": "db-ABCDEFGHIJKLMNOPQRSTUVWXY1",
        "CopyTagsToSnapshot": True,
        "MonitoringInterval": 60,
        "MonitoringRoleArn": f"arn:aws:iam::{ACCOUNT}:role/rds-monitoring-role",
        "DBInstanceArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:db:{identifier}",
        "IAMDatabaseAuthenticationEnabled": True,
        "EnabledCloudwatchLogsExports": ["postgresql", "upgrade"],
        "DeletionProtection": True,
        "TagList": [{"Key": "env", "Value": "prod"}],
        "BackupTarget": "region",
    }
    raw.update(overrides)
    return raw


def cluster(identifier: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "AvailabilityZones": [f"{REGION}a", f"{REGION}b", f"{REGION}c"],
        "BackupRetentionPeriod": 7,
        "DBClusterIdentifier": identifier,
        "Status": "available",
        "EarliestRestorableTime": CREATED,
        "Endpoint": f"{identifier}.cluster-c9akciq32.{REGION}.rds.amazonaws.com",
        "MultiAZ": True,
        "Engine": "aurora-postgresql",
        "EngineVersion": "16.4",
        "LatestRestorableTime": CREATED + dt.timedelta(days=90),
        "Port": 5432,
        "MasterUsername": "app",
        "PreferredBackupWindow": "01:00-01:30",
        "DBClusterMembers": [
            {"DBInstanceIdentifier": f"{identifier}-1", "IsClusterWriter": True},
            {"DBInstanceIdentifier": f"{identifier}-2", "IsClusterWriter": False},
        ],
        "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-0a1b2c3d4e5f60002", "Status": "active"}],
        "StorageEncrypted": True,
        "KmsKeyId": AWS_RDS_KEY,
        "DbClusterResourceId": "cluster-ABCDEFGHIJKLMNOPQRSTUVWXY2",
        "DBClusterArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:{identifier}",
        "IAMDatabaseAuthenticationEnabled": False,
        "ClusterCreateTime": CREATED,
        "EnabledCloudwatchLogsExports": ["postgresql"],
        "EngineMode": "provisioned",
        "DeletionProtection": True,
        "CopyTagsToSnapshot": True,
        "TagList": [{"Key": "env", "Value": "prod"}],
    }
    raw.update(overrides)
    return raw


def security_group(group_id: str, *permissions: dict[str, Any]) -> dict[str, Any]:
    return {
        "GroupId": group_id,
        "GroupName": f"db-{group_id[-4:]}",
        "Description": "database",
        "OwnerId": ACCOUNT,
        "VpcId": "vpc-0a1b2c3d4e5f60000",
        "IpPermissions": list(permissions),
        "IpPermissionsEgress": [],
        "SecurityGroupArn": f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{group_id}",
    }


def key(arn: str, manager: str) -> dict[str, Any]:
    return {
        "KeyMetadata": {
            "AWSAccountId": ACCOUNT,
            "KeyId": arn.rsplit("/", 1)[-1],
            "Arn": arn,
            "Enabled": True,
            "KeyState": "Enabled",
            "KeyManager": manager,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "Origin": "AWS_KMS",
        }
    }


def answers(**overrides: Any) -> dict[tuple[str, str], Any]:
    base: dict[tuple[str, str], Any] = {
        ("rds", "describe_db_instances"): {
            "DBInstances": [
                instance("orders"),
                instance(
                    "aurora-1",
                    Engine="aurora-postgresql",
                    DBClusterIdentifier="aurora",
                    KmsKeyId=AWS_RDS_KEY,
                    VpcSecurityGroups=[
                        {"VpcSecurityGroupId": "sg-0a1b2c3d4e5f60002", "Status": "active"}
                    ],
                    DeletionProtection=False,
                    EnabledCloudwatchLogsExports=[],
                ),
                instance("docs", Engine="docdb"),
            ]
        },
        ("rds", "describe_db_clusters"): {
            "DBClusters": [cluster("aurora"), cluster("graph", Engine="neptune")]
        },
        ("ec2", "describe_security_groups"): {
            "SecurityGroups": [
                security_group(
                    "sg-0a1b2c3d4e5f60001",
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 6000,
                        "ToPort": 7000,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "temporary"}],
                    },
                ),
                security_group(
                    "sg-0a1b2c3d4e5f60002",
                    {
                        "IpProtocol": "-1",
                        "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
                        "UserIdGroupPairs": [{"GroupId": "sg-0a1b2c3d4e5f60009"}],
                    },
                ),
            ]
        },
        ("kms", "describe_key"): lambda p: key(
            CMK if p["KeyId"] == CMK else AWS_RDS_KEY, "CUSTOMER" if p["KeyId"] == CMK else "AWS"
        ),
    }
    # backups, AWS Backup and AWS Config: none here (tests/unit/collectors/test_backup_collectors.py)
    base[("rds", "describe_db_snapshots")] = {"DBSnapshots": []}
    base[("rds", "describe_db_cluster_snapshots")] = {"DBClusterSnapshots": []}
    base[("backup", "list_protected_resources")] = {"Results": []}
    base[("config", "describe_configuration_recorders")] = {"ConfigurationRecorders": []}
    base[("config", "describe_configuration_recorder_status")] = {
        "ConfigurationRecordersStatus": []
    }
    base.update({tuple(k.split(".", 1)): v for k, v in overrides.items()})  # type: ignore[misc]
    return base


async def collect(api: FakeApi) -> tuple[m.RdsSnapshot, Any]:
    ctx = context(api, "rds")
    snapshot = await RdsCollector().collect(ctx)
    return snapshot, ctx


def evaluate(control_id: str, resource: Any, snapshot: m.RdsSnapshot, **params: Any) -> Any:
    ctrl = get_control(control_id)
    ctx = EvalContext(
        now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC), target=snapshot.target, snapshot=snapshot
    )
    return ctrl.evaluate(resource, ctrl.params_model.model_validate(params), ctx)


async def test_instances_and_clusters_with_groups_and_keys() -> None:
    api = FakeApi(answers(), ACCOUNT, REGION)
    snapshot, ctx = await collect(api)
    # DocumentDB and Neptune come through the RDS API but are not RDS databases
    assert [i.identifier for i in snapshot.instances] == ["aurora-1", "orders"]
    assert [c.identifier for c in snapshot.clusters] == ["aurora"]
    assert dict(snapshot.resource_counts()) == {
        m.DB_CLUSTER: 1,
        m.DB_INSTANCE: 2,
        m.DB_SNAPSHOT: 0,
        m.DB_CLUSTER_SNAPSHOT: 0,
    }
    # rds-database: the cluster and the standalone instance, not the cluster member
    assert [d.identifier for d in snapshot.resources(m.DATABASE)] == ["aurora", "orders"]

    orders = next(i for i in snapshot.instances if i.identifier == "orders")
    assert orders.port == 6543 and orders.engine_version == "16.4"
    assert orders.kms_key is not None and orders.kms_key.customer_managed
    assert orders.security_groups[0].ingress[0].cidrs == ("0.0.0.0/0",)
    assert orders.log_exports == ("postgresql", "upgrade")
    assert orders.backup_retention_days == 14 and orders.backup_target == "region"
    assert orders.latest_restorable_time == CREATED + dt.timedelta(days=90)
    assert orders.created_at == CREATED and orders.resource_id == "db-ABCDEFGHIJKLMNOPQRSTUVWXY1"
    assert dict(orders.tags) == {"env": "prod"} and not orders.errors

    aurora = snapshot.clusters[0]
    assert aurora.members == (
        m.ClusterMember("aurora-1", True),
        m.ClusterMember("aurora-2", False),
    )
    assert aurora.kms_key is not None and aurora.kms_key.key_manager == "AWS"
    assert aurora.backup_retention_days == 7 and aurora.earliest_restorable_time == CREATED
    member = next(i for i in snapshot.instances if i.identifier == "aurora-1")
    assert member.is_cluster_member and member.cluster_id == "aurora"

    # one DescribeSecurityGroups for every group, one DescribeKey per distinct key
    assert api.count("ec2", "describe_security_groups") == 1
    assert api.count("kms", "describe_key") == 2
    assert not ctx.issues


async def test_aws_managed_key_fails_only_when_a_customer_key_is_required() -> None:
    snapshot, _ = await collect(FakeApi(answers(), ACCOUNT, REGION))
    aurora = snapshot.clusters[0]
    assert evaluate("rds-storage-encrypted", aurora, snapshot).status is Status.PASS
    outcome = evaluate("rds-storage-encrypted", aurora, snapshot, require_customer_managed_key=True)
    assert outcome.status is Status.FAIL and "AWS-managed key" in outcome.evidence
    orders = next(i for i in snapshot.instances if i.identifier == "orders")
    outcome = evaluate("rds-storage-encrypted", orders, snapshot, require_customer_managed_key=True)
    assert outcome.status is Status.PASS


async def test_world_open_rules_are_matched_to_the_database_port() -> None:
    snapshot, _ = await collect(FakeApi(answers(), ACCOUNT, REGION))
    orders = next(i for i in snapshot.instances if i.identifier == "orders")
    aurora = snapshot.clusters[0]
    outcome = evaluate("rds-security-group-no-public-ingress", orders, snapshot)
    assert outcome.status is Status.FAIL and "tcp/6000-7000 from 0.0.0.0/0" in outcome.evidence
    outcome = evaluate("rds-security-group-no-public-ingress", aurora, snapshot)
    assert outcome.status is Status.FAIL and "all traffic from ::/0" in outcome.evidence


async def test_denied_reads_become_aspect_errors() -> None:
    api = FakeApi(
        answers(
            **{
                "ec2.describe_security_groups": error("UnauthorizedOperation"),
                "kms.describe_key": error("AccessDeniedException"),
            }
        ),
        ACCOUNT,
        REGION,
    )
    snapshot, _ = await collect(api)
    for db in snapshot.resources(m.DATABASE):
        assert db.errors[m.ASPECT_SECURITY_GROUPS] == "UnauthorizedOperation"
        assert db.errors[m.ASPECT_KMS_KEY] == "AccessDeniedException"
        assert db.security_groups == () and db.kms_key is None
    orders = next(i for i in snapshot.instances if i.identifier == "orders")
    # without a customer-key requirement the key is not needed; with one, the finding is error
    assert evaluate("rds-storage-encrypted", orders, snapshot).status is Status.PASS
    outcome = evaluate("rds-storage-encrypted", orders, snapshot, require_customer_managed_key=True)
    assert outcome.status is Status.ERROR and "AccessDeniedException" in outcome.evidence


async def test_a_vanished_security_group_is_an_issue_and_an_aspect_error() -> None:
    api = FakeApi(
        answers(
            **{
                "ec2.describe_security_groups": {
                    "SecurityGroups": [security_group("sg-0a1b2c3d4e5f60002")]
                }
            }
        ),
        ACCOUNT,
        REGION,
    )
    snapshot, ctx = await collect(api)
    orders = next(i for i in snapshot.instances if i.identifier == "orders")
    assert orders.errors[m.ASPECT_SECURITY_GROUPS] == "SecurityGroupNotFound"
    assert [i.aspect for i in ctx.issues] == [m.ASPECT_SECURITY_GROUPS]
    assert not snapshot.clusters[0].errors


async def test_a_deleted_key_is_an_answer_not_an_error() -> None:
    api = FakeApi(answers(**{"kms.describe_key": error("NotFoundException")}), ACCOUNT, REGION)
    snapshot, _ = await collect(api)
    orders = next(i for i in snapshot.instances if i.identifier == "orders")
    assert orders.kms_key is not None and not orders.kms_key.found and not orders.errors
    outcome = evaluate("rds-storage-encrypted", orders, snapshot, require_customer_managed_key=True)
    assert outcome.status is Status.FAIL and "does not exist" in outcome.evidence


@pytest.mark.parametrize("code", ["ThrottlingException", "InternalFailure"])
async def test_retryable_errors_fail_the_target(code: str) -> None:
    api = FakeApi(answers(**{"kms.describe_key": error(code)}), ACCOUNT, REGION)
    with pytest.raises(AwsError):
        await collect(api)


def test_recorded_answers_match_botocore_shapes() -> None:
    from .recorded import checked

    checked("rds", "DescribeDBInstances", {"DBInstances": [instance("x")]})
    with pytest.raises(AssertionError, match="not in botocore"):
        checked("rds", "DescribeDBInstances", {"DBInstances": [instance("x", Bogus=1)]})
    with pytest.raises(AssertionError, match="not a boolean"):
        checked("rds", "DescribeDBInstances", {"DBInstances": [instance("x", MultiAZ="yes")]})
