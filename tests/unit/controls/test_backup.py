"""The backup policy: every backup control and the backup gauges, on frozen snapshots, with `now`
given. The edges: no versions at all, only $LATEST, code changed after the newest version,
clusters vs instances, missing LatestRestorableTime, retention 0, read replicas, young databases,
snapshots of a predecessor of the same name, overrides by tag."""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.controls import backup as b
from daemon.controls.engine import evaluate
from daemon.controls.registry import EvalContext, Outcome, get_control
from daemon.measures import measure_policy, measure_target
from daemon.metrics import names as n
from daemon.model import Status, Target, frozen_tags, rds, region_resource_id
from daemon.model import awslambda as lam
from daemon.model.export import FunctionExport, SnapshotRef
from daemon.policy import parse_policy_text
from daemon.policy.compiled import Policy

ACCOUNT, REGION = "111111111111", "us-east-1"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
LAMBDA = Target(ACCOUNT, REGION, "lambda")
RDS = Target(ACCOUNT, REGION, "rds")
CODE_V1 = "n8bW1mFv0VMhpt0HlcVEOgSxm6kOzGk2Yx3mSr8bDYo="
CODE_V2 = "Zc3Pb2Jq4nO1eYk7mS5rT0uV9wX8yA6bC1dE2fG3hI4="
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)


def region_posture(target: Target, *recorders: lam.ConfigRecorder) -> lam.RegionPosture:
    return lam.RegionPosture(
        arn=region_resource_id(target.account_id, target.region),
        account_id=target.account_id,
        region=target.region,
        config_recorders=recorders,
    )


def version(number: int, code: str = CODE_V1, age: dt.timedelta = 3 * D) -> lam.PublishedVersion:
    return lam.PublishedVersion(str(number), code, NOW - age)


def exported_at(when: dt.datetime) -> FunctionExport:
    """The export state of a function whose newest valid snapshot was taken at `when`."""
    ref = SnapshotRef(
        url=f"s3://backups/lambda/{ACCOUNT}/{REGION}/orders/x/",
        snapshot_id="x",
        captured_at=when,
        revision="r",
        fingerprint="f",
    )
    return FunctionExport(latest=ref)


def make_fn(name: str = "orders", **overrides: Any) -> lam.LambdaFunction:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "name": name,
        "account_id": ACCOUNT,
        "region": REGION,
        "runtime": "python3.12",
        "package_type": "Zip",
        "handler": "app.handler",
        "role_arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "memory_mb": 256,
        "timeout_s": 30,
        "code_sha256": CODE_V1,
        "last_modified": NOW - 3 * D,
        "revision_id": "rev-1",
        "versions": (version(1),),
        "log_group_name": f"/aws/lambda/{name}",
        "log_group": lam.LogGroup(
            f"/aws/lambda/{name}",
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{name}:*",
            30,
        ),
    }
    fields.update(overrides)
    return lam.LambdaFunction(**fields)


def lambda_snapshot(*functions: lam.LambdaFunction) -> lam.LambdaSnapshot:
    return lam.LambdaSnapshot(LAMBDA, NOW, functions, (), region_posture(LAMBDA))


def make_instance(name: str = "orders-db", **overrides: Any) -> rds.DbInstance:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:rds:{REGION}:{ACCOUNT}:db:{name}",
        "identifier": name,
        "account_id": ACCOUNT,
        "region": REGION,
        "engine": "postgres",
        "backup_retention_days": 7,
        "preferred_backup_window": "02:00-02:30",
        "latest_restorable_time": NOW - dt.timedelta(minutes=4),
        "resource_id": f"db-{name.upper()}",
        "created_at": NOW - 90 * D,
        "tags": frozen_tags({"env": "prod"}),
    }
    fields.update(overrides)
    return rds.DbInstance(**fields)


def make_cluster(name: str = "aurora", **overrides: Any) -> rds.DbCluster:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:{name}",
        "identifier": name,
        "account_id": ACCOUNT,
        "region": REGION,
        "engine": "aurora-postgresql",
        "backup_retention_days": 14,
        "latest_restorable_time": NOW - dt.timedelta(minutes=4),
        "resource_id": f"cluster-{name.upper()}",
        "created_at": NOW - 90 * D,
        "members": (rds.ClusterMember(f"{name}-a", True),),
    }
    fields.update(overrides)
    return rds.DbCluster(**fields)


def make_snapshot(db: rds.Database, ident: str, **overrides: Any) -> rds.DbSnapshot:
    cluster = isinstance(db, rds.DbCluster)
    kind = "cluster-snapshot" if cluster else "snapshot"
    fields: dict[str, Any] = {
        "arn": f"arn:aws:rds:{REGION}:{ACCOUNT}:{kind}:{ident}",
        "identifier": ident,
        "account_id": ACCOUNT,
        "region": REGION,
        "cluster": cluster,
        "db_identifier": db.identifier,
        "db_resource_id": db.resource_id,
        "snapshot_type": "automated" if ident.startswith("rds:") else "manual",
        "status": "available",
        "created_at": NOW - 5 * H,
        "encrypted": True,
        "kms_key_id": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1",
        "restore_accounts": None if ident.startswith("rds:") else (),
        "resource_type": rds.DB_CLUSTER_SNAPSHOT if cluster else rds.DB_SNAPSHOT,
    }
    fields.update(overrides)
    return rds.DbSnapshot(**fields)


def rds_snapshot(
    *items: rds.DbInstance | rds.DbCluster | rds.DbSnapshot,
    protected: dict[str, rds.RecoveryPoint] | None = None,
    region: lam.RegionPosture | None = None,
) -> rds.RdsSnapshot:
    return rds.RdsSnapshot(
        RDS,
        NOW,
        tuple(i for i in items if isinstance(i, rds.DbInstance)),
        tuple(i for i in items if isinstance(i, rds.DbCluster)),
        tuple(i for i in items if isinstance(i, rds.DbSnapshot)),
        protected=protected,
        region=region,
    )


def run(
    control_id: str,
    resource: Any,
    params: dict[str, Any] | None = None,
    snapshot: Any = None,
) -> Outcome | None:
    ctrl = get_control(control_id)
    if snapshot is None:
        snapshot = lambda_snapshot() if control_id.startswith("lambda-") else rds_snapshot()
    ctx = EvalContext(now=NOW, target=snapshot.target, snapshot=snapshot)
    return ctrl.evaluate(resource, ctrl.params_model.model_validate(params or {}), ctx)


def expect(outcome: Outcome | None, status: Status, *fragments: str) -> None:
    assert outcome is not None, "expected a verdict, got not-applicable"
    assert outcome.status is status, outcome.evidence
    for fragment in fragments:
        assert fragment in outcome.evidence, outcome.evidence


# --- Lambda: versions ----------------------------------------------------------------------------


class TestVersionCurrent:
    CID = "lambda-version-current"

    def test_newest_version_holds_latest(self) -> None:
        fn = make_fn(versions=(version(1, CODE_V2, 30 * D), version(2, CODE_V1, 20 * D)))
        expect(run(self.CID, fn), Status.PASS, "version 2 holds the code")

    def test_newest_is_by_number_not_by_list_order(self) -> None:
        fn = make_fn(versions=(version(10, CODE_V1), version(9, CODE_V2)))
        expect(run(self.CID, fn), Status.PASS, "version 10")

    def test_changed_code_within_and_beyond_the_grace(self) -> None:
        recent = make_fn(code_sha256=CODE_V2, last_modified=NOW - 3 * H)
        expect(run(self.CID, recent), Status.PASS, "differs from version 1", "3.0 h", "within 24")
        stale = make_fn(code_sha256=CODE_V2, last_modified=NOW - 30 * H)
        expect(run(self.CID, stale), Status.FAIL, "unpublished for 30.0 h", "limit 24.0 h")
        assert run(self.CID, stale, {"max_unpublished_age_hours": 48}).status is Status.PASS  # type: ignore[union-attr]
        # a limit beyond what a timedelta holds is still a limit (no overflow in the evidence)
        expect(run(self.CID, stale, {"max_unpublished_age_hours": 10**15}), Status.PASS, "within")

    def test_change_counted_from_the_version_when_last_modified_is_older(self) -> None:
        # moto does not move LastModified on UpdateFunctionCode: the change cannot predate the
        # version it differs from, so the newer of the two times counts.
        fn = make_fn(
            code_sha256=CODE_V2, last_modified=NOW - 10 * D, versions=(version(1, age=2 * H),)
        )
        expect(run(self.CID, fn), Status.PASS, "unpublished for 2.0 h")

    @pytest.mark.parametrize("versions", [(), (lam.PublishedVersion("$LATEST", CODE_V1, None),)])
    def test_only_latest(self, versions: tuple[lam.PublishedVersion, ...]) -> None:
        new = make_fn(versions=versions, last_modified=NOW - 2 * H)
        expect(run(self.CID, new), Status.PASS, "no published version", "within")
        old = make_fn(versions=versions, last_modified=NOW - 2 * D)
        expect(run(self.CID, old), Status.FAIL, "no published version", "2.0 d")

    def test_missing_last_modified_is_an_error(self) -> None:
        expect(run(self.CID, make_fn(versions=(), last_modified=None)), Status.ERROR)


class TestLambdaBackupAge:
    CID = "lambda-backup-age"

    def test_an_old_version_is_fine_while_latest_matches_it(self) -> None:
        fn = make_fn(versions=(version(3, age=400 * D),))
        expect(run(self.CID, fn), Status.PASS, "400.0 d old", "holds the code")

    def test_age_counts_once_latest_differs(self) -> None:
        fresh = make_fn(code_sha256=CODE_V2, versions=(version(1, age=6 * D),))
        expect(run(self.CID, fresh), Status.PASS, "6.0 d ago", "within 7.0 d")
        old = make_fn(code_sha256=CODE_V2, versions=(version(1, age=8 * D),))
        expect(run(self.CID, old), Status.FAIL, "published 8.0 d ago", "limit 7.0 d")
        assert run(self.CID, old, {"max_backup_age_days": 10}).status is Status.PASS  # type: ignore[union-attr]

    def test_no_version_at_all_is_a_missing_backup(self) -> None:
        expect(run(self.CID, make_fn(versions=())), Status.FAIL, "only $LATEST, no backup")

    def test_version_without_time_is_an_error(self) -> None:
        fn = make_fn(code_sha256=CODE_V2, versions=(lam.PublishedVersion("1", CODE_V1, None),))
        expect(run(self.CID, fn), Status.ERROR)

    def test_unreadable_versions_are_an_error_through_the_engine(self) -> None:
        fn = make_fn(errors={lam.ASPECT_VERSIONS: "AccessDeniedException"})
        ev = evaluate(lambda_snapshot(fn), policy(), NOW)
        statuses = {f.control: f.status for f in ev.findings}
        assert statuses["lambda-backup-age"] is Status.ERROR
        assert statuses["lambda-version-current"] is Status.ERROR


# --- Lambda: logs, layers, configuration ------------------------------------------------------


def group(retention: int | None, **overrides: Any) -> lam.LogGroup:
    return lam.LogGroup(
        "/aws/lambda/orders",
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/orders:*",
        retention,
        **overrides,
    )


class TestLogRetention:
    CID = "lambda-log-retention"

    def test_retention_at_and_below_the_minimum(self) -> None:
        expect(run(self.CID, make_fn(log_group=group(30))), Status.PASS, "30 days")
        expect(run(self.CID, make_fn(log_group=group(7))), Status.FAIL, "7 days, below 30")
        expect(
            run(self.CID, make_fn(log_group=group(90)), {"min_log_retention_days": 365}),
            Status.FAIL,
        )

    def test_never_expire_allowed_or_not(self) -> None:
        fn = make_fn(log_group=group(None))
        expect(run(self.CID, fn), Status.PASS, "never expires")
        expect(run(self.CID, fn, {"allow_never_expire": False}), Status.FAIL, "is required")

    def test_no_log_group(self) -> None:
        expect(run(self.CID, make_fn(log_group=None)), Status.FAIL, "does not exist")


class TestLogExport:
    CID = "lambda-log-export"
    FIREHOSE = f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/central-logs"

    def test_subscription_filter(self) -> None:
        streamed = make_fn(
            log_group=group(30, subscription_filters=1, subscription_destinations=(self.FIREHOSE,))
        )
        expect(run(self.CID, streamed), Status.PASS, "streams to")
        expect(
            run(self.CID, streamed, {"allowed_destinations": ["arn:aws:logs:*:999999999999:*"]}),
            Status.FAIL,
            "none to an allowed destination",
        )
        expect(
            run(self.CID, streamed, {"allowed_destinations": ["arn:aws:firehose:*:*:*/central-*"]}),
            Status.PASS,
        )

    def test_recent_export_task(self) -> None:
        exported = make_fn(
            log_group=group(30, subscription_filters=0, last_export_task=NOW - 20 * H)
        )
        expect(run(self.CID, exported), Status.PASS, "exported to S3")
        expect(run(self.CID, exported, {"max_export_task_age_hours": 12}), Status.FAIL, "20.0 h")
        expect(run(self.CID, exported, {"max_export_task_age_hours": None}), Status.FAIL)

    def test_nothing_exported_or_not_read(self) -> None:
        bare = make_fn(log_group=group(30, subscription_filters=0))
        expect(run(self.CID, bare), Status.FAIL, "no subscription filter")
        expect(run(self.CID, make_fn(log_group=group(30))), Status.ERROR, "not read")
        expect(run(self.CID, make_fn(log_group=None)), Status.FAIL, "does not exist")


class TestLayerVersionsExist:
    CID = "lambda-layer-versions-exist"
    OWN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:common:3"
    VENDOR = f"arn:aws:lambda:{REGION}:999999999999:layer:vendor:7"

    def refs(self) -> tuple[lam.LayerRef, ...]:
        return (
            lam.LayerRef(self.OWN, ACCOUNT, "common", 3),
            lam.LayerRef(self.VENDOR, "999999999999", "vendor", 7),
        )

    def test_all_exist_some_deleted_none_used(self) -> None:
        expect(run(self.CID, make_fn(layers=self.refs())), Status.PASS, "2 layer version(s)")
        gone = make_fn(layers=self.refs(), missing_layers=(self.VENDOR,))
        expect(run(self.CID, gone), Status.FAIL, "vendor:7")
        assert run(self.CID, make_fn()) is None

    def test_unreadable_foreign_layer_is_an_error(self) -> None:
        fn = make_fn(layers=self.refs(), errors={lam.ASPECT_LAYERS: "AccessDeniedException"})
        ev = evaluate(lambda_snapshot(fn), policy(), NOW)
        assert {f.control: f.status for f in ev.findings}[self.CID] is Status.ERROR


class TestConfigRecoverable:
    CID = "lambda-config-recoverable"

    def test_stack_tag_or_export(self) -> None:
        stack = make_fn(tags=frozen_tags({b.STACK_TAG: "orders-prod"}))
        expect(run(self.CID, stack), Status.PASS, "orders-prod")
        exported = make_fn(export=exported_at(NOW - 2 * H))
        expect(run(self.CID, exported), Status.PASS, "exported by the daemon 2.0 h ago")
        expect(run(self.CID, make_fn()), Status.FAIL, "no aws:cloudformation:stack-name tag")

    def test_selectable(self) -> None:
        exported = make_fn(export=exported_at(NOW - 2 * H))
        expect(run(self.CID, exported, {"accept_export": False}), Status.FAIL)
        stack = make_fn(tags=frozen_tags({b.STACK_TAG: "s"}))
        expect(run(self.CID, stack, {"managed_tags": []}), Status.FAIL, "not in the daemon's")
        terraform = make_fn(tags=frozen_tags({"managed-by": "terraform"}))
        expect(run(self.CID, terraform, {"managed_tags": ["managed-by"]}), Status.PASS)
        with pytest.raises(ValidationError, match="nothing would count"):
            get_control(self.CID).params_model.model_validate(
                {"managed_tags": [], "accept_export": False}
            )


# --- RDS ------------------------------------------------------------------------------------


class TestAutomatedBackups:
    CID = "rds-automated-backups"

    @pytest.mark.parametrize("make", [make_instance, make_cluster])
    def test_retention(self, make: Any) -> None:
        expect(run(self.CID, make()), Status.PASS, "retention")
        expect(run(self.CID, make(backup_retention_days=0)), Status.FAIL, "off")
        expect(run(self.CID, make(backup_retention_days=3)), Status.FAIL, "3 days, below 7")
        expect(run(self.CID, make(backup_retention_days=3), {"min_retention_days": 1}), Status.PASS)

    def test_read_replicas_are_skipped_unless_asked(self) -> None:
        replica = make_instance("replica", backup_retention_days=0, read_replica_source="orders-db")
        assert run(self.CID, replica) is None
        expect(run(self.CID, replica, {"check_read_replicas": True}), Status.FAIL)


class TestRdsBackupAge:
    CID = "rds-backup-age"

    def test_fresh_snapshot_and_restorable_time(self) -> None:
        db = make_instance()
        snap = rds_snapshot(db, make_snapshot(db, "rds:orders-db-2026-03-01-07-00"))
        expect(run(self.CID, db, snapshot=snap), Status.PASS, "5.0 h old", "restorable to 4 min")

    def test_old_snapshot(self) -> None:
        db = make_instance()
        snap = rds_snapshot(
            db,
            make_snapshot(db, "rds:orders-db-2026-02-27-07-00", created_at=NOW - 53 * H),
            make_snapshot(db, "before-upgrade", created_at=NOW - 30 * H),  # manual counts too
            make_snapshot(db, "in-flight", created_at=NOW - H, status="creating"),  # not yet
        )
        expect(run(self.CID, db, snapshot=snap), Status.FAIL, "snapshot 30.0 h old", "limit 26")
        ok = run(self.CID, db, {"max_backup_age_hours": 48}, snapshot=snap)
        expect(ok, Status.PASS, "before-upgrade (manual)")

    def test_no_snapshot_and_missing_restorable_time(self) -> None:
        db = make_instance(latest_restorable_time=None)
        expect(
            run(self.CID, db, snapshot=rds_snapshot(db)),
            Status.FAIL,
            "no snapshot, no point-in-time restore",
        )
        only_snapshots = run(self.CID, db, {"require": ["snapshot"]}, snapshot=rds_snapshot(db))
        expect(only_snapshots, Status.FAIL, "no snapshot")
        assert "point-in-time" not in only_snapshots.evidence  # type: ignore[union-attr]

    def test_retention_zero_means_no_point_in_time_restore(self) -> None:
        # moto reports LatestRestorableTime even with retention 0; AWS omits it. Either way there
        # is no point-in-time restore without automated backups.
        db = make_instance(backup_retention_days=0)
        snap = rds_snapshot(db, make_snapshot(db, "manual-today"))
        expect(run(self.CID, db, snapshot=snap), Status.FAIL, "no point-in-time restore")
        assert b.restorable_time(db) is None

    def test_cluster_snapshots_belong_to_the_cluster(self) -> None:
        cluster = make_cluster()
        member = make_instance("aurora-a", cluster_id="aurora", latest_restorable_time=None)
        snap = rds_snapshot(
            cluster,
            member,
            make_snapshot(cluster, "rds:aurora-2026-03-01-07-00", created_at=NOW - 2 * H),
        )
        assert [d.identifier for d in snap.databases()] == ["aurora"]  # members are not judged
        expect(run(self.CID, cluster, snapshot=snap), Status.PASS, "2.0 h old")
        # an instance snapshot of the same name is not the cluster's
        other = rds_snapshot(cluster, make_snapshot(make_instance("aurora"), "x"))
        expect(run(self.CID, cluster, snapshot=other), Status.FAIL, "no snapshot")

    def test_snapshots_of_a_predecessor_do_not_count(self) -> None:
        db = make_instance()
        old = make_snapshot(db, "rds:orders-db-old", db_resource_id="db-PREVIOUS")
        expect(run(self.CID, db, snapshot=rds_snapshot(db, old)), Status.FAIL, "no snapshot")

    def test_snapshots_are_matched_to_their_database_by_name_in_any_case(self) -> None:
        """RDS identifiers are case-insensitive; the snapshot index (built once per snapshot of
        the target) keys them in lower case, and a copy with other snapshots indexes its own."""
        db, other = make_instance(), make_instance("billing-db")
        shouted = make_snapshot(db, "rds:orders-db-1", db_identifier="ORDERS-DB")
        theirs = make_snapshot(other, "rds:billing-db-1", created_at=NOW - 1 * H)
        snap = rds_snapshot(db, shouted, theirs)
        assert snap.snapshots_of(db) == (shouted,) and snap.snapshots_of(other) == (theirs,)
        expect(run(self.CID, db, snapshot=snap), Status.PASS, "rds:orders-db-1", "5.0 h old")
        without = dataclasses.replace(snap, snapshots=(theirs,))
        expect(run(self.CID, db, snapshot=without), Status.FAIL, "no snapshot")

    def test_young_database_is_pending(self) -> None:
        db = make_instance(created_at=NOW - 2 * H, latest_restorable_time=None)
        expect(run(self.CID, db, snapshot=rds_snapshot(db)), Status.PASS, "no snapshot yet")

    def test_replicas_skipped(self) -> None:
        replica = make_instance("replica", read_replica_source="orders-db")
        assert run(self.CID, replica, snapshot=rds_snapshot(replica)) is None

    def test_unreadable_snapshots_are_an_error(self) -> None:
        db = make_instance(errors={rds.ASPECT_SNAPSHOTS: "AccessDenied"})
        ev = evaluate(rds_snapshot(db), policy(services="[rds]"), NOW)
        assert {f.control: f.status for f in ev.findings}[self.CID] is Status.ERROR


class TestSnapshots:
    def test_encrypted(self) -> None:
        db = make_instance()
        cid = "rds-snapshot-encrypted"
        expect(run(cid, make_snapshot(db, "manual")), Status.PASS)
        plain = make_snapshot(db, "manual", encrypted=False, kms_key_id=None)
        expect(run(cid, plain), Status.FAIL, "manual snapshot of orders-db is not encrypted")
        auto = make_snapshot(db, "rds:orders-db-1", encrypted=False)
        assert run(cid, auto) is None  # judged through rds-storage-encrypted
        expect(run(cid, auto, {"include_automated": True}), Status.FAIL)

    def test_not_public(self) -> None:
        db = make_cluster()
        cid = "rds-snapshot-not-public"
        expect(run(cid, make_snapshot(db, "c1")), Status.PASS, "not shared")
        public = make_snapshot(db, "c1", restore_accounts=("all",))
        expect(run(cid, public), Status.FAIL, "any AWS account")
        shared = make_snapshot(db, "c1", restore_accounts=("222222222222",))
        expect(run(cid, shared), Status.PASS, "222222222222 only")
        expect(
            run(cid, shared, {"allowed_accounts": ["333333333333"]}),
            Status.FAIL,
            "outside allowed_accounts",
        )
        assert run(cid, make_snapshot(db, "rds:c-auto")) is None  # cannot be shared
        expect(run(cid, make_snapshot(db, "c1", restore_accounts=None)), Status.ERROR)


class TestBackupPlan:
    CID = "rds-backup-plan"

    def test_protected_recent_old_missing(self) -> None:
        db = make_instance()
        vault = f"arn:aws:backup:{REGION}:{ACCOUNT}:backup-vault:prod"
        recent = rds_snapshot(
            db, protected={db.arn: rds.RecoveryPoint(db.arn, "RDS", NOW - 3 * H, vault)}
        )
        expect(run(self.CID, db, snapshot=recent), Status.PASS, "3.0 h old", vault)
        old = rds_snapshot(db, protected={db.arn: rds.RecoveryPoint(db.arn, "RDS", NOW - 3 * D)})
        expect(run(self.CID, db, snapshot=old), Status.FAIL, "3.0 d old")
        expect(
            run(self.CID, db, snapshot=rds_snapshot(db, protected={})), Status.FAIL, "not protected"
        )
        expect(run(self.CID, db, snapshot=rds_snapshot(db)), Status.ERROR, "not read")


class TestRdsConfigRecording:
    CID = "rds-config-recording"
    ALL = lam.ConfigRecorder("default", True, True, frozenset())

    def test_recording_and_not(self) -> None:
        db = make_instance()
        covered = region_posture(RDS, self.ALL)
        expect(run(self.CID, covered, snapshot=rds_snapshot(db, region=covered)), Status.PASS)
        lambdas_only = lam.ConfigRecorder(
            "default", True, False, frozenset({"AWS::Lambda::Function"})
        )
        partial = region_posture(RDS, lambdas_only)
        expect(
            run(self.CID, partial, snapshot=rds_snapshot(db, region=partial)),
            Status.FAIL,
            "AWS::RDS::DBInstance",
        )
        bare = region_posture(RDS)
        expect(run(self.CID, bare, snapshot=rds_snapshot(db, region=bare)), Status.FAIL, "no AWS")

    def test_not_applicable_without_rds(self) -> None:
        bare = region_posture(RDS)
        assert run(self.CID, bare, snapshot=rds_snapshot(region=bare)) is None


# --- measures ------------------------------------------------------------------------------------


def policy(body: str = "", services: str = "[lambda, rds]") -> Policy:
    head = f"""\
version: 1
scope:
  accounts: {{own_account: true}}
  regions: [us-east-1]
  services: {services}
"""
    return parse_policy_text(head + textwrap.dedent(body))


def gauges(snapshot: Any, pol: Policy | None = None) -> dict[tuple[str, str, str], float]:
    """{(metric, resource name, kind): value} of the backup gauges."""
    out = {}
    for s in measure_target(snapshot, pol or policy(), NOW):
        if s.metric.startswith("posture_backup_"):
            name = s.labels["resource"].rsplit(":", 1)[-1]
            out[(s.metric, name, s.labels["kind"])] = s.value
    return out


TS, MISSING, LIMIT = n.BACKUP_LAST_TIMESTAMP.name, n.BACKUP_MISSING.name, n.BACKUP_MAX_AGE.name


def test_lambda_version_gauges() -> None:
    current = make_fn("current", versions=(version(1, age=40 * D),))
    changed = make_fn("changed", code_sha256=CODE_V2, versions=(version(1, age=2 * D),))
    latest_only = make_fn("latest-only", versions=())
    unknown = make_fn("unknown", errors={lam.ASPECT_VERSIONS: "AccessDeniedException"})
    g = gauges(lambda_snapshot(current, changed, latest_only, unknown))
    assert g == {
        (TS, "current", "version"): (NOW - 40 * D).timestamp(),
        (MISSING, "current", "version"): 0,  # no limit: nothing unpublished
        (TS, "changed", "version"): (NOW - 2 * D).timestamp(),
        (MISSING, "changed", "version"): 0,
        (LIMIT, "changed", "version"): 7 * 86400,
        (MISSING, "latest-only", "version"): 1,  # no fake age, no timestamp
        (LIMIT, "latest-only", "version"): 7 * 86400,
    }


def test_lambda_limits_follow_overrides_by_tag_and_vanish_when_disabled() -> None:
    pol = policy(
        """\
        controls:
          lambda-backup-age:
            params: {max_backup_age_days: 14}
            overrides:
              - match: {tags: {tier: critical}}
                params: {max_backup_age_days: 1}
              - match: {tags: {tier: scratch}}
                enabled: false
        """
    )
    fns = [
        make_fn(name, code_sha256=CODE_V2, tags=frozen_tags({"tier": name}))
        for name in ("critical", "scratch", "normal")
    ]
    g = gauges(lambda_snapshot(*fns), pol)
    assert g[(LIMIT, "critical", "version")] == 86400
    assert g[(LIMIT, "normal", "version")] == 14 * 86400
    assert (LIMIT, "scratch", "version") not in g and (MISSING, "scratch", "version") not in g
    assert (TS, "scratch", "version") in g  # the fact stays; only the requirement goes
    limits = [
        (s.labels, s.value) for s in measure_policy(pol) if s.metric == n.BACKUP_POLICY_MAX_AGE.name
    ]
    assert ({"aws_service": "lambda", "kind": "version"}, 14 * 86400) in limits


def test_rds_gauges_for_instances_clusters_replicas() -> None:
    db = make_instance()
    off = make_instance("no-backups", backup_retention_days=0)
    replica = make_instance("replica", read_replica_source="orders-db", latest_restorable_time=None)
    cluster = make_cluster()
    member = make_instance("aurora-a", cluster_id="aurora")
    snap = rds_snapshot(
        db,
        off,
        replica,
        cluster,
        member,
        make_snapshot(db, "rds:orders-db-a", created_at=NOW - 30 * H),
        make_snapshot(db, "manual-b", created_at=NOW - 6 * H),
        make_snapshot(cluster, "rds:aurora-a", created_at=NOW - 2 * H),
        make_snapshot(off, "rds:no-backups-a", created_at=NOW - 50 * D),
    )
    g = gauges(snap)
    limit = 26 * 3600
    assert g[(TS, "orders-db", "snapshot")] == (NOW - 6 * H).timestamp()  # the newest, manual
    assert g[(TS, "orders-db", "restorable")] == (NOW - dt.timedelta(minutes=4)).timestamp()
    assert (
        g[(MISSING, "orders-db", "snapshot")] == 0 and g[(LIMIT, "orders-db", "snapshot")] == limit
    )
    assert g[(TS, "aurora", "snapshot")] == (NOW - 2 * H).timestamp()
    assert g[(MISSING, "no-backups", "restorable")] == 1  # retention 0: no point-in-time restore
    assert (TS, "no-backups", "restorable") not in g
    assert g[(TS, "no-backups", "snapshot")] == (NOW - 50 * D).timestamp()
    # a replica is not required to have backups (no missing/limit series), a member is not a database
    assert (MISSING, "replica", "snapshot") not in g and (LIMIT, "replica", "restorable") not in g
    assert not [k for k in g if k[1] == "aurora-a"]
    # AWS Backup was not read (rds-backup-plan is off): no recovery_point series at all
    assert not [k for k in g if k[2] == "recovery_point"]


def test_rds_recovery_point_gauges_when_the_backup_plan_control_runs() -> None:
    db, other = make_instance(), make_instance("unprotected")
    pol = policy(
        "controls: {rds-backup-plan: {enabled: true, params: {max_recovery_point_age_hours: 30}}}"
    )
    snap = rds_snapshot(
        db, other, protected={db.arn: rds.RecoveryPoint(db.arn, "RDS", NOW - 9 * H)}
    )
    g = gauges(snap, pol)
    assert g[(TS, "orders-db", "recovery_point")] == (NOW - 9 * H).timestamp()
    assert g[(MISSING, "orders-db", "recovery_point")] == 0
    assert g[(LIMIT, "orders-db", "recovery_point")] == 30 * 3600
    assert g[(MISSING, "unprotected", "recovery_point")] == 1
    denied = make_instance(errors={rds.ASPECT_BACKUP_PLAN: "AccessDeniedException"})
    assert not [
        k for k in gauges(rds_snapshot(denied, protected={}), pol) if k[2] == "recovery_point"
    ]
    assert {
        (s.labels["kind"], s.value)
        for s in measure_policy(pol)
        if s.labels.get("aws_service") == "rds"
    } == {
        ("snapshot", 26 * 3600),
        ("restorable", 26 * 3600),
        ("recovery_point", 30 * 3600),
    }


def test_policy_limits_absent_for_services_out_of_scope_or_disabled() -> None:
    pol = policy("controls: {lambda-backup-age: {enabled: false}}", services="[lambda]")
    assert [s for s in measure_policy(pol) if s.metric == n.BACKUP_POLICY_MAX_AGE.name] == []


def test_age_text() -> None:
    assert b.age_text(dt.timedelta(minutes=5)) == "5 min"
    assert b.age_text(dt.timedelta(hours=5)) == "5.0 h"
    assert b.age_text(dt.timedelta(days=5)) == "5.0 d"
    assert b.age_text(dt.timedelta(seconds=-5)) == "0 min"


def test_the_readme_backup_policy_example_is_a_valid_policy() -> None:
    """The README shows how the backup policy is written: it must compile as it stands."""
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Backup policy", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    pol = policy(block)
    assert set(yaml.safe_load(block)["controls"]) <= set(pol.controls)
    critical = make_fn("critical", code_sha256=CODE_V2, tags=frozen_tags({"tier": "critical"}))
    assert gauges(lambda_snapshot(critical), pol)[(LIMIT, "critical", "version")] == 86400
    assert pol.controls["lambda-log-export"].base.enabled
