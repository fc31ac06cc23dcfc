"""Configuration export and restore against moto server over HTTP.

Accounts of their own (the shared estate stays as seeded): SOURCE holds the functions that are
exported (a subset of the demo estate plus `versioned`, a function with two published versions,
weighted alias routing and an SQS trigger); BACKUP holds the snapshot buckets and the KMS key (the
daemon reaches it by assuming EXPORT_ROLE); OTHER is a restore target in another region; RACE is
used by the concurrency, change-detection and retention tests. Each test writes to a bucket of its
own. Tests run in file order; the round trip, which deletes and recreates SOURCE's functions, runs
after every test that exports SOURCE.

moto gaps met here, and where they are covered instead:
- GetFunction's Code.Location cannot be fetched from moto: the shim serves it (presigned-style URL
  with a checked signature, daemon/demo/moto_server.py), so packages are really downloaded;
- no RevisionId on functions: the digest of the normalised configuration stands in (unit tests
  check that a RevisionId change is seen);
- LoggingConfig and DeadLetterConfig are neither stored nor returned, function URLs and event invoke
  configs ignore their Qualifier, and an EventSourceToken condition is dropped: these parts cannot
  be compared after a restore here (listed in MOTO_CANNOT_COMPARE; the planner's parameters for
  them are unit-tested in tests/unit/export/test_plan.py);
- moto does not check a PutObject's checksum and does not lock conditional writes (the shim does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import io
import json
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import generate_latest

from daemon import cli
from daemon.app import Daemon
from daemon.collectors.base import CollectContext
from daemon.demo.estate import SEEDED_SECRETS, seed_estate
from daemon.demo.moto_server import EmbeddedMoto, ShimRequest, ShimResponse, json_error
from daemon.export import document as d
from daemon.export.layout import parse_snapshot_id
from daemon.export.operations import WRITES
from daemon.logging import setup_logging
from daemon.model import Target
from daemon.model import lambdaconfig as lc
from daemon.model.awslambda import LambdaSnapshot
from daemon.policy import load_policy
from daemon.reconciler.reconciler import Outcome, utcnow

from .conftest import policy_for
from .harness import Sample, aws_client, parse_exposition, select, settings_for, value

SOURCE = "818100000001"
BACKUP = "818100000009"
OTHER = "818100000003"
RACE = "818100000004"
REGION = "us-east-1"
OTHER_REGION = "eu-west-1"
EXPORT_ROLE = f"arn:aws:iam::{BACKUP}:role/PostureExport"
# from the demo estate: URL, alias with provisioned concurrency, API Gateway permission, VPC,
# layer, CMK, code signing, on-failure destination (orders-api); an alias on $LATEST
# (alias-latest); an S3 permission with SourceAccount and our own secret values (untraced)
SEEDED = ("orders-api", "alias-latest", "untraced")
FUNCTIONS = (*SEEDED, "versioned")
ENV_VALUES = {"DB_PASSWORD": SEEDED_SECRETS[0], "API_TOKEN": SEEDED_SECRETS[1], "STAGE": "prod"}

# Parts a restore recreates that moto cannot show back (see the module docstring).
MOTO_CANNOT_COMPARE = {
    "LoggingConfig": "moto neither stores nor returns it",
    "DeadLetterConfig": "moto ignores it",
    "RevisionId": "moto has none (and a restored function gets a new one in AWS)",
    "alias URL configs / invoke configs": "moto ignores the Qualifier",
}


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", text)
    return buf.getvalue()


def _trust() -> str:
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


async def create_role(account: str, name: str) -> str:
    async with aws_client("iam", account) as iam:
        with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
            await iam.create_role(RoleName=name, AssumeRolePolicyDocument=_trust())
    return f"arn:aws:iam::{account}:role/{name}"


async def create_versioned(account: str, name: str = "versioned") -> str:
    """A function with versions 1 and 2 (different code), $LATEST ahead of both, alias `live` on 1
    with 25% routed to 2, alias `beta` on 2, provisioned concurrency on `beta` and on version 1,
    tags, an invoke config, a permission on `live`, and an SQS trigger on `live`. Returns the queue
    ARN."""
    role = await create_role(account, f"{name}-role")
    async with aws_client("lambda", account) as lam, aws_client("sqs", account) as sqs:
        await lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": _zip("v1")},
            Environment={"Variables": {"STAGE": "one"}},
            Timeout=10,
            MemorySize=256,
            Tags={"team": "payments", "cost-center": "42"},
        )
        await lam.publish_version(FunctionName=name, Description="first")
        await lam.update_function_code(FunctionName=name, ZipFile=_zip("v2"))
        await lam.publish_version(FunctionName=name, Description="second")
        await lam.update_function_code(FunctionName=name, ZipFile=_zip("v3"))
        await lam.create_alias(
            FunctionName=name,
            Name="live",
            FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}},
        )
        await lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="2")
        await lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="beta", ProvisionedConcurrentExecutions=3
        )
        await lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2
        )
        await lam.put_function_event_invoke_config(
            FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=600
        )
        await lam.add_permission(
            FunctionName=name,
            StatementId="sns-live",
            Action="lambda:InvokeFunction",
            Principal="sns.amazonaws.com",
            SourceArn=f"arn:aws:sns:{REGION}:{account}:orders",
            Qualifier="live",
        )
        queue = (await sqs.create_queue(QueueName=f"{name}-in"))["QueueUrl"]
        attrs = await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        queue_arn = attrs["Attributes"]["QueueArn"]
        await lam.create_event_source_mapping(
            FunctionName=f"{name}:live", EventSourceArn=queue_arn, BatchSize=7
        )
    return str(queue_arn)


async def create_plain(account: str, name: str, env: dict[str, str] | None = None) -> None:
    role = await create_role(account, "plain-role")
    async with aws_client("lambda", account) as lam:
        await lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": _zip(name)},
            Environment={"Variables": env or {"STAGE": "race"}},
        )


@dataclass
class Source:
    key_arn: str


@pytest.fixture(scope="module")
def source(moto: EmbeddedMoto) -> Source:
    async def setup() -> Source:
        await seed_estate([SOURCE], [REGION], only=SEEDED)
        await create_versioned(SOURCE)
        async with aws_client("lambda", SOURCE) as lam:  # secrets of our own, besides the estate's
            await lam.update_function_configuration(
                FunctionName="untraced", Environment={"Variables": ENV_VALUES}
            )
        async with aws_client("kms", BACKUP) as kms:
            key = (await kms.create_key(Description="export env values"))["KeyMetadata"]["Arn"]
        return Source(str(key))

    return asyncio.run(setup())


async def make_bucket(name: str) -> str:
    async with aws_client("s3", BACKUP) as s3:
        await s3.create_bucket(Bucket=name)
    return name


async def objects(bucket: str, read: bool = True) -> dict[str, bytes]:
    """Every object of a bucket (its body, or b"" without `read`)."""
    out: dict[str, bytes] = {}
    async with aws_client("s3", BACKUP) as s3:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        async for page in pages:
            for o in page.get("Contents") or []:
                out[o["Key"]] = b""
                if read:
                    body = (await s3.get_object(Bucket=bucket, Key=o["Key"]))["Body"]
                    async with body as stream:
                        out[o["Key"]] = await stream.read()
    return out


def keys_of(bucket: str) -> list[str]:
    return list(asyncio.run(objects(bucket, read=False)))


def snapshots_of(keys: dict[str, bytes] | list[str], function: str) -> list[str]:
    """Snapshot ids (with a manifest) of a function, oldest first."""
    ids = set()
    for key in keys:
        parts = key.split("/")
        if len(parts) >= 7 and parts[4] == function and parts[-1] == "manifest.json":
            ids.add(parts[5])
    return sorted(ids)


def export_settings(bucket: str, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "bucket": bucket, "role_arn": EXPORT_ROLE, **extra}


@dataclass
class Swept:
    outcomes: list[Outcome]
    samples: list[Sample]


async def sweep(
    daemon: Daemon, times: int = 1, between: Callable[[], Any] | None = None
) -> list[Swept]:
    out = []
    try:
        for _ in range(times):
            outcomes = await daemon.reconciler.sweep_once()
            assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
            out.append(Swept(outcomes, parse_exposition(generate_latest(daemon.registry).decode())))
    finally:
        await daemon.gateway.close()
    return out


def daemon_for(tmp: Path, account: str, clock: Any = utcnow, **overrides: Any) -> Daemon:
    policy = policy_for([account], tmp, regions=[REGION])
    settings = settings_for(policy, **overrides)
    return Daemon(settings, load_policy(policy), clock=clock)


def requests(samples: list[Sample], service: str, operation: str) -> float:
    found = select(
        samples, "posture_aws_api_requests_total", aws_service=service, operation=operation
    )
    return found[0][2] if found else 0.0


def findings(swept: Swept, control: str) -> dict[str, Any]:
    return {
        f.resource.rsplit(":", 1)[-1]: f
        for o in swept.outcomes
        for f in (o.result.findings if o.result else ())
        if f.control == control
    }


# --- export off: not a single write ---------------------------------------------------------------


def test_export_off_makes_no_write_call(source: Source, tmp_path: Path) -> None:
    bucket = asyncio.run(make_bucket("exports-off"))
    daemon = daemon_for(tmp_path, SOURCE)  # POSTURE_EXPORT__ENABLED is off by default
    assert daemon.exporter is None
    (swept,) = asyncio.run(sweep(daemon))
    s = swept.samples
    # the write operations are declared (their counters exist) and were never called
    for service, operation in (("s3", "PutObject"), ("s3", "DeleteObjects"), ("kms", "Encrypt")):
        assert select(s, "posture_aws_api_requests_total", aws_service=service, operation=operation)
        assert requests(s, service, operation) == 0
    for _name, labels, v in select(s, "posture_aws_api_requests_total"):
        if labels["aws_service"] in ("s3", "kms") or labels["operation"] in WRITES:
            assert v == 0, (labels, v)
    assert asyncio.run(objects(bucket)) == {}
    # no export series (the backup policy's other kinds, such as versions, stay)
    assert not select(s, "posture_backup_last_timestamp_seconds", kind="export")
    assert not select(s, "posture_backup_missing", kind="export")
    assert findings(swept, "lambda-config-export-current") == {}  # not applicable


@pytest.mark.parametrize("export", [False, True], ids=["export-off", "export-on"])
def test_the_config_fingerprint_is_computed_for_the_export_alone(
    source: Source, tmp_path: Path, export: bool
) -> None:
    """The fingerprint, a digest of every part of a function's configuration, has one reader:
    the export, which compares it with the last snapshot's. A sweep without the export leaves it
    empty (no digest of each function, every sweep, that nothing reads); with it, every function
    has one, and the same one when collected again."""
    daemon = daemon_for(tmp_path, SOURCE)
    collector = daemon.reconciler.collectors["lambda"]

    async def collect(times: int) -> list[dict[str, str]]:
        out = []
        try:
            for _ in range(times):
                ctx = CollectContext(
                    target=Target(SOURCE, REGION, "lambda"),
                    api=daemon.gateway.api(SOURCE, REGION),
                    global_api=daemon.gateway.api(SOURCE, daemon.settings.aws.region),
                    now=utcnow(),
                    export=export,
                )
                snapshot = await collector.collect(ctx)
                assert isinstance(snapshot, LambdaSnapshot)
                out.append({f.name: f.config_fingerprint for f in snapshot.functions})
        finally:
            await daemon.gateway.close()
        return out

    first, second = asyncio.run(collect(2))
    assert set(FUNCTIONS) <= first.keys()
    if export:
        assert all(re.fullmatch(r"[0-9a-f]{20}", v) for v in first.values()), first
        assert len(set(first.values())) == len(first)  # one digest per function's configuration
        assert second == first
    else:
        assert set(first.values()) == {""} and set(second.values()) == {""}


# --- export on ----------------------------------------------------------------------------------


@dataclass
class Exported:
    bucket: str
    first: Swept
    second: Swept
    restarted: Swept
    objects: dict[str, bytes]
    logs: str


@pytest.fixture(scope="module")
def exported(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """SOURCE exported with environment values (KMS-encrypted), swept twice by one daemon and once
    more by a fresh one (a restart), with the daemon's log captured at debug level."""
    tmp = tmp_path_factory.mktemp("exported")
    bucket = asyncio.run(make_bucket("exports-main"))
    log = io.StringIO()
    setup_logging("debug", "json", stream=log)
    try:
        extra = {"include_env_values": True, "kms_key_id": source.key_arn}
        first, second = asyncio.run(
            sweep(daemon_for(tmp, SOURCE, export=export_settings(bucket, **extra)), times=2)
        )
        (restarted,) = asyncio.run(
            sweep(daemon_for(tmp, SOURCE, export=export_settings(bucket, **extra)))
        )
    finally:
        setup_logging("warning", "json")
        structlog.reset_defaults()
    return Exported(bucket, first, second, restarted, asyncio.run(objects(bucket)), log.getvalue())


def test_every_function_has_one_valid_snapshot(exported: Exported) -> None:
    keys = exported.objects
    for name in FUNCTIONS:
        (sid,) = snapshots_of(keys, name)
        prefix = f"posture-daemon/lambda/{SOURCE}/{REGION}/{name}/{sid}/"
        manifest = json.loads(keys[prefix + "manifest.json"])
        assert manifest["schema_version"] == 1
        assert manifest["function"]["name"] == name
        assert manifest["snapshot_id"] == sid and parse_snapshot_id(sid) is not None
        assert manifest["environment_values"] == "kms-encrypted"
        assert manifest["missing"] == []
        listed = {o["name"]: o for o in manifest["objects"]}
        inside = {k.removeprefix(prefix) for k in keys if k.startswith(prefix)} - {"manifest.json"}
        assert inside == set(listed)  # nothing unlisted, nothing missing
        for obj_name, obj in listed.items():
            data = keys[prefix + obj_name]
            assert len(data) == obj["size"]
            assert hashlib.sha256(data).hexdigest() == obj["sha256"]
        doc = json.loads(keys[prefix + manifest["document"]])
        assert doc["revision"] == manifest["revision"] == sid.rsplit("-", 1)[1]
        # every package the function and its referenced versions run is in the snapshot
        for sha in {doc["configuration"]["CodeSha256"]} | {
            v["CodeSha256"]
            for v in doc["versions"]
            if v["Version"] in d.Document.parse(doc).referenced_versions()
        }:
            package = keys[prefix + doc["code"]["packages"][sha]["object"]]
            assert base64.b64encode(hashlib.sha256(package).digest()).decode() == sha
            assert zipfile.ZipFile(io.BytesIO(package)).namelist() == ["app.py"]


def test_versioned_snapshot_holds_versions_aliases_triggers_and_packages(
    exported: Exported,
) -> None:
    keys = exported.objects
    (sid,) = snapshots_of(keys, "versioned")
    prefix = f"posture-daemon/lambda/{SOURCE}/{REGION}/versioned/{sid}/"
    doc = d.Document.parse(
        json.loads(keys[prefix + json.loads(keys[prefix + "manifest.json"])["document"]])
    )
    assert [v["Version"] for v in doc.versions] == ["1", "2"]
    assert doc.referenced_versions() == ["1", "2"]
    assert len(doc.code["packages"]) == 3  # $LATEST, 1 and 2 run three different packages
    aliases = {a["Name"]: a for a in doc.get("aliases")}
    assert aliases["live"]["FunctionVersion"] == "1"
    assert aliases["live"]["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.25}}
    assert doc.get("provisioned_concurrency") == [
        {"Qualifier": "1", "ProvisionedConcurrentExecutions": 2},
        {"Qualifier": "beta", "ProvisionedConcurrentExecutions": 3},
    ]
    (mapping,) = doc.get("event_source_mappings")
    assert mapping["BatchSize"] == 7 and mapping["Enabled"] is True
    assert doc.get("tags") == {"team": "payments", "cost-center": "42"}
    assert doc.get("invoke_config") == {"MaximumRetryAttempts": 1, "MaximumEventAgeInSeconds": 600}


def test_unchanged_functions_are_not_exported_again(exported: Exported) -> None:
    first, second, restarted = (
        exported.first.samples,
        exported.second.samples,
        exported.restarted.samples,
    )
    written = value(first, "posture_export_snapshots_total", result="written")
    assert written == len(FUNCTIONS)
    assert value(second, "posture_export_snapshots_total", result="written") == written
    # no upload and no full read on the second sweep: only the listing and the trigger listing
    for operation in ("PutObject", "CopyObject"):
        assert requests(second, "s3", operation) == requests(first, "s3", operation)
    assert requests(second, "lambda", "ListVersionsByFunction") == requests(
        first, "lambda", "ListVersionsByFunction"
    )
    assert requests(second, "lambda", "DownloadFunctionCode") == requests(
        first, "lambda", "DownloadFunctionCode"
    )
    # a restarted daemon learns the last snapshots from the bucket: no upload either
    assert value(restarted, "posture_export_snapshots_total", result="written") == 0
    assert requests(restarted, "s3", "PutObject") == 0
    assert requests(restarted, "lambda", "ListVersionsByFunction") == 0


def test_backup_gauges_and_control(exported: Exported) -> None:
    s = exported.second.samples
    stamps = select(
        s, "posture_backup_last_timestamp_seconds", aws_account_id=SOURCE, kind="export"
    )
    assert {row[1]["resource"].rsplit(":", 1)[-1] for row in stamps} == set(FUNCTIONS)
    now = time.time()
    assert all(now - 600 < row[2] <= now for row in stamps)
    assert {row[2] for row in select(s, "posture_backup_missing", kind="export")} == {0}
    results = findings(exported.second, "lambda-config-export-current")
    assert set(results) == set(FUNCTIONS)
    assert all(f.status.value == "pass" and "is current" in f.evidence for f in results.values())
    assert value(s, "posture_export_failures_total", stage="write") == 0


def test_environment_values_are_only_ever_encrypted(exported: Exported, source: Source) -> None:
    secrets = (*SEEDED_SECRETS, *ENV_VALUES.values())
    for key, data in exported.objects.items():
        for secret in secrets:
            if secret == "prod":
                continue  # too common a word to scan for
            assert secret.encode() not in data, f"{secret} in plaintext in {key}"
            assert base64.b64encode(secret.encode()) not in data
    for secret in secrets:
        if secret != "prod":
            assert secret not in exported.logs
    # the presigned code URLs were used but never logged
    assert "posture-shim/lambda-code" not in exported.logs
    assert not re.search(r"X-Amz-Signature=[0-9a-f]", exported.logs)
    # the ciphertexts decrypt, with the encryption context, to the function's values
    (sid,) = snapshots_of(exported.objects, "untraced")
    prefix = f"posture-daemon/lambda/{SOURCE}/{REGION}/untraced/{sid}/"
    manifest = json.loads(exported.objects[prefix + "manifest.json"])
    doc = json.loads(exported.objects[prefix + manifest["document"]])
    arn = doc["function"]["arn"]
    assert doc["environment"]["values"] == "kms-encrypted"
    assert doc["configuration"]["EnvironmentVariables"] == sorted(ENV_VALUES)

    async def decrypt() -> dict[str, str]:
        out = {}
        async with aws_client("kms", BACKUP) as kms:
            for name, blob in doc["environment"]["ciphertexts"]["$LATEST"].items():
                resp = await kms.decrypt(
                    CiphertextBlob=base64.b64decode(blob),
                    EncryptionContext=d.encryption_context(arn, "$LATEST", name),
                )
                out[name] = d.value_of(resp["Plaintext"])
            with pytest.raises(Exception, match="InvalidCiphertext"):
                await kms.decrypt(
                    CiphertextBlob=base64.b64decode(blob),
                    EncryptionContext=d.encryption_context(arn, "$LATEST", "OTHER"),
                )
        return out

    assert asyncio.run(decrypt()) == ENV_VALUES


def test_names_only_by_default(source: Source, tmp_path: Path) -> None:
    bucket = asyncio.run(make_bucket("exports-names"))
    (swept,) = asyncio.run(sweep(daemon_for(tmp_path, SOURCE, export=export_settings(bucket))))
    assert requests(swept.samples, "kms", "Encrypt") == 0
    keys = asyncio.run(objects(bucket))
    (sid,) = snapshots_of(keys, "untraced")
    prefix = f"posture-daemon/lambda/{SOURCE}/{REGION}/untraced/{sid}/"
    manifest = json.loads(keys[prefix + "manifest.json"])
    doc = json.loads(keys[prefix + manifest["document"]])
    assert manifest["environment_values"] == "omitted"
    assert doc["environment"] == {"variables": sorted(ENV_VALUES), "values": "omitted"}
    assert "ciphertexts" not in json.dumps(doc)
    for data in keys.values():
        for secret in SEEDED_SECRETS:
            assert secret.encode() not in data


# --- corrupted and partial snapshots --------------------------------------------------------------


DAMAGE = ("document", "object", "manifest", "garbage", "schema")


async def tampered_copy(bucket: str, function: str, sid: str, tamper: str) -> str:
    """Copy a valid snapshot of `function` under a newer id (rewriting its manifest for its new
    place, as a writer would), then damage the copy. Returns the copy's URL."""
    prefix = f"posture-daemon/lambda/{SOURCE}/{REGION}/{function}/"
    newer = f"29991231T235959.{DAMAGE.index(tamper):03d}Z-{sid.rsplit('-', 1)[1]}"
    async with aws_client("s3", BACKUP) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix + sid + "/")
        for o in listed["Contents"]:
            name = o["Key"].removeprefix(prefix + sid + "/")
            body = (await s3.get_object(Bucket=bucket, Key=o["Key"]))["Body"]
            async with body as stream:
                data = await stream.read()
            if name == "manifest.json":
                if tamper == "manifest":
                    continue  # a writer that died before its manifest
                manifest = json.loads(data)
                manifest["snapshot_id"] = newer
                if tamper == "schema":
                    manifest["schema_version"] = 99
                data = b"{not json" if tamper == "garbage" else json.dumps(manifest).encode()
            elif name.startswith("function.") and tamper == "document":
                damaged = data.replace(b'"Timeout": 30', b'"Timeout": 31')  # same size
                assert damaged != data and len(damaged) == len(data)
                data = damaged
            elif name.startswith("code/") and tamper == "object":
                continue  # an object the manifest lists is gone
            await s3.put_object(Bucket=bucket, Key=f"{prefix}{newer}/{name}", Body=data)
    return f"s3://{bucket}/{prefix}{newer}/"


@pytest.fixture(scope="module")
def damaged(exported: Exported) -> dict[str, str]:
    """Five damaged copies of alias-latest's snapshot, newer than the genuine one."""
    (sid,) = snapshots_of(exported.objects, "alias-latest")
    return {
        tamper: asyncio.run(tampered_copy(exported.bucket, "alias-latest", sid, tamper))
        for tamper in DAMAGE
    }


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("document", r"function\.[0-9a-f]+\.json: checksum does not match"),
        ("object", r"code/[0-9a-f]+\.zip is missing"),
        ("manifest", r"partial: no manifest"),
        ("garbage", r"manifest is not JSON"),
        ("schema", r"schema_version 99 was written by a newer posture-daemon"),
    ],
)
def test_corrupted_or_partial_snapshot_is_refused(
    damaged: dict[str, str],
    tamper: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTURE_EXPORT__ROLE_ARN", EXPORT_ROLE)
    url = damaged[tamper]
    out = io.StringIO()
    code = cli.main(["restore", "--snapshot", url, "--function-name", "never-created"], out)
    err = capsys.readouterr().err
    assert code == 4
    assert re.search(message, err), err
    assert "restore refused" in err and "Traceback" not in err

    async def absent() -> bool:
        async with aws_client("lambda", SOURCE) as lam:
            try:
                await lam.get_function(FunctionName="never-created")
            except lam.exceptions.ResourceNotFoundException:
                return True
        return False

    assert asyncio.run(absent())


def test_list_and_index_skip_damaged_snapshots(
    exported: Exported, damaged: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`snapshots list` flags each damaged copy, and the export falls back to the genuine
    snapshot (still current: nothing is rewritten)."""
    monkeypatch.setenv("POSTURE_EXPORT__ROLE_ARN", EXPORT_ROLE)
    out = io.StringIO()
    assert (
        cli.main(
            [
                "snapshots",
                "list",
                "--bucket",
                exported.bucket,
                "--function",
                "alias-latest",
                "--output",
                "json",
            ],
            out,
        )
        == 0
    )
    rows = json.loads(out.getvalue())
    assert [r["valid"] for r in rows] == [False] * 5 + [True]  # newest first
    assert {r["status"].split(":")[0] for r in rows} == {"invalid", "newer schema", "valid"}
    (swept,) = asyncio.run(
        sweep(daemon_for(tmp_path, SOURCE, export=export_settings(exported.bucket)))
    )
    assert value(swept.samples, "posture_export_snapshots_total", result="written") == 0
    result = findings(swept, "lambda-config-export-current")["alias-latest"]
    (sid,) = snapshots_of(exported.objects, "alias-latest")
    assert result.status.value == "pass" and sid in result.evidence


# --- restore ----------------------------------------------------------------------------------


async def describe(account: str, region: str, name: str) -> dict[str, Any]:
    """A function as the Lambda API shows it, field by field, independent of the daemon's own
    normalisation. Versions are identified by their code (CodeSha256), not their number, which
    a restore cannot keep."""
    async with aws_client("lambda", account, region) as lam:
        fn = await lam.get_function(FunctionName=name)
        cfg = fn["Configuration"]
        versions = [
            v
            for v in (await lam.list_versions_by_function(FunctionName=name))["Versions"]
            if v["Version"] != "$LATEST"
        ]
        by_number = {v["Version"]: v["CodeSha256"] for v in versions}

        def ref(qualifier: str) -> str:  # a version number -> its code; aliases stay names
            return by_number.get(qualifier, qualifier)

        def qualifier(arn: str) -> str:
            return ref(lc.qualifier_of(arn, name))

        def config(c: dict[str, Any]) -> dict[str, Any]:
            vpc = c.get("VpcConfig") or {}
            return {
                "Runtime": c.get("Runtime"),
                "Role": c.get("Role"),
                "Handler": c.get("Handler"),
                "Description": c.get("Description"),
                "Timeout": c.get("Timeout"),
                "MemorySize": c.get("MemorySize"),
                "Environment": (c.get("Environment") or {}).get("Variables") or {},
                "KMSKeyArn": c.get("KMSKeyArn"),
                "VpcConfig": (
                    sorted(vpc.get("SubnetIds") or []),
                    sorted(vpc.get("SecurityGroupIds") or []),
                ),
                "TracingConfig": (c.get("TracingConfig") or {}).get("Mode"),
                "Layers": [x["Arn"] for x in c.get("Layers") or []],
                "Architectures": c.get("Architectures"),
                "EphemeralStorage": (c.get("EphemeralStorage") or {}).get("Size"),
                "PackageType": c.get("PackageType"),
                "CodeSha256": c.get("CodeSha256"),
                "CodeSize": c.get("CodeSize"),
                "SnapStart": (c.get("SnapStart") or {}).get("ApplyOn"),
            }

        async def optional(call: Any) -> Any:
            try:
                return await call
            except lam.exceptions.ResourceNotFoundException:
                return None

        policy = await optional(lam.get_policy(FunctionName=name))
        statements = {}
        for st in json.loads(policy["Policy"])["Statement"] if policy else []:
            key = (qualifier(str(st["Resource"])), st["Sid"])
            statements[key] = {k: v for k, v in st.items() if k != "Resource"}
        aliases = {
            a["Name"]: (
                ref(a["FunctionVersion"]),
                a.get("Description", ""),
                {
                    ref(k): w
                    for k, w in (a.get("RoutingConfig") or {})
                    .get("AdditionalVersionWeights", {})
                    .items()
                },
            )
            for a in (await lam.list_aliases(FunctionName=name))["Aliases"]
        }
        url = await optional(lam.get_function_url_config(FunctionName=name))
        invoke = await optional(lam.get_function_event_invoke_config(FunctionName=name))
        provisioned = (
            (await lam.list_provisioned_concurrency_configs(FunctionName=name))[
                "ProvisionedConcurrencyConfigs"
            ]
            if versions
            else []
        )
        mappings = [
            m
            for m in (await lam.list_event_source_mappings())["EventSourceMappings"]
            if f":function:{name}" in m["FunctionArn"]
            and m["FunctionArn"].split(f":function:{name}", 1)[1][:1] in ("", ":")
        ]
        csc = await lam.get_function_code_signing_config(FunctionName=name)
        return {
            "configuration": config(cfg),
            "versions": sorted(
                (v["CodeSha256"], v.get("Description", ""), json.dumps(config(v), sort_keys=True))
                for v in versions
                if v["CodeSha256"]
                in {a[0] for a in aliases.values()}
                | {k for a in aliases.values() for k in a[2]}
                | {qualifier(p["FunctionArn"]) for p in provisioned}
                | {qualifier(m["FunctionArn"]) for m in mappings}
            ),
            # aws:-prefixed tags are reserved to AWS (CloudFormation sets aws:cloudformation:*):
            # restore cannot set them, by design, so they are not compared
            "tags": {k: v for k, v in (fn.get("Tags") or {}).items() if not k.startswith("aws:")},
            "reserved_concurrency": (fn.get("Concurrency") or {}).get(
                "ReservedConcurrentExecutions"
            ),
            "policy": statements,
            "aliases": aliases,
            "url": {k: url.get(k) for k in ("AuthType", "Cors", "InvokeMode")} if url else None,
            "invoke_config": {
                k: invoke.get(k)
                for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")
            }
            if invoke
            else None,
            "provisioned_concurrency": sorted(
                (qualifier(p["FunctionArn"]), p["RequestedProvisionedConcurrentExecutions"])
                for p in provisioned
            ),
            "event_source_mappings": sorted(
                (m["EventSourceArn"], m["BatchSize"], qualifier(m["FunctionArn"]), m["State"])
                for m in mappings
            ),
            "code_signing_config_arn": csc.get("CodeSigningConfigArn"),
        }


COMPARED = {
    "configuration",
    "versions",
    "tags",
    "reserved_concurrency",
    "policy",
    "aliases",
    "url",
    "invoke_config",
    "provisioned_concurrency",
    "event_source_mappings",
    "code_signing_config_arn",
}


def restore_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(["restore", *args], out)
    return code, out.getvalue()


def latest_snapshot(exported: Exported, name: str) -> str:
    (sid,) = snapshots_of(exported.objects, name)
    return f"s3://{exported.bucket}/posture-daemon/lambda/{SOURCE}/{REGION}/{name}/{sid}/"


@pytest.fixture
def restorer(monkeypatch: pytest.MonkeyPatch) -> None:
    """`restore` reads the bucket through the export role, as the daemon wrote it."""
    monkeypatch.setenv("POSTURE_EXPORT__ROLE_ARN", EXPORT_ROLE)


def test_restore_into_another_account_and_region(exported: Exported, restorer: None) -> None:
    url = latest_snapshot(exported, "orders-api")
    target = ["--account", OTHER, "--region", OTHER_REGION, "--function-name", "orders-copy"]
    code, out = restore_cli("--snapshot", url, *target)
    assert code == 4
    # every dependency the snapshot cannot bring to OTHER/eu-west-1 is named, with its way out
    for expected in (
        rf"BLOCKING \(role\): execution role arn:aws:iam::{SOURCE}:role/orders-api-role is in account {SOURCE}",
        r"BLOCKING \(vpc\): VPC subnets .* belong to .*--drop vpc",
        r"BLOCKING \(layers\): layer .*common-utils:1 is in another region.*--drop layers",
        r"BLOCKING \(kms-key\): KMS key .* is not in .*--drop kms-key",
        r"BLOCKING \(code-signing\): code signing config .*--drop code-signing",
        r"BLOCKING \(destinations\): OnFailure destination .*lambda-failures is elsewhere",
    ):
        assert re.search(expected, out), (expected, out)
    role = asyncio.run(create_role(OTHER, "orders-copy-role"))
    drops = "vpc,layers,kms-key,code-signing,destinations"
    code, out = restore_cli("--snapshot", url, *target, "--role", role, "--drop", drops)
    assert code == 0, out
    original = asyncio.run(describe(SOURCE, REGION, "orders-api"))
    copy = asyncio.run(describe(OTHER, OTHER_REGION, "orders-copy"))
    for key in (
        "Runtime",
        "Handler",
        "Timeout",
        "MemorySize",
        "Environment",
        "TracingConfig",
        "CodeSha256",
    ):
        assert copy["configuration"][key] == original["configuration"][key], key
    assert copy["configuration"]["Role"] == role
    assert copy["configuration"]["VpcConfig"] == ([], []) and copy["configuration"]["Layers"] == []
    assert copy["configuration"]["Environment"] == {"TABLE_NAME": "orders"}  # decrypted value
    for key in (
        "tags",
        "reserved_concurrency",
        "aliases",
        "url",
        "provisioned_concurrency",
        "versions",
    ):
        if key == "versions":  # same code and settings, minus what was dropped
            assert [v[:2] for v in copy[key]] == [v[:2] for v in original[key]]
        else:
            assert copy[key] == original[key], key
    assert {k[1] for k in copy["policy"]} == {k[1] for k in original["policy"]}
    assert original["invoke_config"]["DestinationConfig"]["OnFailure"]
    assert copy["invoke_config"] is None  # its only setting was the dropped destination


def test_restore_round_trip(
    exported: Exported, restorer: None, moto: EmbeddedMoto, capsys: pytest.CaptureFixture[str]
) -> None:
    """Export (done), delete every function, restore each from its snapshot, compare field by
    field. Their event source mappings outlive the deletion, as in AWS, and are reused."""
    before = {name: asyncio.run(describe(SOURCE, REGION, name)) for name in FUNCTIONS}
    assert set(next(iter(before.values()))) == COMPARED  # nothing goes uncompared

    async def delete_all() -> None:
        async with aws_client("lambda", SOURCE) as lam:
            for name in FUNCTIONS:
                await lam.delete_function(FunctionName=name)

    asyncio.run(delete_all())
    for name in FUNCTIONS:
        code, out = restore_cli("--snapshot", latest_snapshot(exported, name))
        assert code == 0, out
        assert "restored arn:aws:lambda" in out
    after = {name: asyncio.run(describe(SOURCE, REGION, name)) for name in FUNCTIONS}
    for name in FUNCTIONS:
        for key in sorted(COMPARED):
            assert after[name][key] == before[name][key], (name, key)
    assert len(after["versioned"]["event_source_mappings"]) == 1  # reused, not duplicated

    # over an existing function: refused without --replace ...
    url = latest_snapshot(exported, "versioned")
    code, _ = restore_cli("--snapshot", url)
    assert code == 4 and "exists in" in capsys.readouterr().err

    async def drift() -> None:
        async with aws_client("lambda", SOURCE) as lam:
            await lam.update_function_configuration(FunctionName="versioned", MemorySize=1024)
            await lam.create_alias(FunctionName="versioned", Name="extra", FunctionVersion="1")
            await lam.remove_permission(
                FunctionName="versioned", StatementId="sns-live", Qualifier="live"
            )

    asyncio.run(drift())
    drifted = asyncio.run(describe(SOURCE, REGION, "versioned"))
    # ... a dry run plans exactly the three repairs and changes nothing ...
    code, out = restore_cli("--snapshot", url, "--replace", "--dry-run")
    assert code == 0, out
    steps = [
        line.split(".", 1)[1].split("(")[0].split()
        for line in out.splitlines()
        if re.match(r"\s+\d+\. ", line)
    ]
    assert steps == [
        [
            "update",
            "configuration",
            "of",
            "$LATEST",
        ],
        ["delete", "alias", "extra"],
        ["create", "permission", "sns-live", "on", "live"],
    ], out
    assert "dry run: 3 change(s) planned, nothing was changed" in out
    assert asyncio.run(describe(SOURCE, REGION, "versioned")) == drifted
    # ... and --replace repairs exactly that
    code, out = restore_cli("--snapshot", url, "--replace")
    assert code == 0, out
    assert asyncio.run(describe(SOURCE, REGION, "versioned")) == before["versioned"]

    # restoring elsewhere (another name) creates the trigger disabled: the original still consumes it
    assert moto.shim is not None

    def deny_add_permission(request: ShimRequest) -> ShimResponse | None:
        if request.method == "POST" and request.path.endswith("/versioned-copy/policy"):
            return json_error("AccessDeniedException", "not authorized", "403 Forbidden")
        return None

    moto.shim.add_fault(deny_add_permission)
    try:
        code, out = restore_cli("--snapshot", url, "--function-name", "versioned-copy")
    finally:
        moto.shim.clear_faults()
    # a failure half-way says what is done and what is not, and a re-run with --replace finishes
    assert code == 5, out
    assert re.search(
        r"FAILED\s+\d+\. create\s+permission sns-live on live: .*AccessDeniedException", out
    )
    assert "are done" in out and "--replace" in out
    code, out = restore_cli("--snapshot", url, "--function-name", "versioned-copy", "--replace")
    assert code == 0, out
    copy = asyncio.run(describe(SOURCE, REGION, "versioned-copy"))
    for key in sorted(COMPARED - {"event_source_mappings"}):
        assert copy[key] == before["versioned"][key], key
    assert [m[3] for m in copy["event_source_mappings"]] == ["Disabled"]
    assert [m[:3] for m in copy["event_source_mappings"]] == [
        m[:3] for m in before["versioned"]["event_source_mappings"]
    ]


# --- change detection, concurrency, retention (account RACE) ------------------------------------

RACE_FUNCTIONS = ("race-a", "race-b", "race-c")


@pytest.fixture(scope="module")
def race(moto: EmbeddedMoto) -> tuple[str, ...]:
    async def setup() -> None:
        for name in RACE_FUNCTIONS:
            await create_plain(RACE, name)

    asyncio.run(setup())
    return RACE_FUNCTIONS


def test_concurrent_sweeps_write_one_snapshot_per_change(
    race: tuple[str, ...], moto: EmbeddedMoto, tmp_path: Path
) -> None:
    """Three daemons (separate processes as far as the export knows: no shared memory) sweep the
    same account-region at once. Manifest writes are slowed so every daemon is past its index read
    before the first snapshot completes: they all want to write, and agree on one writer."""
    bucket = asyncio.run(make_bucket("exports-race"))
    assert moto.shim is not None

    def slow_manifests(request: ShimRequest) -> ShimResponse | None:
        if request.method == "PUT" and request.path.endswith("/manifest.json"):
            time.sleep(0.4)
        return None

    def daemons() -> list[Daemon]:
        return [
            daemon_for(tmp_path / str(i), RACE, export=export_settings(bucket)) for i in range(3)
        ]

    async def concurrently() -> list[list[Sample]]:
        sweeps = await asyncio.gather(*(sweep(dm) for dm in daemons()))
        return [s[0].samples for s in sweeps]

    for i in range(3):
        (tmp_path / str(i)).mkdir()
    moto.shim.add_fault(slow_manifests)
    try:
        first = asyncio.run(concurrently())
        keys = keys_of(bucket)
        assert {f: len(snapshots_of(keys, f)) for f in race} == dict.fromkeys(race, 1)
        assert sum(value(s, "posture_export_snapshots_total", result="written") for s in first) == 3
        assert (
            sum(value(s, "posture_export_snapshots_total", result="concurrent") for s in first) > 0
        )

        async def change() -> None:
            async with aws_client("lambda", RACE) as lam:
                await lam.update_function_configuration(FunctionName="race-a", MemorySize=1024)

        asyncio.run(change())
        second = asyncio.run(concurrently())
    finally:
        moto.shim.clear_faults()
    keys = keys_of(bucket)
    assert {f: len(snapshots_of(keys, f)) for f in race} == {"race-a": 2, "race-b": 1, "race-c": 1}
    assert sum(value(s, "posture_export_snapshots_total", result="written") for s in second) == 1
    assert all(
        value(s, "posture_export_failures_total", stage="write") == 0 for s in first + second
    )


def test_changes_are_exported_once_and_only_changes(race: tuple[str, ...], tmp_path: Path) -> None:
    """No change: nothing written (not even after the periodic full re-read). A configuration
    change, an attachment change (a permission) and a new trigger each make exactly one snapshot of
    that function. (Every part's effect on the
    fingerprint is unit-tested in tests/unit/model/test_lambdaconfig.py.)"""
    bucket = asyncio.run(make_bucket("exports-changes"))
    clock = {"t": dt.datetime.now(dt.UTC)}
    daemon = daemon_for(
        tmp_path, RACE, clock=lambda: clock["t"], export=export_settings(bucket, full_check_hours=1)
    )

    async def trigger(lam: Any) -> None:
        async with aws_client("sqs", RACE) as sqs:
            url = (await sqs.create_queue(QueueName="race-in"))["QueueUrl"]
            attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        arn = attrs["Attributes"]["QueueArn"]
        await lam.create_event_source_mapping(FunctionName="race-b", EventSourceArn=arn)

    changes: list[Callable[[Any], Any]] = [
        lambda lam: asyncio.sleep(0),  # nothing changed
        lambda lam: lam.update_function_configuration(FunctionName="race-b", Timeout=42),
        lambda lam: lam.add_permission(
            FunctionName="race-b",
            StatementId="events",
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
        ),
        trigger,
    ]

    def calls(operation: str, service: str = "lambda") -> float:
        samples = parse_exposition(generate_latest(daemon.registry).decode())
        return requests(samples, service, operation)

    async def run() -> list[int]:
        counts = []
        try:
            await daemon.reconciler.sweep_once()
            # the staggered full check: two hours on, every function is re-read in full once,
            # and nothing unchanged is written
            reads, puts = calls("ListVersionsByFunction"), calls("PutObject", "s3")
            clock["t"] += dt.timedelta(hours=2)
            await daemon.reconciler.sweep_once()
            assert calls("ListVersionsByFunction") == reads + len(race)
            assert calls("PutObject", "s3") == puts
            for change in changes:
                async with aws_client("lambda", RACE) as lam:
                    await change(lam)
                await daemon.reconciler.sweep_once()
                counts.append(len(snapshots_of(await objects(bucket, read=False), "race-b")))
            # packages were downloaded once per function; later snapshots copied them in S3
            assert calls("DownloadFunctionCode") == len(race)
            assert calls("CopyObject", "s3") == len(changes) - 1
        finally:
            await daemon.gateway.close()
        return counts

    assert asyncio.run(run()) == [1, 2, 3, 4]
    keys = keys_of(bucket)
    assert len(snapshots_of(keys, "race-a")) == 1 and len(snapshots_of(keys, "race-c")) == 1


def test_retention(race: tuple[str, ...], tmp_path: Path) -> None:
    bucket = asyncio.run(make_bucket("exports-retention"))
    t0 = dt.datetime.now(dt.UTC)  # S3 stamps objects with the real time: stay near it
    now = {"t": t0}

    def sweep_at(offset: dt.timedelta, **export: Any) -> Swept:
        now["t"] = t0 + offset
        settings = export_settings(bucket, **{"keep_last": 2, "max_age_days": 1, **export})
        daemon = daemon_for(tmp_path, RACE, clock=lambda: now["t"], export=settings)
        return asyncio.run(sweep(daemon))[0]

    async def memory(mb: int) -> None:
        async with aws_client("lambda", RACE) as lam:
            await lam.update_function_configuration(FunctionName="race-c", MemorySize=mb)

    async def leftovers() -> None:  # an unfinished snapshot and a writer's claim
        base = f"posture-daemon/lambda/{RACE}/{REGION}/race-a/"
        async with aws_client("s3", BACKUP) as s3:
            unfinished = base + "20300101T000000.000Z-aaaaaaaaaaaaaaaa/function.x.json"
            await s3.put_object(Bucket=bucket, Key=unfinished, Body=b"{}")
            await s3.put_object(Bucket=bucket, Key=base + ".claims/x--aaaaaaaa", Body=b"{}")

    def count(name: str) -> int:
        return len(snapshots_of(keys_of(bucket), name))

    sweep_at(dt.timedelta(0))
    for hours, mb in ((1, 320), (2, 384)):
        asyncio.run(memory(mb))
        sweep_at(dt.timedelta(hours=hours))
    assert count("race-c") == 3  # all younger than a day: kept by the age rule
    asyncio.run(leftovers())
    swept = sweep_at(dt.timedelta(days=3))
    assert count("race-c") == 2  # older than a day: the newest two stay (keep_last)
    keys = keys_of(bucket)
    assert not [k for k in keys if "20300101T000000.000Z" in k]  # unfinished: removed
    assert [k for k in keys if k.endswith(".claims/x--aaaaaaaa")]  # claims stay a week
    assert value(swept.samples, "posture_export_pruned_total", kind="snapshot") == 1
    assert value(swept.samples, "posture_export_pruned_total", kind="partial") == 1

    async def delete_b() -> None:
        async with aws_client("lambda", RACE) as lam:
            await lam.delete_function(FunctionName="race-b")

    asyncio.run(delete_b())
    # only the age rule, a month later: the newest valid snapshot of each function stays,
    # and so does the deleted function's (it is what a restore needs)
    swept = sweep_at(dt.timedelta(days=30), keep_last=None)
    assert [count(f) for f in race] == [1, 1, 1]
    assert not [k for k in keys_of(bucket) if "/.claims/" in k]  # a week on: gone
    assert value(swept.samples, "posture_export_pruned_total", kind="claim") >= 1
