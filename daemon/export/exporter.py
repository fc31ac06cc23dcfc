"""The export step of a Lambda reconcile: snapshot every changed function to S3, then prune.

Runs after the collector, only when `POSTURE_EXPORT__ENABLED` is on (otherwise it is never built,
and no write call can happen). Per account-region and sweep:

1. Read the bucket's index of the account-region (one paginated ListObjectsV2; the newest valid
   snapshot of each function is validated once per process) and list the event source mappings.
2. For each function, compare its fingerprint (what the sweep read, model/lambdaconfig.py) with the
   newest valid snapshot's. Unchanged: nothing to do — no read, no upload. Changed (or never
   exported, or its staggered full check is due): read it in full with the reader credentials,
   and write a snapshot when its content (the revision) differs from the newest one.
3. Writing: claim the snapshot (a conditional PutObject on a key derived from the newest snapshot
   and the new revision, so concurrent writers — two replicas, two daemons — agree on one writer),
   then the code packages (copied inside the bucket when an older snapshot holds the same
   CodeSha256, else downloaded from GetFunction's presigned URL and checked against CodeSha256),
   the document, and the manifest last. A writer that died leaves a claim and objects but no
   manifest; after the claim timeout another writer takes the snapshot over, and retention
   removes what no manifest lists.
4. Retention (retention.py).

A failure of the export never fails the target's posture: it is logged, counted
(posture_export_failures_total), and kept on the function (`FunctionExport.problem`), so
lambda-config-export-current reports it once the lag passes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog

from daemon import __version__
from daemon.aws.api import AwsApi, AwsGateway
from daemon.aws.clients import ROLE_PREFIX
from daemon.aws.errors import AwsError
from daemon.collectors.base import CollectContext
from daemon.config import ExportSettings
from daemon.export import document as d
from daemon.export.bucket import ObjectInfo, RegionIndex, SnapshotBucket, SnapshotEntry
from daemon.export.layout import MANIFEST, Location, snapshot_id
from daemon.export.manifest import (
    ENV_ENCRYPTED,
    ENV_OMITTED,
    ENV_UNREADABLE,
    FunctionIdentity,
    Manifest,
    ManifestError,
    ManifestObject,
)
from daemon.export.reader import FunctionRead, read_function, region_mappings
from daemon.export.retention import RetentionRules, plan_retention
from daemon.metrics.health import HealthMetrics
from daemon.model import awslambda as m
from daemon.model import frozen_errors
from daemon.model import lambdaconfig as lc
from daemon.model.export import ASPECT_EXPORT, ExportCoverage, FunctionExport, SnapshotRef

log = structlog.get_logger("posture.export")

_SPOOL_BYTES = 8 * 1024 * 1024  # packages above this go through a temporary file
_CODE_TIMEOUT = 900.0  # one package download or upload


# outcomes of writing one function's snapshot
WRITTEN, UNCHANGED, GONE, BUSY, TAKEOVER = "written", "unchanged", "gone", "busy", "takeover"


class ExportError(Exception):
    """A function could not be exported this sweep (the message is safe to log and show)."""


def key_region(kms_key_id: str, default: str) -> str:
    """The region of a KMS key ARN (or alias ARN), else the default."""
    parts = kms_key_id.split(":")
    if kms_key_id.startswith("arn:") and len(parts) > 3 and parts[3]:
        return parts[3]
    return default


class Exporter:
    def __init__(
        self,
        settings: ExportSettings,
        gateway: AwsGateway,
        metrics: HealthMetrics,
        default_region: str,
    ) -> None:
        assert settings.enabled and settings.bucket
        self.settings = settings
        self.gateway = gateway
        self.metrics = metrics
        self.location = Location(settings.bucket, settings.prefix)
        self.bucket_region = settings.bucket_region or default_region
        self._bucket: SnapshotBucket | None = None
        self._principal: str | None = None
        self._pending: dict[str, dt.datetime] = {}  # function ARN -> first seen unexported
        self._full_checked: dict[str, dt.datetime] = {}
        self._unchanged: dict[tuple[str, str], str] = {}  # (arn, fingerprint) -> revision
        self._code_slots = asyncio.Semaphore(2)
        self._writer = {
            "name": "posture-daemon",
            "version": __version__,
            "host": socket.gethostname(),
        }
        self.rules = RetentionRules(
            keep_last=settings.keep_last,
            max_age=dt.timedelta(days=settings.max_age_days) if settings.max_age_days else None,
            grace=dt.timedelta(seconds=settings.claim_timeout_seconds),
        )

    async def principal(self) -> str:
        if self._principal is None:
            if self.settings.role_arn:
                self._principal = ROLE_PREFIX + self.settings.role_arn
            else:
                self._principal = await self.gateway.own_account_id()
        return self._principal

    async def bucket(self) -> SnapshotBucket:
        if self._bucket is None:
            api = self.gateway.api(await self.principal(), self.bucket_region)
            self._bucket = SnapshotBucket(api, self.location)
        return self._bucket

    async def kms(self) -> AwsApi:
        assert self.settings.kms_key_id
        region = key_region(self.settings.kms_key_id, self.bucket_region)
        return self.gateway.api(await self.principal(), region)

    # --- the step --------------------------------------------------------------------------------

    async def export(self, ctx: CollectContext, snapshot: m.LambdaSnapshot) -> m.LambdaSnapshot:
        """The snapshot with each function's export state. Never raises for the export's sake:
        the target's posture is published whatever happened to its backup."""
        try:
            return await self._export(ctx, snapshot)
        except Exception as exc:  # a bug in the export must not cost the posture
            self.metrics.export_failures.labels("internal").inc()
            log.error("export step failed", error=type(exc).__name__, exc_info=True)
            coverage = self.location.url(
                self.location.region_prefix(ctx.target.account_id, ctx.target.region)
            )
            return _with_index_error(snapshot, coverage, "ExportFailed")

    async def _export(self, ctx: CollectContext, snapshot: m.LambdaSnapshot) -> m.LambdaSnapshot:
        target = ctx.target
        coverage = self.location.url(self.location.region_prefix(target.account_id, target.region))
        try:
            bucket = await self.bucket()
            index = await bucket.region_index(target.account_id, target.region)
            mappings = await region_mappings(ctx.api)
        except AwsError as err:
            self.metrics.export_failures.labels("index").inc()
            log.error(
                "export index unreadable; export skipped this sweep",
                error_code=err.code,
                error_kind=err.kind.value,
                operation=err.operation,
            )
            return _with_index_error(snapshot, coverage, err.code)
        now = ctx.now

        async def one(fn: m.LambdaFunction) -> m.LambdaFunction:
            return replace(fn, export=await self._function(ctx, bucket, index, fn, mappings, now))

        functions = await ctx.gather(snapshot.functions, one)
        self._forget_gone(target.account_id, target.region, {f.arn for f in snapshot.functions})
        await self._retention(bucket, index, now, {f.name for f in snapshot.functions})
        return replace(
            snapshot, functions=tuple(functions), export=ExportCoverage(location=coverage)
        )

    async def _function(
        self,
        ctx: CollectContext,
        bucket: SnapshotBucket,
        index: RegionIndex,
        fn: m.LambdaFunction,
        mappings: Sequence[Mapping[str, Any]],
        now: dt.datetime,
    ) -> FunctionExport:
        entry = await bucket.latest_valid(index, fn.name)
        latest = entry.ref(self.location) if entry else None
        if not fn.config_fingerprint:
            unreadable = ", ".join(sorted(fn.errors)) or "unknown"
            return self._pending_state(fn, latest, now, f"configuration unreadable: {unreadable}")
        current = lc.fingerprint(fn.config_fingerprint, lc.mappings_of(mappings, fn.name), fn.name)
        changed = latest is None or latest.fingerprint != current
        if not changed and not self._full_check_due(fn.arn, latest, now):
            self._pending.pop(fn.arn, None)
            return FunctionExport(latest)
        if (
            changed
            and latest is not None
            and self._unchanged.get((fn.arn, current)) == latest.revision
        ):
            self._pending.pop(fn.arn, None)
            return FunctionExport(latest)  # read in full before: the same content
        try:
            outcome, ref = await self._write(ctx, bucket, index, fn, entry, current, mappings, now)
        except (AwsError, ExportError, ManifestError, d.DocumentError) as exc:
            stage = getattr(exc, "stage", "write")
            self.metrics.export_failures.labels(stage).inc()
            self.metrics.export_snapshots.labels("failed").inc()
            problem = _describe(exc)
            log.error("export of a function failed", function=fn.arn, problem=problem)
            return self._pending_state(fn, latest, now, problem)
        if outcome == GONE:  # deleted since the sweep listed it
            self._pending.pop(fn.arn, None)
            return FunctionExport(latest)
        if outcome == BUSY:  # another writer is at it; its snapshot shows up next sweep
            return self._pending_state(fn, latest, now, None) if changed else FunctionExport(latest)
        self._full_checked[fn.arn] = now
        if outcome == UNCHANGED:
            if changed and latest is not None:
                self._unchanged[(fn.arn, current)] = latest.revision
            self._pending.pop(fn.arn, None)
            return FunctionExport(latest)
        assert ref is not None
        if ref.fingerprint == current:
            self._pending.pop(fn.arn, None)
            return FunctionExport(ref)
        # the function changed between the sweep's read and ours: the next sweep exports again
        return self._pending_state(fn, ref, now, None)

    def _forget_gone(self, account: str, region: str, live: set[str]) -> None:
        """Drop what is remembered about functions of this account-region that no longer exist."""
        here = f":{region}:{account}:function:"
        for arn in [a for a in (*self._pending, *self._full_checked) if here in a]:
            if arn not in live:
                self._pending.pop(arn, None)
                self._full_checked.pop(arn, None)
        for key in [k for k in self._unchanged if here in k[0] and k[0] not in live]:
            del self._unchanged[key]

    def _pending_state(
        self,
        fn: m.LambdaFunction,
        latest: SnapshotRef | None,
        now: dt.datetime,
        problem: str | None,
    ) -> FunctionExport:
        since = self._pending.setdefault(fn.arn, now)
        if latest is not None and fn.last_modified and fn.last_modified > latest.captured_at:
            since = min(since, fn.last_modified)  # AWS says when the configuration changed
        return FunctionExport(latest, pending_since=since, problem=problem)

    def _full_check_due(self, arn: str, latest: SnapshotRef | None, now: dt.datetime) -> bool:
        """Due once per full_check_hours, at a fixed phase per function (spread over the period,
        so a restart does not re-read every function at once)."""
        period = self.settings.full_check_hours * 3600
        if period <= 0 or latest is None:
            return False
        # first sight (a start or restart): the first check comes at this function's phase
        last = self._full_checked.setdefault(arn, max(latest.captured_at, now))
        phase = int(hashlib.sha256(arn.encode()).hexdigest()[:8], 16) % int(period)

        def slot(t: dt.datetime) -> int:
            return int((t.timestamp() - phase) // period)

        return slot(now) > slot(last)

    # --- writing a snapshot ----------------------------------------------------------------------

    async def _write(
        self,
        ctx: CollectContext,
        bucket: SnapshotBucket,
        index: RegionIndex,
        fn: m.LambdaFunction,
        entry: SnapshotEntry | None,
        current: str,
        mappings: Sequence[Mapping[str, Any]],
        now: dt.datetime,
    ) -> tuple[str, SnapshotRef | None]:
        """Write a snapshot of the function unless its content is already the newest one."""
        try:
            read = await read_function(ctx.api, fn.name, [dict(x) for x in mappings], code_for=None)
        except AwsError as err:
            raise _staged(err, "read") from None
        if read is None:
            return GONE, None
        parts = read.parts
        revision = lc.revision(parts)
        fingerprint = lc.fingerprint(
            lc.base_fingerprint(parts), parts.event_source_mappings, parts.name
        )
        latest = entry.ref(self.location) if entry else None
        if latest is not None and latest.revision == revision:
            return UNCHANGED, latest
        t = ctx.target
        base = entry.snapshot_id if entry else "none"
        sid = snapshot_id(now, revision)
        claim_key = self.location.claim_key(t.account_id, t.region, fn.name, base, revision)
        claim = {"snapshot_id": sid, "writer": self._writer, "claimed_at": now.isoformat()}
        if not await bucket.put_json(claim_key, claim, if_none_match=True):
            outcome, other = await self._contended(bucket, index, claim_key, fn, now)
            if outcome != TAKEOVER:
                return outcome, other.ref(self.location) if other else None
            assert other is not None
            sid = other.snapshot_id
        prefix = self.location.snapshot_prefix(t.account_id, t.region, fn.name, sid)
        identity = FunctionIdentity(fn.name, fn.arn, t.account_id, t.region)
        objects: list[ManifestObject] = []
        missing: list[str] = []
        environment, env_mode = await self._environment(parts, fn.arn)
        if env_mode == ENV_UNREADABLE:
            missing.append("environment")
        code = await self._code(bucket, read, entry, prefix, objects, missing)
        doc = d.build_document(
            parts,
            identity,
            fingerprint=fingerprint,
            environment=environment,
            code=code,
            last_modified=read.last_modified,
        )
        data = json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False, default=str).encode()
        sha = hashlib.sha256(data).hexdigest()
        doc_name = f"function.{sha[:16]}.json"
        await bucket.put(prefix + doc_name, data, sha, "application/json")
        self.metrics.export_bytes.inc(len(data))
        objects.append(ManifestObject(doc_name, len(data), sha, "application/json"))
        config = parts.configuration
        manifest = Manifest(
            snapshot_id=sid,
            captured_at=now,
            function=identity,
            revision=revision,
            fingerprint=fingerprint,
            revision_id=config.get("RevisionId") or None,
            code_sha256=str(config.get("CodeSha256") or ""),
            document=doc_name,
            environment_values=env_mode,
            objects=tuple(sorted(objects, key=lambda o: o.name)),
            missing=tuple(missing),
            writer=self._writer,
        )
        manifest_size = await bucket.put_manifest(prefix + MANIFEST, manifest)
        self.metrics.export_snapshots.labels("written").inc()
        log.info(
            "snapshot written",
            function=fn.arn,
            snapshot=self.location.url(prefix),
            revision=revision,
            objects=len(objects) + 1,
            bytes=manifest.size + manifest_size,
        )
        new = SnapshotEntry(fn.name, sid, prefix, manifest=manifest, validated=True)
        for o in manifest.objects:
            new.objects[o.name] = _info(prefix + o.name, o.size, now)
        new.objects[MANIFEST] = _info(prefix + MANIFEST, manifest_size, now)
        index.add(new)
        return WRITTEN, new.ref(self.location)

    async def _contended(
        self,
        bucket: SnapshotBucket,
        index: RegionIndex,
        claim_key: str,
        fn: m.LambdaFunction,
        now: dt.datetime,
    ) -> tuple[str, SnapshotEntry | None]:
        """Another writer claimed this snapshot: (WRITTEN, its snapshot) when it finished, (BUSY,
        None) while it may still be writing, (TAKEOVER, its unfinished snapshot) when the claim is
        older than the claim timeout (the writer died)."""
        try:
            claim = json.loads(await bucket.get_bytes(claim_key))
            sid = str(claim["snapshot_id"])
        except (AwsError, ValueError, KeyError, TypeError):
            raise ExportError(f"claim {claim_key} is unreadable") from None
        account, region = index.account, index.region
        prefix = self.location.snapshot_prefix(account, region, fn.name, sid)
        listed = bucket.index_of(await bucket.list_objects(prefix))
        found = listed.get((account, region))
        entry = found.snapshots(fn.name)[0] if found and found.snapshots(fn.name) else None
        if entry is not None and entry.has_manifest:
            await bucket.validate(entry, account, region)
            if entry.valid:
                index.add(entry)
                self.metrics.export_snapshots.labels("concurrent").inc()
                return WRITTEN, entry
        info = await bucket.head(claim_key)
        age = (now - info.last_modified) if info else dt.timedelta(0)
        if age < dt.timedelta(seconds=self.settings.claim_timeout_seconds):
            self.metrics.export_snapshots.labels("concurrent").inc()
            return BUSY, None
        log.warning("taking over an unfinished snapshot", function=fn.arn, snapshot_id=sid)
        return TAKEOVER, entry or SnapshotEntry(fn.name, sid, prefix)

    async def _environment(self, parts: lc.FunctionParts, arn: str) -> tuple[dict[str, Any], str]:
        config = parts.configuration
        names = lc.env_names(config)
        if names is None:
            error = ((config.get("Environment") or {}).get("Error") or {}).get("ErrorCode")
            return d.environment_section(None, str(error or "unreadable")), ENV_UNREADABLE
        if not self.settings.include_env_values:
            return d.environment_section(names, None), ENV_OMITTED
        kms = await self.kms()
        key_arn = self.settings.kms_key_id
        configs: dict[str, Mapping[str, Any]] = {lc.LATEST: config}
        referenced = d.referenced_versions(lc.full_view(parts))
        for v in parts.versions:
            if str(v.get("Version")) in referenced:
                configs[str(v.get("Version"))] = v
        ciphertexts: dict[str, dict[str, str]] = {}
        for qualifier, cfg in configs.items():
            values = (cfg.get("Environment") or {}).get("Variables") or {}
            for name in sorted(values):
                try:
                    resp = await kms.call(
                        "kms",
                        "encrypt",
                        KeyId=self.settings.kms_key_id,
                        Plaintext=d.plaintext_of(str(values[name])),
                        EncryptionContext=d.encryption_context(arn, qualifier, name),
                    )
                except AwsError as err:
                    raise _staged(err, "encrypt") from None
                blob = base64.b64encode(resp["CiphertextBlob"]).decode()
                ciphertexts.setdefault(qualifier, {})[name] = blob
                key_arn = str(resp.get("KeyId") or key_arn)
        return d.environment_section(names, None, ciphertexts, key_arn), ENV_ENCRYPTED

    async def _code(
        self,
        bucket: SnapshotBucket,
        read: FunctionRead,
        entry: SnapshotEntry | None,
        prefix: str,
        objects: list[ManifestObject],
        missing: list[str],
    ) -> dict[str, Any]:
        config = read.parts.configuration
        package_type = str(config.get("PackageType") or "Zip")
        section: dict[str, Any] = {"package_type": package_type, "packages": {}, "missing": {}}
        if package_type == "Image":
            section["image_uri"] = read.image_uri
            section["resolved_image_uri"] = read.resolved_image_uri
            return section  # the image stays in ECR; restore refers to it by digest
        wanted = [str(config.get("CodeSha256") or "")]
        view = lc.full_view(read.parts)
        for number in d.referenced_versions(view):
            v = next(x for x in view["versions"] if x["Version"] == number)
            wanted.append(str(v.get("CodeSha256") or ""))
        for code_sha in dict.fromkeys(w for w in wanted if w):
            if not self.settings.include_code:
                section["missing"][code_sha] = "include_code is off"
                continue
            name = d.code_object_name(code_sha)
            try:
                size = await self._package(bucket, read, entry, prefix, name, code_sha)
            except ExportError as exc:
                section["missing"][code_sha] = str(exc)
                continue
            except AwsError as err:
                if err.kind.retryable:
                    raise _staged(err, "code") from None
                section["missing"][code_sha] = f"{err.operation}: {err.code}"
                continue
            section["packages"][code_sha] = {"object": name, "size": size}
            objects.append(ManifestObject(name, size, d.code_sha_hex(code_sha), "application/zip"))
        if section["missing"]:
            missing.append("code")
        return section

    async def _package(
        self,
        bucket: SnapshotBucket,
        read: FunctionRead,
        entry: SnapshotEntry | None,
        prefix: str,
        name: str,
        code_sha: str,
    ) -> int:
        """Put one package into the snapshot; returns its size."""
        sha_hex = d.code_sha_hex(code_sha)
        if entry is not None and entry.manifest is not None:
            try:
                previous = entry.manifest.object(name)
            except KeyError:
                previous = None
            if previous is not None and previous.sha256 == sha_hex:
                async with self._code_slots:
                    await bucket.copy(entry.prefix + name, prefix + name)
                return previous.size
        url = read.code_locations.get(code_sha)
        if url is None:
            raise ExportError("no code location")
        api = bucket.api
        async with self._code_slots:
            with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
                size, got = await self._download(api, url, spool)
                if got != sha_hex:
                    raise ExportError("downloaded package does not match CodeSha256")
                spool.seek(0)
                await bucket.put(prefix + name, spool, sha_hex, "application/zip")
        self.metrics.export_bytes.inc(size)
        return size

    async def _download(self, api: AwsApi, url: str, sink: Any) -> tuple[int, str]:
        return await api.download(
            url,
            sink,
            service="lambda",
            operation="DownloadFunctionCode",
            max_bytes=self.settings.max_code_bytes,
            limit_seconds=_CODE_TIMEOUT,
        )

    # --- retention -------------------------------------------------------------------------------

    async def _retention(
        self, bucket: SnapshotBucket, index: RegionIndex, now: dt.datetime, live: set[str]
    ) -> None:
        plan = plan_retention(index, self.rules, now)
        for deletion in plan:
            entry = deletion.entry
            try:
                if deletion.kind == "snapshot" and entry is not None:
                    parsed = await bucket.manifest_of(entry, index.account, index.region)
                    if isinstance(parsed, ManifestError) and parsed.newer:
                        continue  # a newer daemon's snapshot: not ours to judge
                    await bucket.delete(deletion.keys[:1])  # the manifest first
                    await bucket.delete(deletion.keys[1:])
                else:
                    await bucket.delete(deletion.keys)
            except AwsError as err:
                self.metrics.export_failures.labels("retention").inc()
                log.error(
                    "retention could not delete",
                    function=deletion.function,
                    what=deletion.kind,
                    label=deletion.label,
                    error_code=err.code,
                )
                return
            self.metrics.export_pruned.labels(deletion.kind).inc()
            log.info(
                "retention deleted",
                function=deletion.function,
                what=deletion.kind,
                label=deletion.label,
                reason=deletion.reason,
                function_exists=deletion.function in live,
            )


def _info(key: str, size: int, now: dt.datetime) -> ObjectInfo:
    return ObjectInfo(key, size, "", now)


def _staged(err: AwsError, stage: str) -> AwsError:
    err.stage = stage  # type: ignore[attr-defined]
    return err


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AwsError):
        return f"{exc.operation or exc.service}: {exc.code}"
    return str(exc)[:300]


def _with_index_error(snapshot: m.LambdaSnapshot, location: str, code: str) -> m.LambdaSnapshot:
    functions = tuple(
        replace(f, errors=frozen_errors({**f.errors, ASPECT_EXPORT: code}))
        for f in snapshot.functions
    )
    return replace(
        snapshot, functions=functions, export=ExportCoverage(location=location, error=code)
    )


__all__ = ["ExportError", "Exporter", "key_region"]
