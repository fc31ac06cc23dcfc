"""The backup policy against moto server over HTTP: every backup control and every age figure.

The test's own account holds the backup part of the demo estate (primary region): functions with
current, stale and missing published versions, short and unlimited log retention, exported and
unexported logs, a deleted own layer version and a deleted vendor layer version, a function no
stack manages; databases with backups off, a short retention, a three-day-old snapshot and
recovery point, manual snapshots that are unencrypted, shared or public, and clusters.

Each age is computed here from what moto returns (the test reads the same APIs), with the
daemon's `now` injected through its clock: at the real time, and 25 hours later.

moto gaps covered, and where: AWS Backup's ListProtectedResources (404 in moto) and the old
backups (moto stamps "now") come from daemon/demo/backup_shim.py; another account's layers (moto
swaps them for the caller's own, GetLayerVersionByArn is 500) from the shim in
daemon/demo/moto_server.py. moto reports a LatestRestorableTime of "now" on every read, also with
retention 0 (AWS omits it there): restorable ages are checked against the sweep's time window.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from daemon.app import Daemon
from daemon.collectors.base import parse_timestamp
from daemon.controls.backup import age_text
from daemon.demo.estate import PRIMARY, Violation, expected_violations, seed_estate
from daemon.demo.moto_server import EmbeddedMoto, ShimRequest, ShimResponse, json_error, query_error
from daemon.model import Finding, Status
from daemon.policy import load_policy

from .conftest import ALL_SERVICES, policy_for
from .harness import Sample, aws_client, parse_exposition, select, settings_for, value

ACCOUNT = "767676767676"
FUNCTIONS = [
    "orders-api",
    "stale-version",
    "old-backup",
    "archive-job",
    "unpublished",
    "short-logs",
    "unexported-logs",
    "orphaned-layer",
    "vendor-abandoned",
    "hand-made",
]
DATABASES = [
    "reporting-mysql",
    "stale-backup-db",
    "no-backups-db",
    "short-retention-db",
    "legacy-aurora",
    "orders-aurora",
]
LATER = dt.timedelta(hours=25)
H = 3600.0
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@dataclass
class Sweep:
    started: dt.datetime
    finished: dt.datetime
    now: dt.datetime  # the daemon's (injected) now
    samples: list[Sample]
    findings: list[Finding]


@dataclass
class Moto:
    """What moto returns for the seeded resources, read by the test itself."""

    versions: dict[str, list[dict[str, Any]]]  # function name -> published versions
    latest: dict[str, dict[str, Any]]  # function name -> $LATEST
    databases: dict[str, dict[str, Any]]  # identifier -> DescribeDBInstances/Clusters entry
    snapshots: dict[str, list[dict[str, Any]]]  # database identifier -> its snapshots
    protected: dict[str, dict[str, Any]]  # ARN -> ListProtectedResources entry


async def _sweep(policy: Path, offset: dt.timedelta) -> Sweep:
    started = dt.datetime.now(dt.UTC)
    clock_now: list[dt.datetime] = []

    def clock() -> dt.datetime:
        now = dt.datetime.now(dt.UTC) + offset
        clock_now.append(now)
        return now

    daemon = Daemon(settings_for(policy), load_policy(policy), clock=clock)
    try:
        outcomes = await daemon.reconciler.sweep_once()
    finally:
        await daemon.gateway.close()
    assert all(o.error is None for o in outcomes), outcomes
    findings = [f for o in outcomes if o.result for f in o.result.findings]
    samples = parse_exposition(generate_latest(daemon.registry).decode())
    return Sweep(started, dt.datetime.now(dt.UTC), max(clock_now), samples, findings)


async def _moto() -> Moto:
    async with aws_client("lambda", ACCOUNT) as lam:
        entries = (await lam.list_functions(FunctionVersion="ALL"))["Functions"]
    versions: dict[str, list[dict[str, Any]]] = {}
    latest = {}
    for e in entries:
        if e["Version"] == "$LATEST":
            latest[e["FunctionName"]] = e
        else:
            versions.setdefault(e["FunctionName"], []).append(e)
    async with aws_client("rds", ACCOUNT) as rds:
        dbs = {
            d["DBInstanceIdentifier"]: d for d in (await rds.describe_db_instances())["DBInstances"]
        }
        dbs |= {
            c["DBClusterIdentifier"]: c for c in (await rds.describe_db_clusters())["DBClusters"]
        }
        snapshots: dict[str, list[dict[str, Any]]] = {}
        for s in (await rds.describe_db_snapshots())["DBSnapshots"]:
            snapshots.setdefault(s["DBInstanceIdentifier"], []).append(s)
        for s in (await rds.describe_db_cluster_snapshots())["DBClusterSnapshots"]:
            snapshots.setdefault(s["DBClusterIdentifier"], []).append(s)
    async with aws_client("backup", ACCOUNT) as backup:
        protected = {
            r["ResourceArn"]: r for r in (await backup.list_protected_resources())["Results"]
        }
    return Moto(versions, latest, dbs, snapshots, protected)


@dataclass
class Run:
    now: Sweep
    later: Sweep
    moto: Moto


@pytest.fixture(scope="module")
def run(moto: EmbeddedMoto, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("backup")
    policy = policy_for([ACCOUNT], tmp, regions=[PRIMARY], services=ALL_SERVICES)

    async def go() -> Run:
        await seed_estate([ACCOUNT], [PRIMARY], only=FUNCTIONS + DATABASES)
        return Run(
            await _sweep(policy, dt.timedelta(0)), await _sweep(policy, LATER), await _moto()
        )

    return asyncio.run(go())


def _status(sweep: Sweep, control: str, name: str) -> Finding:
    found = [f for f in sweep.findings if f.control == control and f.resource.endswith(f":{name}")]
    assert len(found) == 1, (control, name, found)
    return found[0]


def _ts(value: Any) -> dt.datetime:
    parsed = parse_timestamp(value)
    assert parsed is not None, value
    return parsed


def _gauge(sweep: Sweep, metric: str, name: str, kind: str) -> float | None:
    rows = [
        s
        for s in select(sweep.samples, metric, aws_account_id=ACCOUNT, kind=kind)
        if s[1]["resource"].endswith(f":{name}")
    ]
    assert len(rows) <= 1, rows
    return rows[0][2] if rows else None


# --- the seeded violations ---------------------------------------------------------------------


def test_the_daemon_finds_exactly_the_seeded_violations(run: Run) -> None:
    got = {
        Violation(f.account_id, f.region, f.control, f.resource)
        for f in run.now.findings
        if f.violating
    }
    expected = expected_violations([ACCOUNT], [PRIMARY], only=FUNCTIONS + DATABASES)
    # the region's concurrency profile is made for the whole estate, not for these few functions
    concurrency = {
        v for v in expected if v.control.startswith("lambda-") and "concurrency" in v.control
    }
    assert {v for v in got if v not in concurrency and "concurrency" not in v.control} == (
        expected - concurrency
    )
    assert not [f for f in run.now.findings if f.status is Status.ERROR]
    backup_controls = {
        "lambda-version-current",
        "lambda-backup-age",
        "lambda-log-retention",
        "lambda-log-export",
        "lambda-layer-versions-exist",
        "lambda-config-recoverable",
        "rds-automated-backups",
        "rds-backup-age",
        "rds-snapshot-encrypted",
        "rds-snapshot-not-public",
        "rds-backup-plan",
    }
    for control in backup_controls:  # each one both passes and fails somewhere here
        statuses = {f.status for f in run.now.findings if f.control == control}
        assert statuses == {Status.PASS, Status.FAIL}, control


# --- Lambda: version ages from moto's data ------------------------------------------------------


@pytest.mark.parametrize("when", ["now", "later"])
def test_lambda_versions_judged_from_the_times_moto_returns(run: Run, when: str) -> None:
    sweep: Sweep = getattr(run, when)
    for name in FUNCTIONS:
        latest = run.moto.latest[name]
        published = run.moto.versions.get(name, [])
        newest = max(published, key=lambda v: int(v["Version"]), default=None)
        ts = _gauge(sweep, "posture_backup_last_timestamp_seconds", name, "version")
        missing = _gauge(sweep, "posture_backup_missing", name, "version")
        limit = _gauge(sweep, "posture_backup_max_age_seconds", name, "version")
        current = newest is not None and newest["CodeSha256"] == latest["CodeSha256"]
        if newest is None:
            assert (ts, missing, limit) == (None, 1, 7 * 86400), name
            since = _ts(latest["LastModified"])
        else:
            version_time = _ts(newest["LastModified"])
            assert ts == version_time.timestamp(), name
            assert missing == 0
            assert limit == (None if current else 7 * 86400), name
            since = max(_ts(latest["LastModified"]), version_time)
        # lambda-version-current: unpublished for longer than 24 h?
        unpublished = sweep.now - since
        f = _status(sweep, "lambda-version-current", name)
        if current:
            assert f.status is Status.PASS
        else:
            failing = unpublished > dt.timedelta(hours=24)
            assert f.status is (Status.FAIL if failing else Status.PASS), (name, f.evidence)
            assert f"unpublished for {age_text(unpublished)}" in f.evidence
        # lambda-backup-age: the newest version older than 7 days while $LATEST differs?
        g = _status(sweep, "lambda-backup-age", name)
        if newest is None:
            assert g.status is Status.FAIL and "no backup" in g.evidence
        elif not current:
            age = sweep.now - _ts(newest["LastModified"])
            assert g.status is (Status.FAIL if age > dt.timedelta(days=7) else Status.PASS)
            assert f"published {age_text(age)} ago" in g.evidence
    # 25 h later, old-backup's change (2 h old at seeding) is past the 24 h grace too
    assert _status(run.now, "lambda-version-current", "old-backup").status is Status.PASS
    assert _status(run.later, "lambda-version-current", "old-backup").status is Status.FAIL


# --- RDS: snapshot, restorable and recovery point ages from moto's data ---------------------------


def _newest_snapshot(run: Run, name: str) -> dt.datetime | None:
    times = [
        _ts(s["SnapshotCreateTime"])
        for s in run.moto.snapshots.get(name, [])
        if s["Status"] == "available"
    ]
    return max(times, default=None)


@pytest.mark.parametrize("when", ["now", "later"])
def test_rds_backup_ages_from_the_times_moto_returns(run: Run, when: str) -> None:
    sweep: Sweep = getattr(run, when)
    limit = dt.timedelta(hours=26)
    for name in DATABASES:
        db = run.moto.databases[name]
        arn = db.get("DBInstanceArn") or db["DBClusterArn"]
        # snapshot: the newest available snapshot, automated or manual
        newest = _newest_snapshot(run, name)
        assert newest is not None  # moto snapshots every database at creation
        assert _gauge(sweep, "posture_backup_last_timestamp_seconds", name, "snapshot") == (
            newest.timestamp()
        )
        assert _gauge(sweep, "posture_backup_missing", name, "snapshot") == 0
        assert _gauge(sweep, "posture_backup_max_age_seconds", name, "snapshot") == 26 * H
        # restorable: moto answers "now" on every read, so within the sweep's window
        restorable = _gauge(sweep, "posture_backup_last_timestamp_seconds", name, "restorable")
        if db["BackupRetentionPeriod"] == 0:
            assert restorable is None
            assert _gauge(sweep, "posture_backup_missing", name, "restorable") == 1
        else:
            assert restorable is not None
            assert sweep.started.timestamp() <= restorable <= sweep.finished.timestamp()
            assert _gauge(sweep, "posture_backup_missing", name, "restorable") == 0
        # recovery point: AWS Backup's last backup
        point = run.moto.protected.get(arn)
        rp = _gauge(sweep, "posture_backup_last_timestamp_seconds", name, "recovery_point")
        assert rp == (_ts(point["LastBackupTime"]).timestamp() if point else None)
        assert _gauge(sweep, "posture_backup_missing", name, "recovery_point") == (
            0 if point else 1
        )
        # the controls agree with those ages
        snapshot_age = sweep.now - newest
        restorable_age = (
            sweep.now - dt.datetime.fromtimestamp(restorable, dt.UTC) if restorable else None
        )
        too_old = snapshot_age > limit or restorable_age is None or restorable_age > limit
        f = _status(sweep, "rds-backup-age", name)
        assert f.status is (Status.FAIL if too_old else Status.PASS), (name, f.evidence)
        assert f"{age_text(snapshot_age)} old" in f.evidence
        plan = _status(sweep, "rds-backup-plan", name)
        point_old = point is None or sweep.now - _ts(point["LastBackupTime"]) > limit
        assert plan.status is (Status.FAIL if point_old else Status.PASS), (name, plan.evidence)
    # 25 h later: snapshots taken at seeding are still within 26 h, recovery points (3 h old at
    # seeding) are not
    assert _status(run.later, "rds-backup-age", "orders-aurora").status is Status.PASS
    assert _status(run.later, "rds-backup-plan", "orders-aurora").status is Status.FAIL


def test_policy_limits_are_exported(run: Run) -> None:
    limits = {
        (s[1]["aws_service"], s[1]["kind"]): s[2]
        for s in select(run.now.samples, "posture_backup_policy_max_age_seconds")
    }
    assert limits == {
        ("lambda", "version"): 7 * 86400,
        ("rds", "snapshot"): 26 * H,
        ("rds", "restorable"): 26 * H,
        ("rds", "recovery_point"): 26 * H,
    }


def test_recording_rules_on_the_daemons_own_exposition(run: Run, tmp_path: Path) -> None:
    """promtool evaluates the shipped backup rules on the series the daemon exported. promtool's
    clock starts at 0, so timestamps are shifted: time() at eval_time 10m is the sweep's now."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    sweep = run.later
    base = float(int(sweep.now.timestamp()) - 600)  # time() = 600 at eval_time 10m: "now"
    series = []
    for name, labels, val in sweep.samples:
        if name.startswith("posture_backup_") and labels.get("aws_account_id") == ACCOUNT:
            shifted = val - base if name == "posture_backup_last_timestamp_seconds" else val
            series.append(
                {
                    "series": _selector(name, {"job": "posture", **labels}),
                    "values": f"{shifted!r}x12",
                }
            )
    expected = []
    for name in ("stale-backup-db", "orders-aurora"):
        newest = _newest_snapshot(run, name)
        assert newest is not None
        db = run.moto.databases[name]
        labels = {
            "job": "posture",
            "aws_account_id": ACCOUNT,
            "aws_region": PRIMARY,
            "aws_service": "rds",
            "resource": db.get("DBInstanceArn") or db["DBClusterArn"],
            "kind": "snapshot",
        }
        # promtool's own arithmetic, on the shifted timestamp moto returned (floats compare exactly)
        ratio = (600.0 - (newest.timestamp() - base)) / (26 * H)
        assert abs(ratio - (sweep.now - newest).total_seconds() / (26 * H)) < 1e-4
        expected.append({"labels": _selector("posture:backup_age_ratio", labels), "value": ratio})
    doc = {
        "rule_files": [str(DEPLOY / "backup.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": 'posture:backup_age_ratio{kind="snapshot",resource=~".*(stale-backup-db|orders-aurora)"}',
                        "eval_time": "10m",
                        "exp_samples": expected,
                    }
                ],
            }
        ],
    }
    path = tmp_path / "exposition.test.yml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the stale database is over its limit, the fresh cluster under it
    ratios = {e["labels"]: e["value"] for e in expected}
    assert [v > 1 for v in ratios.values()] == [True, False]


def _selector(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


# --- unknown is not compliant --------------------------------------------------------------------


def _account_of(request: ShimRequest) -> str:
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(request.access_key))


def _denials(request: ShimRequest) -> ShimResponse | None:
    if _account_of(request) != ACCOUNT:
        return None
    if request.service == "rds" and request.operation == "DescribeDBSnapshots":
        return query_error("AccessDenied", "not authorized to perform rds:DescribeDBSnapshots")
    if request.service == "backup" and request.path.rstrip("/") == "/resources":
        return json_error("AccessDeniedException", "not authorized", "403 Forbidden")
    if request.service == "lambda" and "find=LayerVersion" in request.query:
        return json_error("AccessDeniedException", "not authorized", "403 Forbidden")
    if request.service == "logs" and request.operation == "DescribeSubscriptionFilters":
        return json_error("AccessDeniedException", "not authorized", "400 Bad Request")
    return None


def test_denied_backup_reads_are_errors_and_absent_series(
    run: Run, moto: EmbeddedMoto, tmp_path: Path
) -> None:
    shim = moto.shim
    assert shim is not None
    policy = policy_for([ACCOUNT], tmp_path, regions=[PRIMARY], services=["lambda", "rds"])
    shim.add_fault(_denials)
    try:
        sweep = asyncio.run(_sweep(policy, dt.timedelta(0)))
    finally:
        shim.clear_faults()
    for control, name in (
        ("rds-backup-age", "stale-backup-db"),
        ("rds-backup-plan", "orders-aurora"),
        ("lambda-layer-versions-exist", "vendor-abandoned"),
        ("lambda-log-export", "short-logs"),
    ):
        f = _status(sweep, control, name)
        assert f.status is Status.ERROR and "could not read" in f.evidence, (control, f.evidence)
    # the cluster snapshots were readable, the instance ones were not: the listing fails as a
    # whole for every database (one aspect), so no snapshot series and no "missing" guess
    assert (
        _gauge(sweep, "posture_backup_last_timestamp_seconds", "stale-backup-db", "snapshot")
        is None
    )
    assert _gauge(sweep, "posture_backup_missing", "stale-backup-db", "snapshot") is None
    assert not select(sweep.samples, "posture_backup_missing", kind="recovery_point")
    # what could be read is still judged: automated backups, restorable times, own layers
    assert _status(sweep, "rds-automated-backups", "no-backups-db").status is Status.FAIL
    assert _status(sweep, "lambda-layer-versions-exist", "orphaned-layer").status is Status.FAIL
    assert (
        value(
            sweep.samples,
            "posture_backup_missing",
            aws_account_id=ACCOUNT,
            kind="restorable",
            resource=run.moto.databases["no-backups-db"]["DBInstanceArn"],
        )
        == 1
    )
