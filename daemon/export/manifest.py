"""The manifest of a snapshot: what it holds, with sizes and checksums. Pure.

A manifest is written last, so its presence means the writer finished; readers trust a snapshot
only when its manifest parses, has a schema version they know, and every object it lists exists
with the recorded size and SHA-256. Schema (version 1):

    {
      "schema_version": 1,
      "kind": "posture-daemon/lambda-function-snapshot",
      "snapshot_id": "20250601T120000.123Z-3f2a9c0d1e4b5a69",
      "captured_at": "2025-06-01T12:00:00.123456+00:00",
      "function": {"name": "...", "arn": "...", "account_id": "...", "region": "..."},
      "revision": "3f2a9c0d1e4b5a69",          # content digest (model/lambdaconfig.py)
      "fingerprint": "...",                    # what a sweep reads, when captured
      "revision_id": "..." | null,             # AWS RevisionId (absent in moto)
      "code_sha256": "...",                    # $LATEST CodeSha256
      "document": "function.<h>.json",         # the object holding the configuration
      "environment_values": "omitted" | "kms-encrypted" | "unreadable",
      "missing": ["code", ...],                # parts the snapshot could not hold
      "objects": [{"name": "...", "size": 123, "sha256": "<64 hex>", "content_type": "..."}],
      "writer": {"name": "posture-daemon", "version": "..."}
    }
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.export.layout import parse_snapshot_id

SCHEMA_VERSION = 1
KIND = "posture-daemon/lambda-function-snapshot"
ENV_OMITTED = "omitted"
ENV_ENCRYPTED = "kms-encrypted"
ENV_UNREADABLE = "unreadable"
_ENV_MODES = (ENV_OMITTED, ENV_ENCRYPTED, ENV_UNREADABLE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class ManifestError(ValueError):
    """A manifest that cannot be trusted. `newer` means a newer daemon wrote it: leave it alone."""

    def __init__(self, message: str, *, newer: bool = False) -> None:
        super().__init__(message)
        self.newer = newer


@dataclass(frozen=True, slots=True)
class ManifestObject:
    name: str  # relative to the snapshot prefix
    size: int
    sha256: str  # hex
    content_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class FunctionIdentity:
    name: str
    arn: str
    account_id: str
    region: str


@dataclass(frozen=True, slots=True)
class Manifest:
    snapshot_id: str
    captured_at: dt.datetime
    function: FunctionIdentity
    revision: str
    fingerprint: str
    revision_id: str | None
    code_sha256: str
    document: str
    environment_values: str
    objects: tuple[ManifestObject, ...]
    missing: tuple[str, ...] = ()
    writer: Mapping[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def object(self, name: str) -> ManifestObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(name)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> bytes:
        doc = {
            "schema_version": self.schema_version,
            "kind": KIND,
            "snapshot_id": self.snapshot_id,
            "captured_at": self.captured_at.astimezone(dt.UTC).isoformat(),
            "function": {
                "name": self.function.name,
                "arn": self.function.arn,
                "account_id": self.function.account_id,
                "region": self.function.region,
            },
            "revision": self.revision,
            "fingerprint": self.fingerprint,
            "revision_id": self.revision_id,
            "code_sha256": self.code_sha256,
            "document": self.document,
            "environment_values": self.environment_values,
            "missing": list(self.missing),
            "objects": [
                {"name": o.name, "size": o.size, "sha256": o.sha256, "content_type": o.content_type}
                for o in self.objects
            ],
            "writer": dict(self.writer),
        }
        return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False).encode()


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...], path: str = "") -> Any:
    where = f"{path}{name}"
    if name not in doc:
        raise ManifestError(f"manifest field {where} is missing")
    value = doc[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ManifestError(f"manifest field {where} has the wrong type")
    return value


def _load(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest is not a JSON object")
    version = _field(doc, "schema_version", int)
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"manifest schema_version {version} was written by a newer posture-daemon "
            f"(this one reads {SCHEMA_VERSION})",
            newer=True,
        )
    if version != SCHEMA_VERSION:
        raise ManifestError(f"manifest schema_version {version} is not supported")
    if doc.get("kind") != KIND:
        raise ManifestError(f"manifest field kind is not {KIND!r}")
    return doc


def _identity(doc: Mapping[str, Any], expected: Mapping[str, str | None]) -> FunctionIdentity:
    fn = _field(doc, "function", dict)
    identity = FunctionIdentity(
        name=_field(fn, "name", str, "function."),
        arn=_field(fn, "arn", str, "function."),
        account_id=_field(fn, "account_id", str, "function."),
        region=_field(fn, "region", str, "function."),
    )
    for what, actual in (
        ("name", identity.name),
        ("account_id", identity.account_id),
        ("region", identity.region),
    ):
        wanted = expected.get(what)
        if wanted is not None and wanted != actual:
            raise ManifestError(
                f"manifest function.{what} {actual!r} does not match its key ({wanted!r})"
            )
    return identity


def _objects(doc: Mapping[str, Any]) -> tuple[ManifestObject, ...]:
    objects: list[ManifestObject] = []
    seen: set[str] = set()
    for i, raw in enumerate(_field(doc, "objects", list)):
        path = f"objects[{i}]."
        if not isinstance(raw, dict):
            raise ManifestError(f"manifest field objects[{i}] is not an object")
        name = _field(raw, "name", str, path)
        if not _NAME.match(name) or ".." in name.split("/") or name == "manifest.json":
            raise ManifestError(f"manifest field {path}name {name!r} is not a safe object name")
        if name in seen:
            raise ManifestError(f"manifest lists {name!r} twice")
        seen.add(name)
        size = _field(raw, "size", int, path)
        sha = _field(raw, "sha256", str, path)
        if size < 0 or not _SHA256.match(sha):
            raise ManifestError(f"manifest field {path}size or sha256 is invalid")
        objects.append(ManifestObject(name, size, sha, str(raw.get("content_type") or "")))
    return tuple(objects)


def parse_manifest(
    data: bytes,
    *,
    snapshot_id: str | None = None,
    function: str | None = None,
    account: str | None = None,
    region: str | None = None,
) -> Manifest:
    """Parse and validate a manifest; the keyword arguments are what its key says it is."""
    doc = _load(data)
    sid = _field(doc, "snapshot_id", str)
    parsed = parse_snapshot_id(sid)
    if parsed is None:
        raise ManifestError("manifest field snapshot_id is not <timestamp>-<revision>")
    if snapshot_id is not None and sid != snapshot_id:
        raise ManifestError(f"manifest snapshot_id {sid} does not match its key ({snapshot_id})")
    try:
        captured = dt.datetime.fromisoformat(_field(doc, "captured_at", str))
    except ValueError:
        raise ManifestError("manifest field captured_at is not an ISO timestamp") from None
    if captured.tzinfo is None:
        raise ManifestError("manifest field captured_at has no time zone")
    identity = _identity(doc, {"name": function, "account_id": account, "region": region})
    revision = _field(doc, "revision", str)
    if revision != parsed[1]:
        raise ManifestError("manifest revision does not match its snapshot id")
    revision_id = doc.get("revision_id")
    if revision_id is not None and not isinstance(revision_id, str):
        raise ManifestError("manifest field revision_id has the wrong type")
    env_mode = _field(doc, "environment_values", str)
    if env_mode not in _ENV_MODES:
        raise ManifestError(f"manifest field environment_values is not one of {_ENV_MODES}")
    missing = _field(doc, "missing", list)
    if not all(isinstance(m, str) for m in missing):
        raise ManifestError("manifest field missing is not a list of strings")
    objects = _objects(doc)
    document = _field(doc, "document", str)
    if document not in {o.name for o in objects}:
        raise ManifestError(f"manifest document {document!r} is not among its objects")
    writer = doc.get("writer") or {}
    return Manifest(
        snapshot_id=sid,
        captured_at=captured,
        function=identity,
        revision=revision,
        fingerprint=_field(doc, "fingerprint", str),
        revision_id=revision_id,
        code_sha256=_field(doc, "code_sha256", str),
        document=document,
        environment_values=env_mode,
        objects=objects,
        missing=tuple(missing),
        writer={str(k): str(v) for k, v in writer.items()} if isinstance(writer, dict) else {},
        schema_version=SCHEMA_VERSION,
    )


def listing_problems(manifest: Manifest, listed: Mapping[str, int]) -> list[str]:
    """What is wrong with the snapshot's objects, judged by a bucket listing (name -> size)."""
    problems = []
    for o in manifest.objects:
        size = listed.get(o.name)
        if size is None:
            problems.append(f"{o.name} is missing")
        elif size != o.size:
            problems.append(f"{o.name} has {size} bytes, the manifest says {o.size}")
    return problems
