"""What the configuration export knows about a function: its newest valid snapshot in the bucket.

Set on each function of a Lambda snapshot when the daemon's export is enabled (see daemon/export/).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

ASPECT_EXPORT = "export"  # the export bucket's index (ListObjectsV2 + manifests)


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """A valid snapshot: its manifest exists, parses, and every object it lists is present with the
    recorded size and checksum."""

    url: str  # s3://bucket/prefix/ACCOUNT/REGION/FUNCTION/<snapshot id>/
    snapshot_id: str  # <timestamp>-<revision>
    captured_at: datetime
    revision: str  # content digest of the snapshot
    fingerprint: str  # what a sweep reads, at the time of the snapshot (see model/lambdaconfig.py)
    missing: tuple[str, ...] = ()  # parts the snapshot could not hold: "code", "environment"


@dataclass(frozen=True, slots=True)
class FunctionExport:
    """The export state of one function at the end of a sweep."""

    latest: SnapshotRef | None  # newest valid snapshot (None: never exported)
    pending_since: datetime | None = None  # the current state has not been exported since
    problem: str | None = None  # why the last attempt wrote nothing ("PutObject: AccessDenied")

    @property
    def current(self) -> bool:
        return self.latest is not None and self.pending_since is None


@dataclass(frozen=True, slots=True)
class ExportCoverage:
    """The export of one account-region (on the Lambda snapshot; None: export disabled)."""

    location: str  # s3://bucket/prefix/ACCOUNT/REGION/
    error: str | None = None  # the index could not be read (every function then has an error)
