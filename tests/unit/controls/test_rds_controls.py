"""Every RDS control through the registry, on frozen DB instances and clusters."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.controls.registry import EvalContext, Outcome, controls_for, get_control
from daemon.model import Status, Target, frozen_tags
from daemon.model import rds as m
from daemon.model.ec2 import IngressRule, SecurityGroup
from daemon.model.kms import KmsKey

ACCOUNT, REGION = "111111111111", "us-east-1"
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TARGET = Target(ACCOUNT, REGION, "rds")
CMK = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1111"
PRIVATE = SecurityGroup("sg-1", "db", "vpc-1", (IngressRule("tcp", 6543, 6543, ("10.0.0.0/16",)),))


def make_instance(name: str = "orders", **overrides: Any) -> m.DbInstance:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:rds:{REGION}:{ACCOUNT}:db:{name}",
        "identifier": name,
        "account_id": ACCOUNT,
        "region": REGION,
        "engine": "postgres",
        "engine_version": "16.4",
        "port": 6543,
        "multi_az": True,
        "storage_encrypted": True,
        "kms_key_id": CMK,
        "kms_key": KmsKey(CMK, key_manager="CUSTOMER", key_arn=CMK),
        "deletion_protection": True,
        "auto_minor_version_upgrade": True,
        "iam_auth": True,
        "monitoring_interval": 60,
        "log_exports": ("postgresql",),
        "security_group_ids": ("sg-1",),
        "security_groups": (PRIVATE,),
        "tags": frozen_tags({"env": "prod"}),
    }
    fields.update(overrides)
    return m.DbInstance(**fields)


def make_cluster(name: str = "aurora", **overrides: Any) -> m.DbCluster:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:{name}",
        "identifier": name,
        "account_id": ACCOUNT,
        "region": REGION,
        "engine": "aurora-postgresql",
        "port": 6543,
        "multi_az": True,
        "storage_encrypted": True,
        "kms_key_id": CMK,
        "kms_key": KmsKey(CMK, key_manager="CUSTOMER", key_arn=CMK),
        "deletion_protection": True,
        "iam_auth": True,
        "log_exports": ("postgresql",),
        "security_group_ids": ("sg-1",),
        "security_groups": (PRIVATE,),
        "members": (m.ClusterMember(f"{name}-1", True), m.ClusterMember(f"{name}-2", False)),
        "tags": frozen_tags({"env": "prod"}),
    }
    fields.update(overrides)
    return m.DbCluster(**fields)


def run(control_id: str, resource: Any, params: dict[str, Any] | None = None) -> Outcome | None:
    ctrl = get_control(control_id)
    snapshot = m.RdsSnapshot(TARGET, NOW, (), ())
    ctx = EvalContext(now=NOW, target=TARGET, snapshot=snapshot)
    return ctrl.evaluate(resource, ctrl.params_model.model_validate(params or {}), ctx)


def expect(outcome: Outcome | None, status: Status, *fragments: str) -> None:
    assert outcome is not None, "expected a verdict, got not-applicable"
    assert outcome.status is status, outcome.evidence
    for fragment in fragments:
        assert fragment in outcome.evidence, outcome.evidence


def test_resource_kinds() -> None:
    storage = {c.id for c in controls_for("rds") if c.resource_type == m.DATABASE}
    per_instance = {c.id for c in controls_for("rds") if c.resource_type == m.DB_INSTANCE}
    assert per_instance == {
        "rds-instance-not-public",
        "rds-enhanced-monitoring",
        "rds-auto-minor-version-upgrade",
    }
    assert len(storage) == 10  # 7 of the storage's settings and 3 backup controls
    member = make_instance("aurora-1", cluster_id="aurora")
    snapshot = m.RdsSnapshot(TARGET, NOW, (make_instance(), member), (make_cluster(),))
    assert [r.identifier for r in snapshot.resources(m.DATABASE)] == ["aurora", "orders"]
    assert len(snapshot.resources(m.DB_INSTANCE)) == 2
    assert snapshot.cluster("aurora") is not None and snapshot.cluster("nope") is None


class TestStorageEncrypted:
    CID = "rds-storage-encrypted"

    @pytest.mark.parametrize("make", [make_instance, make_cluster])
    def test_encrypted_or_not(self, make: Any) -> None:
        expect(run(self.CID, make()), Status.PASS)
        expect(run(self.CID, make(storage_encrypted=False)), Status.FAIL, "not encrypted")

    def test_customer_managed_key(self) -> None:
        aws = make_instance(kms_key=KmsKey(CMK, key_manager="AWS", key_arn=CMK))
        expect(run(self.CID, aws), Status.PASS)
        expect(
            run(self.CID, aws, {"require_customer_managed_key": True}), Status.FAIL, "AWS-managed"
        )
        expect(run(self.CID, make_instance(), {"require_customer_managed_key": True}), Status.PASS)
        gone = make_instance(kms_key=KmsKey(CMK, found=False))
        expect(
            run(self.CID, gone, {"require_customer_managed_key": True}),
            Status.FAIL,
            "does not exist",
        )
        denied = make_instance(kms_key=None, errors={m.ASPECT_KMS_KEY: "AccessDeniedException"})
        expect(run(self.CID, denied, {"require_customer_managed_key": True}), Status.ERROR)
        expect(run(self.CID, denied), Status.PASS)  # the key is not needed then

    @pytest.mark.parametrize("state", ["Disabled", "PendingDeletion", "PendingReplicaDeletion"])
    def test_an_unusable_key_fails_whatever_the_parameters(self, state: str) -> None:
        key = KmsKey(CMK, key_manager="AWS", key_state=state, key_arn=CMK)
        expect(run(self.CID, make_cluster(kms_key=key)), Status.FAIL, state, "unreadable")
        enabled = KmsKey(CMK, key_manager="AWS", key_state="Enabled", key_arn=CMK)
        expect(run(self.CID, make_cluster(kms_key=enabled)), Status.PASS)

    def test_allowed_keys_imply_a_customer_key(self) -> None:
        expect(run(self.CID, make_instance(), {"allowed_key_arns": ["*:key/2222"]}), Status.FAIL)
        expect(run(self.CID, make_instance(), {"allowed_key_arns": ["*:key/1111"]}), Status.PASS)
        aws = make_instance(kms_key=KmsKey(CMK, key_manager="AWS"))
        expect(run(self.CID, aws, {"allowed_key_arns": ["*"]}), Status.FAIL)


class TestMultiAz:
    CID = "rds-multi-az"

    def test_production_only_by_default(self) -> None:
        expect(run(self.CID, make_instance()), Status.PASS)
        single = make_instance(multi_az=False, availability_zone="us-east-1c")
        expect(run(self.CID, single), Status.FAIL, "us-east-1c")
        dev = make_instance(multi_az=False, tags=frozen_tags({"env": "dev"}))
        assert run(self.CID, dev) is None
        untagged = make_instance(multi_az=False, tags=frozen_tags({}))
        assert run(self.CID, untagged) is None
        expect(run(self.CID, untagged, {"apply_to": "all"}), Status.FAIL)

    def test_production_tags_are_globs_and_all_must_match(self) -> None:
        db = make_instance(multi_az=False, tags=frozen_tags({"env": "production", "tier": "1"}))
        expect(run(self.CID, db), Status.FAIL)  # default env: prod*
        params = {"production_tags": {"env": "prod*", "tier": "0"}}
        assert run(self.CID, db, params) is None

    def test_clusters(self) -> None:
        one_zone = make_cluster(multi_az=False, members=(m.ClusterMember("a-1", True),))
        expect(run(self.CID, one_zone), Status.FAIL, "1 cluster member")


def test_deletion_protection() -> None:
    cid = "rds-deletion-protection"
    expect(run(cid, make_cluster()), Status.PASS)
    expect(run(cid, make_instance(deletion_protection=False)), Status.FAIL)


def test_iam_authentication() -> None:
    cid = "rds-iam-authentication"
    expect(run(cid, make_instance()), Status.PASS)
    expect(run(cid, make_cluster(iam_auth=False)), Status.FAIL)
    assert run(cid, make_instance(engine="sqlserver-se", iam_auth=False)) is None
    assert run(cid, make_instance(iam_auth=False), {"engines": ["mysql"]}) is None


@pytest.mark.parametrize(
    ("engine", "exports", "status", "fragment"),
    [
        ("postgres", ("postgresql",), Status.PASS, "postgresql"),
        ("postgres", ("upgrade",), Status.FAIL, "missing postgresql"),
        ("postgres", (), Status.FAIL, "exports nothing"),
        ("mysql", ("error", "slowquery"), Status.PASS, "error"),
        ("aurora-mysql", ("audit",), Status.FAIL, "missing error"),
        ("oracle-ee", ("alert", "listener"), Status.PASS, "alert"),
        ("db2-se", ("diag.log",), Status.PASS, "diag.log"),  # unlisted engine: any export
        ("db2-se", (), Status.FAIL, "no logs"),
    ],
)
def test_log_exports(engine: str, exports: tuple[str, ...], status: Status, fragment: str) -> None:
    db = make_instance(engine=engine, log_exports=exports)
    expect(run("rds-log-exports", db), status, fragment)


def test_log_exports_parameters() -> None:
    db = make_instance(log_exports=("postgresql",))
    params = {"required_log_types": {"postgres": ["postgresql", "upgrade"]}}
    expect(run("rds-log-exports", db, params), Status.FAIL, "missing upgrade")


def group(*rules: IngressRule) -> SecurityGroup:
    return SecurityGroup("sg-9", "open", "vpc-1", rules)


@pytest.mark.parametrize(
    ("rule", "status"),
    [
        (IngressRule("tcp", 6543, 6543, ("0.0.0.0/0",)), Status.FAIL),
        (IngressRule("tcp", 6000, 7000, ("::/0",)), Status.FAIL),
        (IngressRule("-1", None, None, ("0.0.0.0/0",)), Status.FAIL),
        (IngressRule("tcp", -1, -1, ("0.0.0.0/0",)), Status.FAIL),
        (IngressRule("6", 6543, 6543, ("0.0.0.0/0",)), Status.FAIL),
        (IngressRule("tcp", 443, 443, ("0.0.0.0/0", "::/0")), Status.PASS),
        (IngressRule("udp", 6543, 6543, ("0.0.0.0/0",)), Status.PASS),
        (IngressRule("tcp", 6543, 6543, ("10.0.0.0/8",)), Status.PASS),
        (IngressRule("tcp", 6543, 6543, (), groups=("sg-app",)), Status.PASS),
    ],
)
def test_security_groups(rule: IngressRule, status: Status) -> None:
    db = make_instance(security_groups=(PRIVATE, group(rule)))
    expect(run("rds-security-group-no-public-ingress", db), status)


def test_security_groups_unknown_port_and_extra_cidrs() -> None:
    cid = "rds-security-group-no-public-ingress"
    creating = make_instance(
        port=None, security_groups=(group(IngressRule("tcp", 1, 2, ("0.0.0.0/0",))),)
    )
    expect(run(cid, creating), Status.FAIL, "the database open")
    wide = make_instance(security_groups=(group(IngressRule("tcp", 6543, 6543, ("10.0.0.0/8",))),))
    expect(run(cid, wide, {"forbidden_cidrs": ["10.0.0.0/8"]}), Status.FAIL)
    assert get_control(cid).requires == (m.ASPECT_SECURITY_GROUPS,)


def test_default_port() -> None:
    cid = "rds-non-default-port"
    assert get_control(cid).default_enabled is False
    expect(run(cid, make_instance()), Status.PASS)
    expect(run(cid, make_instance(port=5432)), Status.FAIL, "5432")
    expect(run(cid, make_cluster(engine="aurora-mysql", port=3306)), Status.FAIL, "3306")
    expect(run(cid, make_instance(engine="sqlserver-ex", port=1433)), Status.FAIL, "1433")
    assert run(cid, make_instance(engine="custom-oracle-ee", port=1521)) is None
    assert run(cid, make_instance(port=None)) is None


def test_instance_controls() -> None:
    expect(run("rds-instance-not-public", make_instance()), Status.PASS)
    expect(run("rds-instance-not-public", make_instance(publicly_accessible=True)), Status.FAIL)
    expect(run("rds-enhanced-monitoring", make_instance()), Status.PASS, "60s")
    expect(run("rds-enhanced-monitoring", make_instance(monitoring_interval=0)), Status.FAIL, "off")
    expect(
        run("rds-enhanced-monitoring", make_instance(), {"max_interval_seconds": 15}),
        Status.FAIL,
        "max 15s",
    )
    with pytest.raises(ValidationError):
        get_control("rds-enhanced-monitoring").params_model.model_validate(
            {"max_interval_seconds": 20}
        )
    expect(run("rds-auto-minor-version-upgrade", make_instance()), Status.PASS)
    expect(
        run("rds-auto-minor-version-upgrade", make_instance(auto_minor_version_upgrade=False)),
        Status.FAIL,
        "postgres 16.4",
    )
