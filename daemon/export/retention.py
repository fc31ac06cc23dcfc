"""Which snapshots to delete. Pure: the exporter runs the plan after each sweep's writes.

Rules, per function, over the snapshots that have a manifest (newest first):
- a snapshot is kept when any rule keeps it: it is among the newest `keep_last`, or it is newer
  than `max_age`; with neither rule set, everything is kept;
- the newest valid snapshot of a function is never deleted — whether the function still exists or
  not: after a deletion it is exactly what a restore needs, and the daemon cannot tell a deliberate
  deletion from an accident (expire it with an S3 lifecycle rule, or delete it by hand);
- a snapshot written by a newer daemon (unknown schema) is never deleted (checked by the caller
  before it deletes);
- an unfinished snapshot (objects but no manifest: a writer died) is deleted once its newest object
  is older than the grace period (the claim timeout), as are objects inside a valid snapshot that
  its manifest does not list (the loser of a takeover race);
- writer claims are deleted after `claim_age` (long after any writer could still race on them).

Deleting a snapshot deletes its manifest first, so readers stop trusting it before anything it
lists goes away.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from daemon.export.bucket import RegionIndex, SnapshotEntry
from daemon.export.layout import MANIFEST

CLAIM_AGE = dt.timedelta(days=7)


@dataclass(frozen=True, slots=True)
class RetentionRules:
    keep_last: int | None
    max_age: dt.timedelta | None
    grace: dt.timedelta
    claim_age: dt.timedelta = CLAIM_AGE


@dataclass(frozen=True, slots=True)
class Deletion:
    function: str
    kind: str  # "snapshot" | "partial" | "orphans" | "claim"
    label: str  # the snapshot id or the claim's key
    keys: tuple[str, ...]  # the manifest first for a snapshot
    reason: str
    entry: SnapshotEntry | None = None


def _keys(entry: SnapshotEntry) -> tuple[str, ...]:
    manifest = entry.objects.get(MANIFEST)
    others = sorted(o.key for name, o in entry.objects.items() if name != MANIFEST)
    return ((manifest.key,) if manifest else ()) + tuple(others)


def plan_retention(index: RegionIndex, rules: RetentionRules, now: dt.datetime) -> list[Deletion]:
    out: list[Deletion] = []
    for function, entries in sorted(index.functions.items()):
        newest_valid = next((e for e in entries if e.valid), None)
        complete = [e for e in entries if e.has_manifest]
        for rank, entry in enumerate(complete):
            if entry is newest_valid or entry.newer:
                continue
            kept_by_count = rules.keep_last is not None and rank < rules.keep_last
            kept_by_age = rules.max_age is not None and now - entry.captured_at < rules.max_age
            no_rules = rules.keep_last is None and rules.max_age is None
            if kept_by_count or kept_by_age or no_rules:
                continue
            why = []
            if rules.keep_last is not None:
                why.append(f"beyond the newest {rules.keep_last}")
            if rules.max_age is not None:
                why.append(f"older than {rules.max_age.days}d")
            reason = ", ".join(why)
            out.append(
                Deletion(function, "snapshot", entry.snapshot_id, _keys(entry), reason, entry)
            )
        for entry in entries:
            if entry.has_manifest or now - entry.newest_write < rules.grace:
                continue
            out.append(
                Deletion(
                    function,
                    "partial",
                    entry.snapshot_id,
                    _keys(entry),
                    "unfinished snapshot (no manifest)",
                    entry,
                )
            )
        for entry in entries:
            if not entry.valid or entry.manifest is None:
                continue
            listed = {o.name for o in entry.manifest.objects} | {MANIFEST}
            stray = tuple(
                sorted(
                    o.key
                    for name, o in entry.objects.items()
                    if name not in listed and now - o.last_modified >= rules.grace
                )
            )
            if stray:
                out.append(
                    Deletion(
                        function,
                        "orphans",
                        entry.snapshot_id,
                        stray,
                        "objects no manifest refers to",
                        entry,
                    )
                )
    for function, claims in sorted(index.claims.items()):
        for claim in claims:
            if now - claim.last_modified >= rules.claim_age:
                out.append(
                    Deletion(function, "claim", claim.key, (claim.key,), "writer claim expired")
                )
    return out
