"""The snapshot bucket: listing, validating, reading and writing snapshots (S3 through AwsApi).

Validation is what makes a snapshot trusted (readers: the exporter's index, `snapshots list`,
retention, restore): its manifest parses with a known schema, and every object it lists is present
with the recorded size and SHA-256. Sizes come from the listing; checksums from S3 itself (objects
are written with `ChecksumSHA256`, which S3 verifies on upload and returns on HeadObject with
ChecksumMode=ENABLED), or, when the store has none, by reading the object and hashing it. Results
are cached per object key and ETag, so a snapshot is verified once per process and re-verified
when an object is replaced.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from daemon.aws.api import AwsApi
from daemon.aws.errors import AwsError, ErrorKind
from daemon.export.layout import MANIFEST, Location, parse_snapshot_id
from daemon.export.manifest import Manifest, ManifestError, listing_problems, parse_manifest
from daemon.model.export import SnapshotRef

PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: dt.datetime


@dataclass
class SnapshotEntry:
    """One snapshot directory of a function, as the listing shows it."""

    function: str
    snapshot_id: str
    prefix: str
    objects: dict[str, ObjectInfo] = field(default_factory=dict)  # name -> object
    manifest: Manifest | None = None
    problem: str | None = None  # why it is not trusted (set by validate)
    newer: bool = False  # written by a newer schema: never touched
    validated: bool = False

    @property
    def captured_at(self) -> dt.datetime:
        parsed = parse_snapshot_id(self.snapshot_id)
        assert parsed is not None  # ids are parsed before an entry is made
        return parsed[0]

    @property
    def revision(self) -> str:
        parsed = parse_snapshot_id(self.snapshot_id)
        assert parsed is not None
        return parsed[1]

    @property
    def has_manifest(self) -> bool:
        return MANIFEST in self.objects

    @property
    def valid(self) -> bool:
        return self.validated and self.manifest is not None and self.problem is None

    @property
    def newest_write(self) -> dt.datetime:
        return max(o.last_modified for o in self.objects.values())

    def ref(self, location: Location) -> SnapshotRef:
        assert self.manifest is not None
        return SnapshotRef(
            url=location.url(self.prefix),
            snapshot_id=self.snapshot_id,
            captured_at=self.manifest.captured_at,
            revision=self.manifest.revision,
            fingerprint=self.manifest.fingerprint,
            missing=self.manifest.missing,
        )


@dataclass
class RegionIndex:
    """Every snapshot and claim of one account-region in the bucket."""

    account: str
    region: str
    functions: dict[str, list[SnapshotEntry]] = field(default_factory=dict)  # newest first
    claims: dict[str, list[ObjectInfo]] = field(default_factory=dict)

    def snapshots(self, function: str) -> list[SnapshotEntry]:
        return self.functions.get(function, [])

    def add(self, entry: SnapshotEntry) -> None:
        entries = [e for e in self.snapshots(entry.function) if e.snapshot_id != entry.snapshot_id]
        entries.append(entry)
        entries.sort(key=lambda e: e.snapshot_id, reverse=True)
        self.functions[entry.function] = entries


def b64_of_hex(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class _Lru:
    def __init__(self, size: int = 200_000) -> None:
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._size = size

    def get(self, key: tuple[str, str]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: tuple[str, str], value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


_OK = "ok"


class SnapshotBucket:
    def __init__(self, api: AwsApi, location: Location) -> None:
        self.api = api
        self.location = location
        self._manifests = _Lru()  # (key, etag) -> Manifest | ManifestError
        self._checksums = _Lru()  # (key, etag) -> "ok" | problem

    @property
    def bucket(self) -> str:
        return self.location.bucket

    # --- listing ---------------------------------------------------------------------------------

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        out = []
        async for page in self.api.pages(
            "s3", "list_objects_v2", Bucket=self.bucket, Prefix=prefix
        ):
            for o in page.get("Contents") or []:
                modified = o.get("LastModified")
                if not isinstance(modified, dt.datetime):
                    modified = dt.datetime.now(dt.UTC)
                elif modified.tzinfo is None:
                    modified = modified.replace(tzinfo=dt.UTC)
                key, etag = str(o["Key"]), str(o.get("ETag", ""))
                out.append(ObjectInfo(key, int(o.get("Size", 0)), etag, modified))
        return out

    def index_of(self, objects: Iterable[ObjectInfo]) -> dict[tuple[str, str], RegionIndex]:
        """Group listed objects by account-region, function and snapshot."""
        out: dict[tuple[str, str], RegionIndex] = {}
        for o in objects:
            parts = self.location.parse(o.key)
            if parts is None:
                continue
            index = out.setdefault(
                (parts.account, parts.region), RegionIndex(parts.account, parts.region)
            )
            if parts.claim:
                index.claims.setdefault(parts.function, []).append(o)
                continue
            assert parts.snapshot_id is not None
            entries = index.functions.setdefault(parts.function, [])
            entry = next((e for e in entries if e.snapshot_id == parts.snapshot_id), None)
            if entry is None:
                prefix = self.location.snapshot_prefix(
                    parts.account, parts.region, parts.function, parts.snapshot_id
                )
                entry = SnapshotEntry(parts.function, parts.snapshot_id, prefix)
                entries.append(entry)
            entry.objects[parts.name] = o
        for index in out.values():
            for entries in index.functions.values():
                entries.sort(key=lambda e: e.snapshot_id, reverse=True)
        return out

    async def region_index(self, account: str, region: str) -> RegionIndex:
        """The account-region's snapshots, with the newest valid one of each function validated."""
        objects = await self.list_objects(self.location.region_prefix(account, region))
        index = self.index_of(objects).get((account, region), RegionIndex(account, region))
        for function in index.functions:
            await self.latest_valid(index, function)
        return index

    async def latest_valid(self, index: RegionIndex, function: str) -> SnapshotEntry | None:
        """Validate from the newest snapshot down until one is valid."""
        for entry in index.snapshots(function):
            if not entry.has_manifest:
                continue
            await self.validate(entry, index.account, index.region)
            if entry.valid:
                return entry
        return None

    # --- validation ------------------------------------------------------------------------------

    async def manifest_of(
        self, entry: SnapshotEntry, account: str, region: str
    ) -> Manifest | ManifestError:
        info = entry.objects[MANIFEST]
        cached = self._manifests.get((info.key, info.etag))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        try:
            data = await self.get_bytes(info.key)
            result: Manifest | ManifestError = parse_manifest(
                data,
                snapshot_id=entry.snapshot_id,
                function=entry.function,
                account=account,
                region=region,
            )
        except ManifestError as exc:
            result = exc
        except AwsError as err:
            if err.kind is not ErrorKind.NOT_FOUND:
                raise
            result = ManifestError("manifest vanished while it was read")
        self._manifests.put((info.key, info.etag), result)
        return result

    async def validate(self, entry: SnapshotEntry, account: str, region: str) -> None:
        """Set entry.manifest / entry.problem. AWS errors other than "not found" propagate: a
        snapshot that could not be checked is neither valid nor proven bad."""
        entry.validated = True
        entry.manifest, entry.problem, entry.newer = None, None, False
        if not entry.has_manifest:
            entry.problem = "partial: no manifest (the writer did not finish)"
            return
        parsed = await self.manifest_of(entry, account, region)
        if isinstance(parsed, ManifestError):
            entry.problem = str(parsed)
            entry.newer = parsed.newer
            return
        sizes = {name: o.size for name, o in entry.objects.items()}
        problems = listing_problems(parsed, sizes)
        if not problems:
            for obj in parsed.objects:
                problem = await self._checksum_problem(entry.objects[obj.name], obj.sha256)
                if problem:
                    problems.append(f"{obj.name}: {problem}")
        if problems:
            entry.problem = "; ".join(problems)
            return
        entry.manifest = parsed

    async def _checksum_problem(self, info: ObjectInfo, sha256_hex: str) -> str | None:
        cached = self._checksums.get((info.key, info.etag))
        if cached is None:
            cached = await self._check(info, sha256_hex)
            self._checksums.put((info.key, info.etag), cached)
        return None if cached == _OK else str(cached)

    async def _check(self, info: ObjectInfo, sha256_hex: str) -> str:
        try:
            head = await self.api.call(
                "s3", "head_object", Bucket=self.bucket, Key=info.key, ChecksumMode="ENABLED"
            )
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return "missing"
            raise
        stored = head.get("ChecksumSHA256")
        if isinstance(stored, str) and "-" not in stored:
            return _OK if stored == b64_of_hex(sha256_hex) else "checksum does not match"
        data = await self.get_bytes(info.key)  # no stored checksum: read and hash
        return _OK if hashlib.sha256(data).hexdigest() == sha256_hex else "checksum does not match"

    # --- reading and writing -----------------------------------------------------------------

    async def get_bytes(self, key: str) -> bytes:
        resp = await self.api.call("s3", "get_object", Bucket=self.bucket, Key=key)
        body = resp["Body"]
        async with body as stream:
            data: bytes = await stream.read()
        return data

    async def get_to(self, key: str, sink: IO[bytes]) -> tuple[int, str]:
        """Stream an object into sink; returns (size, sha256 hex)."""
        resp = await self.api.call("s3", "get_object", Bucket=self.bucket, Key=key)
        digest = hashlib.sha256()
        size = 0
        async with resp["Body"] as stream:
            while True:
                chunk = await stream.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                sink.write(chunk)
        return size, digest.hexdigest()

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            h = await self.api.call("s3", "head_object", Bucket=self.bucket, Key=key)
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND or err.code in ("404", "NoSuchKey"):
                return None
            raise
        modified = h.get("LastModified")
        if not isinstance(modified, dt.datetime):
            modified = dt.datetime.now(dt.UTC)
        return ObjectInfo(key, int(h.get("ContentLength", 0)), str(h.get("ETag", "")), modified)

    async def put(
        self,
        key: str,
        body: bytes | IO[bytes],
        sha256_hex: str,
        content_type: str,
        *,
        if_none_match: bool = False,
    ) -> bool:
        """Write an object with its SHA-256 (S3 refuses a body that does not match). With
        if_none_match, only if the key does not exist yet: False when it does."""
        etag = await self._put(key, body, sha256_hex, content_type, if_none_match)
        return etag is not None

    async def _put(
        self,
        key: str,
        body: bytes | IO[bytes],
        sha256_hex: str,
        content_type: str,
        if_none_match: bool,
    ) -> str | None:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": b64_of_hex(sha256_hex),
        }
        if if_none_match:
            params["IfNoneMatch"] = "*"
        try:
            resp = await self.api.call("s3", "put_object", **params)
        except AwsError as err:
            if if_none_match and err.code in PRECONDITION_CODES:
                return None
            raise
        etag = str(resp.get("ETag") or "")
        if etag:  # written with its checksum: no need to verify it again in this process
            self._checksums.put((key, etag), _OK)
        return etag

    async def put_manifest(self, key: str, manifest: Manifest) -> int:
        """Write a manifest (the last object of a snapshot); returns its size."""
        body = manifest.to_json()
        sha = hashlib.sha256(body).hexdigest()
        etag = await self._put(key, body, sha, "application/json", False)
        if etag:
            self._manifests.put((key, etag), manifest)
        return len(body)

    async def put_json(self, key: str, value: Any, *, if_none_match: bool = False) -> bool:
        data = json.dumps(value, sort_keys=True, indent=1).encode()
        return await self.put(
            key,
            data,
            hashlib.sha256(data).hexdigest(),
            "application/json",
            if_none_match=if_none_match,
        )

    async def copy(self, source: str, key: str) -> None:
        await self.api.call(
            "s3",
            "copy_object",
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": source},
            ChecksumAlgorithm="SHA256",
        )

    async def delete(self, keys: Iterable[str]) -> int:
        """Delete keys (in the order given, 1000 per request); returns how many were deleted."""
        keys = list(keys)
        deleted = 0
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            resp = await self.api.call(
                "s3",
                "delete_objects",
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise AwsError(
                    ErrorKind.ACCESS_DENIED
                    if first.get("Code") == "AccessDenied"
                    else ErrorKind.INVALID,
                    str(first.get("Code") or "DeleteFailed"),
                    service="s3",
                    operation="DeleteObjects",
                    message=f"{len(errors)} of {len(chunk)} objects not deleted",
                )
            deleted += len(chunk)
        return deleted
