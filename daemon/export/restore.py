"""`posture-daemon restore` and `posture-daemon snapshots list`: the I/O around plan.py.

Credentials:
- the snapshot is read (and environment values decrypted) with the export's principal: the role
  `POSTURE_EXPORT__ROLE_ARN` when set, else the caller's own credentials;
- the target function is read and written in the target account: with the caller's own
  credentials when that is their account, else by assuming `--assume-role ARN` or the role
  `POSTURE_EXPORT__RESTORE_ROLE_NAME` in the target account.

A restore first loads and verifies the whole snapshot (manifest, every object's size and SHA-256,
the document), decrypts what it needs, reads the target function as it is, checks dependencies
(execution role, layers, subnets, security groups, KMS key, code signing config), and plans. It
changes nothing while a blocking problem remains, in dry-run mode, or when the function exists and
`--replace` is not given. Applying stops at the first failure and says what was done and what was
not; running the same restore again with `--replace` completes it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from daemon.aws.api import AwsApi, AwsGateway
from daemon.aws.clients import ROLE_PREFIX
from daemon.aws.errors import AwsError, ErrorKind
from daemon.config import Settings
from daemon.export import document as d
from daemon.export import plan as p
from daemon.export.bucket import SnapshotBucket, SnapshotEntry
from daemon.export.layout import (
    MANIFEST,
    LayoutError,
    Location,
    SnapshotAddress,
    parse_snapshot_url,
)
from daemon.export.manifest import ENV_ENCRYPTED, Manifest
from daemon.export.reader import read_function, region_mappings
from daemon.metrics.health import HealthMetrics
from daemon.model import lambdaconfig as lc
from daemon.model import parse_arn

EXIT_OK = 0
EXIT_REFUSED = 4
EXIT_FAILED = 5
_WAIT_SECONDS = 300.0


class SnapshotError(Exception):
    """The snapshot cannot be used (missing, partial, corrupted, unknown format)."""


class RestoreError(Exception):
    def __init__(self, index: int, step: p.Step, error: AwsError | str) -> None:
        super().__init__(str(error))
        self.index = index
        self.step = step
        self.error = error


@dataclass
class LoadedSnapshot:
    address: SnapshotAddress
    bucket: SnapshotBucket
    entry: SnapshotEntry
    manifest: Manifest
    document: d.Document


@dataclass
class RestoreRequest:
    snapshot: str
    function_name: str | None = None
    account: str | None = None
    region: str | None = None
    dry_run: bool = False
    replace: bool = False
    drops: frozenset[str] = frozenset()
    role: str | None = None  # execution role override
    assume_role: str | None = None  # role to assume in the target account


@dataclass
class Outcome:
    plan: p.Plan | None = None
    applied: int = 0
    versions: dict[str, str] = field(default_factory=dict)


def location_of(address: SnapshotAddress) -> Location:
    """The export location a snapshot URL lives under (its prefix is whatever comes before the
    account)."""
    segs = address.prefix.rstrip("/").split("/")
    return Location(address.bucket, "/".join(segs[:-4]))


async def load_snapshot(bucket_api: AwsApi, url: str) -> LoadedSnapshot:
    try:
        address = parse_snapshot_url(url)
    except LayoutError as exc:
        raise SnapshotError(str(exc)) from None
    bucket = SnapshotBucket(bucket_api, location_of(address))
    try:
        objects = await bucket.list_objects(address.prefix)
    except AwsError as err:
        raise SnapshotError(f"cannot list {address.url}: {err}") from None
    found = bucket.index_of(objects).get((address.account, address.region))
    entries = found.snapshots(address.function) if found else []
    entry = next((e for e in entries if e.snapshot_id == address.snapshot_id), None)
    if entry is None:
        raise SnapshotError(f"no snapshot at {address.url} (nothing under that prefix)")
    try:
        await bucket.validate(entry, address.account, address.region)
    except AwsError as err:
        raise SnapshotError(f"cannot verify {address.url}: {err}") from None
    if not entry.valid or entry.manifest is None:
        raise SnapshotError(f"snapshot {address.url} cannot be restored: {entry.problem}")
    manifest = entry.manifest
    info = manifest.object(manifest.document)
    try:
        data = await bucket.get_bytes(address.prefix + info.name)
    except AwsError as err:
        raise SnapshotError(f"cannot read {info.name}: {err}") from None
    if hashlib.sha256(data).hexdigest() != info.sha256 or len(data) != info.size:
        raise SnapshotError(
            f"snapshot {address.url} cannot be restored: {info.name} does not match its checksum"
        )
    try:
        document = d.Document.parse(json.loads(data))
    except (ValueError, d.DocumentError) as exc:
        raise SnapshotError(f"snapshot {address.url} has an unusable document: {exc}") from None
    if document.name != address.function or document.raw.get("revision") != manifest.revision:
        raise SnapshotError(f"snapshot {address.url}: the document does not match its manifest")
    return LoadedSnapshot(address, bucket, entry, manifest, document)


async def decrypt_environment(
    kms: AwsApi | None, doc: d.Document
) -> tuple[dict[str, dict[str, str]] | None, str | None]:
    """Decrypted values by qualifier, or (None, why not)."""
    env = doc.environment
    if env.get("values") != ENV_ENCRYPTED:
        return None, None
    if kms is None:
        return None, "no KMS access"
    out: dict[str, dict[str, str]] = {}
    for qualifier, ciphertexts in (env.get("ciphertexts") or {}).items():
        for name, blob in ciphertexts.items():
            try:
                resp = await kms.call(
                    "kms",
                    "decrypt",
                    CiphertextBlob=base64.b64decode(blob),
                    EncryptionContext=d.encryption_context(doc.arn, qualifier, name),
                )
                value = d.value_of(resp["Plaintext"])
            except AwsError as err:
                return None, f"kms:Decrypt failed ({err.code})"
            except (ValueError, d.DocumentError):
                return None, "a ciphertext is malformed"
            out.setdefault(str(qualifier), {})[str(name)] = value
    return out, None


def _role_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


async def check_dependencies(
    api: AwsApi, global_api: AwsApi, doc: d.Document, inputs: p.RestoreInputs
) -> list[p.Problem]:
    """Problems with what the function needs in the target account and region."""
    t = inputs.target
    problems: list[p.Problem] = []
    stages = [doc.configuration] + [doc.version(v) for v in doc.referenced_versions()]

    async def check(what: str, call: Any, missing: str, drop: str | None) -> None:
        try:
            await call
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                problems.append(p.Problem(what, missing, drop))
            elif err.kind.retryable:
                raise
            else:
                problems.append(
                    p.Problem(what, f"could not check: {err.operation} {err.code}", None, False)
                )

    roles = {inputs.role or str(c.get("Role") or "") for c in stages}
    for role in sorted(r for r in roles if r):
        parts = parse_arn(role)
        if parts is None or parts.account_id != t.account:
            continue  # reported by the planner
        await check(
            "role",
            global_api.call("iam", "get_role", RoleName=_role_name(role)),
            f"execution role {role} does not exist in {t.account}: create it, or pass --role ARN",
            None,
        )
    same_network = t.account == doc.account_id and t.region == doc.region
    if "layers" not in inputs.drops:
        layers = {arn for c in stages for arn in c.get("Layers") or []}
        for arn in sorted(layers):
            name, _, number = arn.rpartition(":")
            if parse_arn(arn) is None or not number.isdigit() or f":{t.region}:" not in arn:
                continue
            await check(
                "layers",
                api.call("lambda", "get_layer_version", LayerName=name, VersionNumber=int(number)),
                f"layer version {arn} no longer exists",
                "layers",
            )
    if "vpc" not in inputs.drops and same_network:
        vpcs = [c.get("VpcConfig") or {} for c in stages]
        subnets = sorted({s for v in vpcs for s in v.get("SubnetIds") or []})
        groups = sorted({g for v in vpcs for g in v.get("SecurityGroupIds") or []})
        if subnets:
            await check(
                "vpc",
                api.call("ec2", "describe_subnets", SubnetIds=subnets),
                f"a subnet of {', '.join(subnets)} no longer exists",
                "vpc",
            )
        if groups:
            await check(
                "vpc",
                api.call("ec2", "describe_security_groups", GroupIds=groups),
                f"a security group of {', '.join(groups)} no longer exists",
                "vpc",
            )
    if "kms-key" not in inputs.drops:
        keys = {str(c.get("KMSKeyArn")) for c in stages if c.get("KMSKeyArn")}
        problems += await _check_keys(api, t, keys)
    csc = doc.get("code_signing_config_arn")
    if csc and "code-signing" not in inputs.drops and f":{t.region}:{t.account}:" in str(csc):
        await check(
            "code-signing",
            api.call("lambda", "get_code_signing_config", CodeSigningConfigArn=csc),
            f"code signing config {csc} does not exist",
            "code-signing",
        )
    return problems


async def _check_keys(api: AwsApi, t: p.Target, keys: set[str]) -> list[p.Problem]:
    problems = []
    for key in sorted(keys):
        if f":{t.region}:{t.account}:" not in key:
            continue  # another account or region: reported by the planner
        try:
            described = await api.call("kms", "describe_key", KeyId=key)
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                problems.append(p.Problem("kms-key", f"KMS key {key} does not exist", "kms-key"))
            elif err.kind.retryable:
                raise
            continue
        state = (described.get("KeyMetadata") or {}).get("KeyState")
        if state not in (None, "Enabled"):
            problems.append(p.Problem("kms-key", f"KMS key {key} is {state}", "kms-key"))
    return problems


async def read_current(
    api: AwsApi, name: str
) -> tuple[p.Current | None, tuple[Mapping[str, Any], ...]]:
    """The target function as it is, and (when it does not exist) the event source mappings that
    still name it: AWS keeps them when a function is deleted."""
    mappings = await region_mappings(api)
    read = await read_function(api, name, mappings, code_for=())
    if read is not None:
        return p.Current(read.parts), ()
    return None, tuple(lc.mappings_of(mappings, name))


# --- applying ------------------------------------------------------------------------------------


class Applier:
    def __init__(self, api: AwsApi, loaded: LoadedSnapshot, plan: p.Plan, out: TextIO) -> None:
        self.api = api
        self.loaded = loaded
        self.plan = plan
        self.out = out
        self.versions: dict[str, str] = dict(plan.version_map)
        self._packages: dict[str, bytes] = {}

    async def package(self, code_sha: str) -> bytes:
        if code_sha not in self._packages:
            name = self.loaded.document.package(code_sha)
            if name is None:
                raise d.DocumentError(f"package {code_sha} is not in the snapshot")
            key = self.loaded.address.prefix + name
            with tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) as spool:
                _, sha = await self.loaded.bucket.get_to(key, spool)
                if sha != d.code_sha_hex(code_sha):
                    raise d.DocumentError(f"package {name} does not match its checksum")
                spool.seek(0)
                self._packages[code_sha] = spool.read()
        return self._packages[code_sha]

    async def resolve(self, value: Any) -> Any:
        if isinstance(value, p.Ref):
            if value.kind == "code":
                return await self.package(value.key)
            number = self.versions[value.key]
            if value.kind == "function-version":
                return f"{self.plan.target.name}:{number}"
            return number
        if isinstance(value, Mapping):
            return {await self.resolve(k): await self.resolve(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [await self.resolve(v) for v in value]
        return value

    async def wait_ready(self) -> None:
        """Until the function is Active and its last update finished (AWS applies updates
        asynchronously; moto at once)."""
        name = self.plan.target.name
        async with asyncio.timeout(_WAIT_SECONDS):
            while True:
                cfg = await self.api.call("lambda", "get_function_configuration", FunctionName=name)
                state = cfg.get("State", "Active")
                update = cfg.get("LastUpdateStatus", "Successful")
                if state == "Failed" or update == "Failed":
                    reason = cfg.get("StateReason") or cfg.get("LastUpdateStatusReason") or ""
                    raise AwsError(
                        ErrorKind.INVALID,
                        "FunctionFailed",
                        service="lambda",
                        operation="GetFunctionConfiguration",
                        message=str(reason),
                    )
                if state == "Active" and update != "InProgress":
                    return
                await asyncio.sleep(2)

    async def call(self, call: p.Call) -> dict[str, Any]:
        params = await self.resolve(call.params)
        attempts = 4 if call.method == "create_function" else 1
        for attempt in range(attempts):
            try:
                return await self.api.call(call.service, call.method, **params)
            except AwsError as err:
                # a role created just before the restore takes a few seconds to be assumable
                if attempt + 1 < attempts and "cannot be assumed" in err.message:
                    await asyncio.sleep(5)
                    continue
                raise
        raise AssertionError("unreachable")

    async def apply(self) -> int:
        for index, step in enumerate(self.plan.steps, 1):
            try:
                for call in step.calls:
                    try:
                        result = await self.call(call)
                    except AwsError as err:
                        if err.code in call.tolerate:
                            continue
                        raise
                    if call.publishes is not None:
                        self.versions[call.publishes] = str(result["Version"])
                    if call.wait:
                        await self.wait_ready()
            except (AwsError, d.DocumentError, TimeoutError) as exc:
                error: AwsError | str = exc if isinstance(exc, AwsError) else str(exc) or "timeout"
                raise RestoreError(index, step, error) from None
            mapped = ""
            for call in step.calls:
                if call.publishes is not None:
                    mapped = f" -> version {self.versions[call.publishes]}"
            self.out.write(f"  done {index:>3}. {step.action:<7} {step.what}{mapped}\n")
        return len(self.plan.steps)


# --- commands ------------------------------------------------------------------------------------


def _gateway(settings: Settings) -> AwsGateway:
    aws = settings.aws.model_copy(update={"role_name": settings.export.restore_role_name})
    return AwsGateway(aws, HealthMetrics(CollectorRegistry()))


async def _bucket_api(gateway: AwsGateway, settings: Settings) -> AwsApi:
    principal = (
        ROLE_PREFIX + settings.export.role_arn
        if settings.export.role_arn
        else await gateway.own_account_id()
    )
    return gateway.api(principal, settings.export.bucket_region or settings.aws.region)


def _kms_api(gateway: AwsGateway, bucket_api: AwsApi, doc: d.Document) -> AwsApi | None:
    key = str(doc.environment.get("kms_key_id") or "")
    parts = parse_arn(key)
    region = parts.region if parts and parts.region else bucket_api.region
    return gateway.api(bucket_api.account_id, region)


async def _plan(
    api: AwsApi,
    global_api: AwsApi,
    loaded: LoadedSnapshot,
    request: RestoreRequest,
    target: p.Target,
    bucket_region: str,
    env: tuple[dict[str, dict[str, str]] | None, str | None],
) -> p.Plan:
    doc = loaded.document
    try:
        current, orphans = await read_current(api, target.name)
    except AwsError as err:
        raise SnapshotError(f"cannot read {target.arn}: {err}") from None
    if current is not None and not request.replace:
        raise SnapshotError(
            f"function {target.name} exists in {target.account}/{target.region}: pass --replace "
            "to restore over it (only what differs is changed), or --function-name NEW"
        )
    sizes: dict[str, int] = {}
    keys: dict[str, str] = {}
    for sha in doc.code.get("packages") or {}:
        name = doc.package(sha)
        if name is not None:
            sizes[sha] = loaded.manifest.object(name).size
            keys[sha] = loaded.address.prefix + name
    inputs = p.RestoreInputs(
        document=doc,
        target=target,
        current=current,
        drops=request.drops,
        role=request.role,
        env_values=env[0],
        package_sizes=sizes,
        bucket=loaded.address.bucket,
        bucket_region=bucket_region,
        package_keys=keys,
        orphan_mappings=orphans,
    )
    plan = p.build_plan(inputs)
    if env[1]:
        message = f"values unavailable: {env[1]}"
        plan.problems.append(p.Problem("environment", message, None, blocking=False))
    try:
        plan.problems.extend(await check_dependencies(api, global_api, doc, inputs))
    except AwsError as err:
        where = f"{target.account}/{target.region}"
        raise SnapshotError(f"cannot check dependencies in {where}: {err}") from None
    return plan


async def restore(settings: Settings, request: RestoreRequest, out: TextIO) -> Outcome:
    """Plan (and unless dry-run, apply) a restore. Raises SnapshotError (refused: nothing
    changed) or RestoreError (failed part-way)."""
    unknown = sorted(request.drops - set(p.DROPS))
    if unknown:
        raise SnapshotError(f"unknown --drop {', '.join(unknown)} (known: {', '.join(p.DROPS)})")
    gateway = _gateway(settings)
    try:
        bucket_api = await _bucket_api(gateway, settings)
        loaded = await load_snapshot(bucket_api, request.snapshot)
        doc = loaded.document
        own = await gateway.own_account_id()
        account = request.account or doc.account_id
        region = request.region or doc.region
        arn = parse_arn(doc.arn)
        target = p.Target(
            account,
            region,
            request.function_name or doc.name,
            arn.partition if arn is not None else "aws",
        )
        if request.assume_role:
            principal = ROLE_PREFIX + request.assume_role
        else:
            principal = own if account == own else account
        api = gateway.api(principal, region)
        global_api = gateway.api(principal, settings.aws.region)
        env = await decrypt_environment(_kms_api(gateway, bucket_api, doc), doc)
        plan = await _plan(api, global_api, loaded, request, target, bucket_api.region, env)
        for line in p.render_plan(plan, snapshot=loaded.address.url, dry_run=request.dry_run):
            out.write(line + "\n")
        outcome = Outcome(plan)
        if plan.blocking:
            raise SnapshotError(f"{len(plan.blocking)} blocking problem(s); nothing was changed")
        if request.dry_run or not plan.steps:
            return outcome
        applier = Applier(api, loaded, plan, out)
        outcome.applied = await applier.apply()
        outcome.versions = applier.versions
        out.write(f"restored {target.arn}: {outcome.applied} change(s)\n")
        return outcome
    finally:
        await gateway.close()


async def list_snapshots(
    settings: Settings,
    *,
    bucket: str | None,
    prefix: str | None,
    account: str | None,
    region: str | None,
    function: str | None,
) -> list[dict[str, Any]]:
    name = bucket or settings.export.bucket
    if not name:
        raise SnapshotError("no bucket: set POSTURE_EXPORT__BUCKET or pass --bucket")
    location = Location(name, settings.export.prefix if prefix is None else prefix)
    gateway = _gateway(settings)
    try:
        snapshots = SnapshotBucket(await _bucket_api(gateway, settings), location)
        if account and region and function:
            where = location.function_prefix(account, region, function)
        else:
            where = location.prefix_for(account, region if account else None)
        try:
            objects = await snapshots.list_objects(where)
        except AwsError as err:
            raise SnapshotError(f"cannot list {location.url(where)}: {err}") from None
        rows: list[dict[str, Any]] = []
        for (acct, reg), index in sorted(snapshots.index_of(objects).items()):
            if region and reg != region:
                continue
            for fn, entries in sorted(index.functions.items()):
                if function and fn != function:
                    continue
                for entry in entries:
                    try:
                        await snapshots.validate(entry, acct, reg)
                        status = "valid" if entry.valid else f"invalid: {entry.problem}"
                    except AwsError as err:
                        status = f"unverified: {err.code}"
                    if entry.newer:
                        status = f"newer schema: {entry.problem}"
                    m = entry.manifest
                    rows.append(
                        {
                            "aws_account_id": acct,
                            "aws_region": reg,
                            "function": fn,
                            "snapshot_id": entry.snapshot_id,
                            "captured_at": (m.captured_at if m else entry.captured_at).isoformat(),
                            "status": status,
                            "valid": entry.valid,
                            "bytes": sum(o.size for o in entry.objects.values()),
                            "missing": list(m.missing) if m else [],
                            "environment_values": m.environment_values if m else None,
                            "url": location.url(entry.prefix),
                        }
                    )
        return rows
    finally:
        await gateway.close()


def render_rows(rows: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    headers = ("ACCOUNT", "REGION", "FUNCTION", "SNAPSHOT", "STATUS", "BYTES", "MISSING", "URL")
    table = [
        (
            r["aws_account_id"],
            r["aws_region"],
            r["function"],
            r["snapshot_id"],
            r["status"],
            str(r["bytes"]),
            ",".join(r["missing"]) or "-",
            r["url"],
        )
        for r in rows
    ]
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(headers[:-1])]
    for row in [headers, *table]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    out.write(f"{len(rows)} snapshot(s), {sum(1 for r in rows if r['valid'])} valid\n")


__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "MANIFEST",
    "RestoreError",
    "RestoreRequest",
    "SnapshotError",
    "list_snapshots",
    "load_snapshot",
    "render_rows",
    "restore",
]
