"""Retention planning over a bucket listing, with `now` injected."""

from __future__ import annotations

import datetime as dt

from daemon.export.bucket import ObjectInfo, RegionIndex, SnapshotEntry
from daemon.export.layout import MANIFEST, Location, snapshot_id
from daemon.export.manifest import FunctionIdentity, Manifest, ManifestObject
from daemon.export.retention import RetentionRules, plan_retention

NOW = dt.datetime(2025, 6, 30, tzinfo=dt.UTC)
LOC = Location("b", "p")
ACCOUNT, REGION = "111111111111", "us-east-1"
GRACE = dt.timedelta(minutes=15)


def entry(
    function: str,
    days_ago: float,
    *,
    manifest: bool = True,
    valid: bool = True,
    newer: bool = False,
    extra: tuple[str, ...] = (),
) -> SnapshotEntry:
    t = NOW - dt.timedelta(days=days_ago)
    sid = snapshot_id(t, f"{int(days_ago * 1000):016x}")
    prefix = LOC.snapshot_prefix(ACCOUNT, REGION, function, sid)
    e = SnapshotEntry(function, sid, prefix)
    names = ["function.a.json", *extra] + ([MANIFEST] if manifest else [])
    for name in names:
        e.objects[name] = ObjectInfo(prefix + name, 10, "etag", t)
    if manifest and valid and not newer:
        e.manifest = Manifest(
            snapshot_id=sid,
            captured_at=t,
            function=FunctionIdentity(function, "arn", ACCOUNT, REGION),
            revision=sid.rsplit("-", 1)[1],
            fingerprint="f",
            revision_id=None,
            code_sha256="",
            document="function.a.json",
            environment_values="omitted",
            objects=(ManifestObject("function.a.json", 10, "a" * 64),),
        )
    e.validated = manifest
    if manifest and not valid:
        e.problem = "function.a.json is missing"
    if newer:
        e.problem, e.newer = "written by a newer posture-daemon", True
    return e


def index(*entries: SnapshotEntry) -> RegionIndex:
    idx = RegionIndex(ACCOUNT, REGION)
    for e in entries:
        idx.add(e)
    return idx


def deleted(plan: list, kind: str = "snapshot") -> list[str]:
    return [d.label for d in plan if d.kind == kind]


def rules(keep_last: int | None, days: float | None) -> RetentionRules:
    return RetentionRules(keep_last, dt.timedelta(days=days) if days else None, GRACE)


def test_keep_last() -> None:
    snaps = [entry("fn", d) for d in (0.1, 1, 2, 3, 4)]
    plan = plan_retention(index(*snaps), rules(2, None), NOW)
    assert deleted(plan) == [s.snapshot_id for s in snaps[2:]]
    # the manifest goes first
    assert all(d.keys[0].endswith("/" + MANIFEST) for d in plan)


def test_max_age_and_either_rule_keeps() -> None:
    snaps = [entry("fn", d) for d in (0.1, 1, 2, 3, 40)]
    assert deleted(plan_retention(index(*snaps), rules(None, 2.5), NOW)) == [
        snaps[3].snapshot_id,
        snaps[4].snapshot_id,
    ]
    # keep_last 4 keeps the 4th although older than 2.5 days
    assert deleted(plan_retention(index(*snaps), rules(4, 2.5), NOW)) == [snaps[4].snapshot_id]


def test_no_rule_keeps_everything() -> None:
    snaps = [entry("fn", d) for d in (1, 100, 1000)]
    assert plan_retention(index(*snaps), rules(None, None), NOW) == []


def test_newest_valid_snapshot_always_stays() -> None:
    # every snapshot is old; the newest two are damaged: the newest *valid* one stays
    snaps = [entry("fn", 50, valid=False), entry("fn", 60, valid=False), entry("fn", 70)]
    plan = plan_retention(index(*snaps), rules(1, 1), NOW)
    assert snaps[2].snapshot_id not in deleted(plan)
    assert deleted(plan) == [snaps[1].snapshot_id]  # the first damaged one is kept by keep_last
    # a deleted function (nothing in Lambda any more): its only snapshot stays, however old
    assert plan_retention(index(entry("gone", 900)), rules(None, 1), NOW) == []


def test_a_newer_daemons_snapshot_is_never_deleted() -> None:
    snaps = [entry("fn", 1), entry("fn", 50, newer=True), entry("fn", 60)]
    assert deleted(plan_retention(index(*snaps), rules(1, None), NOW)) == [snaps[2].snapshot_id]


def test_unfinished_snapshots_after_the_grace_period() -> None:
    fresh = entry("fn", 0.001, manifest=False)  # 86 s old: its writer may still be at work
    stale = entry("fn", 2, manifest=False)
    plan = plan_retention(index(entry("fn", 0.5), fresh, stale), rules(None, None), NOW)
    assert deleted(plan, "partial") == [stale.snapshot_id]


def test_orphans_of_a_valid_snapshot() -> None:
    e = entry("fn", 1, extra=("function.loser.json",))
    plan = plan_retention(index(e), rules(None, None), NOW)
    (orphans,) = [d for d in plan if d.kind == "orphans"]
    assert orphans.keys == (e.prefix + "function.loser.json",)


def test_claims_expire_after_a_week() -> None:
    idx = index(entry("fn", 0.1))
    base = LOC.function_prefix(ACCOUNT, REGION, "fn") + ".claims/"
    idx.claims["fn"] = [
        ObjectInfo(base + "old", 1, "e", NOW - dt.timedelta(days=8)),
        ObjectInfo(base + "new", 1, "e", NOW - dt.timedelta(days=6)),
    ]
    assert deleted(plan_retention(idx, rules(None, None), NOW), "claim") == [base + "old"]
