"""lambda-config-export-current and the backup gauges of kind "export", through the engine."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from daemon.controls.engine import evaluate
from daemon.measures import measure_target
from daemon.metrics import names as n
from daemon.model import Status, Target, frozen_errors, region_resource_id
from daemon.model import awslambda as m
from daemon.model.export import ASPECT_EXPORT, ExportCoverage, FunctionExport, SnapshotRef
from daemon.policy import parse_policy_text

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TARGET = Target("111111111111", "us-east-1", "lambda")
CONTROL = "lambda-config-export-current"
POLICY = """\
version: 1
scope:
  accounts: {static: [{id: "111111111111"}]}
  regions: [us-east-1]
"""
COVERAGE = ExportCoverage("s3://b/p/111111111111/us-east-1/")


def ref(minutes_ago: float, missing: tuple[str, ...] = ()) -> SnapshotRef:
    return SnapshotRef(
        url="s3://b/p/x/",
        snapshot_id="20260301T110000.000Z-abcdabcdabcdabcd",
        captured_at=NOW - dt.timedelta(minutes=minutes_ago),
        revision="abcdabcdabcdabcd",
        fingerprint="f",
        missing=missing,
    )


def fn(name: str, export: FunctionExport | None, **kw: Any) -> m.LambdaFunction:
    return m.LambdaFunction(
        arn=f"arn:aws:lambda:us-east-1:111111111111:function:{name}",
        name=name,
        account_id="111111111111",
        region="us-east-1",
        runtime="python3.12",
        package_type="Zip",
        handler="app.handler",
        role_arn="arn:aws:iam::111111111111:role/r",
        memory_mb=128,
        timeout_s=3,
        code_sha256="x",
        last_modified=None,
        revision_id=None,
        export=export,
        **kw,
    )


def snapshot(
    *functions: m.LambdaFunction, coverage: ExportCoverage | None = COVERAGE
) -> m.LambdaSnapshot:
    region = m.RegionPosture(
        region_resource_id("111111111111", "us-east-1"), "111111111111", "us-east-1"
    )
    return m.LambdaSnapshot(TARGET, NOW, functions, (), region, export=coverage)


def outcomes(snap: m.LambdaSnapshot, policy_text: str = POLICY) -> dict[str, tuple[Status, str]]:
    policy = parse_policy_text(policy_text)
    found = evaluate(snap, policy, NOW).findings
    return {
        f.resource.rsplit(":", 1)[-1]: (f.status, f.evidence) for f in found if f.control == CONTROL
    }


def test_outcomes() -> None:
    snap = snapshot(
        fn("current", FunctionExport(ref(600))),
        fn("pending", FunctionExport(ref(600), pending_since=NOW - dt.timedelta(minutes=10))),
        fn(
            "stale",
            FunctionExport(
                ref(600),
                pending_since=NOW - dt.timedelta(minutes=90),
                problem="PutObject: AccessDenied",
            ),
        ),
        fn("never", FunctionExport(None, pending_since=NOW - dt.timedelta(hours=3))),
        fn("no-code", FunctionExport(ref(5, ("code",)))),
        fn("no-env", FunctionExport(ref(5, ("environment",)))),
        fn("unreadable", None, errors=frozen_errors({ASPECT_EXPORT: "AccessDenied"})),
    )
    out = outcomes(snap)
    assert out["current"][0] is Status.PASS and "is current" in out["current"][1]
    assert out["pending"] == (
        Status.PASS,
        "export pending for 10 min; newest: snapshot 20260301T110000.000Z-abcdabcdabcdabcd",
    )
    assert out["stale"][0] is Status.FAIL
    assert "not exported for 90 min (allowed 60 min)" in out["stale"][1]
    assert "last attempt: PutObject: AccessDenied" in out["stale"][1]
    assert out["never"][0] is Status.FAIL and "newest: no snapshot" in out["never"][1]
    assert out["no-code"] == (
        Status.FAIL,
        "snapshot 20260301T110000.000Z-abcdabcdabcdabcd is current but lacks code",
    )
    assert out["no-env"][0] is Status.FAIL
    assert out["unreadable"] == (Status.ERROR, "could not read export (AccessDenied)")


def test_parameters() -> None:
    snap = snapshot(
        fn("no-code", FunctionExport(ref(5, ("code",)))),
        fn("pending", FunctionExport(ref(600), pending_since=NOW - dt.timedelta(minutes=90))),
    )
    relaxed = (
        POLICY
        + """\
controls:
  lambda-config-export-current:
    params: {require_code: false, max_lag_minutes: 120}
"""
    )
    assert {k: v[0] for k, v in outcomes(snap, relaxed).items()} == {
        "no-code": Status.PASS,
        "pending": Status.PASS,
    }
    # a lag limit beyond what a timedelta holds is judged, not an evaluation failure
    huge = relaxed.replace("max_lag_minutes: 120", "max_lag_minutes: 1000000000000000")
    assert outcomes(snap, huge)["pending"][0] is Status.PASS


def test_not_applicable_without_the_export() -> None:
    assert outcomes(snapshot(fn("a", None), coverage=None)) == {}


def test_backup_gauges() -> None:
    policy = parse_policy_text(POLICY)
    snap = snapshot(
        fn("a", FunctionExport(ref(30))),
        fn("b", FunctionExport(None, pending_since=NOW)),
        fn("c", None, errors=frozen_errors({ASPECT_EXPORT: "Throttling"})),
    )
    samples = {
        (s.metric, s.labels["resource"].rsplit(":", 1)[-1]): (s.value, s.labels["kind"])
        for s in measure_target(snap, policy, NOW)
        if s.metric.startswith("posture_backup") and s.labels.get("kind") == "export"
    }  # the backup policy's measures add other kinds (version, ...) for the same functions
    stamp = (NOW - dt.timedelta(minutes=30)).timestamp()
    assert samples == {
        (n.BACKUP_LAST_TIMESTAMP.name, "a"): (stamp, "export"),
        (n.BACKUP_MISSING.name, "a"): (0, "export"),
        (n.BACKUP_MISSING.name, "b"): (1, "export"),
    }  # c: unknown, so no series rather than a wrong one
    assert not [
        s
        for s in measure_target(replace(snap, export=None), policy, NOW)
        if s.metric.startswith("posture_backup") and s.labels.get("kind") == "export"
    ]


@pytest.mark.parametrize("metric", [n.BACKUP_LAST_TIMESTAMP, n.BACKUP_MISSING])
def test_backup_metrics_contract(metric: n.MetricDef) -> None:
    """The names and labels the backup policy issue defines, so its kinds join these."""
    assert metric.labels == ("aws_account_id", "aws_region", "aws_service", "resource", "kind")
    assert metric.source == "state" and metric.type == "gauge"
