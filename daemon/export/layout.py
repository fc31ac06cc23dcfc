"""Where snapshots live in the bucket. Pure.

    s3://BUCKET/PREFIX/ACCOUNT/REGION/FUNCTION/<snapshot id>/manifest.json      (written last)
    s3://BUCKET/PREFIX/ACCOUNT/REGION/FUNCTION/<snapshot id>/function.<h>.json  (the document)
    s3://BUCKET/PREFIX/ACCOUNT/REGION/FUNCTION/<snapshot id>/code/<sha256>.zip  (packages)
    s3://BUCKET/PREFIX/ACCOUNT/REGION/FUNCTION/.claims/<base>--<revision>       (writer claims)

A snapshot id is `<UTC timestamp>-<revision>`, e.g. `20250601T120000.123Z-3f2a9c0d1e4b5a69`: ids
sort in time order, and the revision (the content digest) says what it holds. Object names inside a
snapshot carry their own digest, so two writers that race for one snapshot never overwrite each
other's objects; the manifest names the ones it vouches for.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

MANIFEST = "manifest.json"
CLAIMS = ".claims"
_ID = re.compile(r"^(\d{8}T\d{6}\.\d{3}Z)-([0-9a-f]{8,64})$")
_FUNCTION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_TIME_FORMAT = "%Y%m%dT%H%M%S"


class LayoutError(ValueError):
    """A key or URL that does not name what it should."""


def snapshot_id(captured_at: dt.datetime, revision: str) -> str:
    t = captured_at.astimezone(dt.UTC)
    return f"{t.strftime(_TIME_FORMAT)}.{t.microsecond // 1000:03d}Z-{revision}"


def parse_snapshot_id(text: str) -> tuple[dt.datetime, str] | None:
    m = _ID.match(text)
    if m is None:
        return None
    stamp, revision = m.groups()
    base, _, millis = stamp[:-1].partition(".")
    try:
        t = dt.datetime.strptime(base, _TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return t + dt.timedelta(milliseconds=int(millis)), revision


@dataclass(frozen=True, slots=True)
class Location:
    """The bucket and key prefix all snapshots live under."""

    bucket: str
    prefix: str = ""

    def _root(self) -> str:
        return f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""

    def prefix_for(self, account: str | None = None, region: str | None = None) -> str:
        """The key prefix of everything, of an account, or of an account-region."""
        if account is None:
            return self._root()
        if region is None:
            return f"{self._root()}{account}/"
        return self.region_prefix(account, region)

    def region_prefix(self, account: str, region: str) -> str:
        return f"{self._root()}{account}/{region}/"

    def function_prefix(self, account: str, region: str, function: str) -> str:
        return f"{self.region_prefix(account, region)}{function}/"

    def snapshot_prefix(self, account: str, region: str, function: str, sid: str) -> str:
        return f"{self.function_prefix(account, region, function)}{sid}/"

    def claim_key(self, account: str, region: str, function: str, base: str, rev: str) -> str:
        return f"{self.function_prefix(account, region, function)}{CLAIMS}/{base}--{rev}"

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def parse(self, key: str) -> KeyParts | None:
        """What a key under this location names (None: not a snapshot layout key)."""
        root = self._root()
        if not key.startswith(root):
            return None
        segs = key[len(root) :].split("/")
        if len(segs) < 4:
            return None
        account, region, function, sid = segs[:4]
        if not (_ACCOUNT.match(account) and _REGION.match(region) and _FUNCTION.match(function)):
            return None
        rest = "/".join(segs[4:])
        if sid == CLAIMS:
            return KeyParts(account, region, function, None, rest, claim=True)
        if parse_snapshot_id(sid) is None or not rest:
            return None
        return KeyParts(account, region, function, sid, rest)


@dataclass(frozen=True, slots=True)
class KeyParts:
    account: str
    region: str
    function: str
    snapshot_id: str | None  # None for a claim
    name: str  # the object's name inside the snapshot (or the claim's name)
    claim: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotAddress:
    """A snapshot named by an s3:// URL (as `restore --snapshot` takes it)."""

    bucket: str
    prefix: str  # the key prefix of the snapshot, ending in "/"
    account: str
    region: str
    function: str
    snapshot_id: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST


def parse_snapshot_url(url: str) -> SnapshotAddress:
    """s3://BUCKET/[PREFIX/]ACCOUNT/REGION/FUNCTION/<snapshot id>[/[manifest.json]]"""
    if not url.startswith("s3://"):
        raise LayoutError(f"{url!r} is not an s3:// URL")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise LayoutError(f"{url!r} names no snapshot (expected s3://BUCKET/.../<snapshot id>/)")
    key = key.removesuffix(MANIFEST).rstrip("/")
    segs = key.split("/")
    if len(segs) < 4:
        raise LayoutError(
            f"{url!r}: expected s3://BUCKET/[PREFIX/]ACCOUNT/REGION/FUNCTION/<snapshot id>/"
        )
    account, region, function, sid = segs[-4:]
    if not _ACCOUNT.match(account):
        raise LayoutError(f"{url!r}: {account!r} is not an account id")
    if not _REGION.match(region):
        raise LayoutError(f"{url!r}: {region!r} is not a region")
    if not _FUNCTION.match(function):
        raise LayoutError(f"{url!r}: {function!r} is not a function name")
    if parse_snapshot_id(sid) is None:
        raise LayoutError(f"{url!r}: {sid!r} is not a snapshot id (<timestamp>-<revision>)")
    return SnapshotAddress(bucket, key + "/", account, region, function, sid)
