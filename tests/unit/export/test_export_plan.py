"""Restore planning on realistic snapshot documents: the steps, their parameters and order, and the
problems that block a restore. Covers what moto cannot show back in the integration tests:
LoggingConfig and DeadLetterConfig in CreateFunction, alias-level URLs and invoke configs,
EventSourceToken and PrincipalOrgID conditions, and the comparison behind --replace.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest

from daemon.export import document as d
from daemon.export import plan as p
from daemon.export.manifest import FunctionIdentity
from daemon.model import lambdaconfig as lc

ACCOUNT, REGION = "111111111111", "us-east-1"
ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders"


def sha(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CODE_1, CODE_2, CODE_LATEST = sha("v1"), sha("v2"), sha("v3")


def config(code: str, **extra: Any) -> dict[str, Any]:
    return {
        "FunctionName": "orders",
        "FunctionArn": ARN,
        "Runtime": "python3.12",
        "Role": f"arn:aws:iam::{ACCOUNT}:role/orders",
        "Handler": "app.handler",
        "Description": "",
        "Timeout": 30,
        "MemorySize": 512,
        "CodeSha256": code,
        "CodeSize": 100,
        "PackageType": "Zip",
        "Environment": {"Variables": {"TABLE": "orders"}},
        "VpcConfig": {"SubnetIds": ["subnet-1"], "SecurityGroupIds": ["sg-1"]},
        "Layers": [{"Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:common:3"}],
        "KMSKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k",
        "DeadLetterConfig": {"TargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"},
        "LoggingConfig": {"LogFormat": "JSON", "LogGroup": "/custom/orders"},
        "TracingConfig": {"Mode": "Active"},
        "Architectures": ["arm64"],
        **extra,
    }


def statement(sid: str, qualifier: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": ARN + (f":{qualifier}" if qualifier else ""),
        **extra,
    }


def parts(**changes: Any) -> lc.FunctionParts:
    base: dict[str, Any] = {
        "configuration": config(CODE_LATEST),
        "versions": (
            {**config(CODE_1), "Version": "1", "Description": "first"},
            {**config(CODE_2), "Version": "2", "Environment": {"Variables": {"TABLE": "v2"}}},
            {**config(sha("v0")), "Version": "3"},  # referenced by nothing: not restored
        ),
        "tags": {"team": "a", "aws:cloudformation:stack-name": "s"},
        "reserved_concurrency": 10,
        "policy": json.dumps(
            {
                "Statement": [
                    statement(
                        "sns",
                        Condition={
                            "ArnLike": {"AWS:SourceArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:t"}
                        },
                    ),
                    statement(
                        "alexa",
                        Principal="alexa-appkit.amazon.com",
                        Condition={"StringEquals": {"lambda:EventSourceToken": "amzn1.ask"}},
                    ),
                    statement(
                        "org",
                        Principal={"AWS": "arn:aws:iam::222222222222:root"},
                        Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}},
                    ),
                    statement(
                        "odd",
                        Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
                    ),
                ]
            }
        ),
        "aliases": (
            {
                "Name": "live",
                "FunctionVersion": "1",
                "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.25}},
            },
        ),
        "url": {"AuthType": "AWS_IAM", "InvokeMode": "BUFFERED"},
        "invoke_config": {"MaximumRetryAttempts": 1},
        "provisioned": (
            {"FunctionArn": ARN + ":live", "RequestedProvisionedConcurrentExecutions": 5},
        ),
        "code_signing_config_arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:code-signing-config:c",
        "event_source_mappings": (
            {
                "UUID": "u1",
                "EventSourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:in",
                "FunctionArn": ARN + ":2",
                "BatchSize": 10,
                "State": "Enabled",
            },
        ),
        "alias_policies": {"live": json.dumps({"Statement": [statement("live-sns", "live")]})},
        "alias_urls": {"live": {"AuthType": "NONE", "FunctionArn": ARN + ":live"}},
        "invoke_configs": (
            {"FunctionArn": ARN, "MaximumRetryAttempts": 1},
            {
                "FunctionArn": ARN + ":live",
                "MaximumEventAgeInSeconds": 600,
                "DestinationConfig": {
                    "OnFailure": {"Destination": f"arn:aws:sqs:{REGION}:{ACCOUNT}:failed"}
                },
            },
        ),
    }
    base.update(changes)
    return lc.FunctionParts(**base)


def document(source: lc.FunctionParts | None = None, env: str = "kms") -> d.Document:
    source = source or parts()
    identity = FunctionIdentity("orders", ARN, ACCOUNT, REGION)
    packages = {
        c: {"object": d.code_object_name(c), "size": 100} for c in (CODE_1, CODE_2, CODE_LATEST)
    }
    environment = (
        d.environment_section(["TABLE"], None, {"$LATEST": {"TABLE": "x"}}, "arn:key")
        if env == "kms"
        else d.environment_section(["TABLE"], None)
    )
    raw = d.build_document(
        source,
        identity,
        fingerprint="f",
        environment=environment,
        code={"package_type": "Zip", "packages": packages, "missing": {}},
        last_modified=None,
    )
    return d.Document.parse(json.loads(json.dumps(raw)))


VALUES = {"$LATEST": {"TABLE": "orders"}, "1": {"TABLE": "orders"}, "2": {"TABLE": "v2"}}


def plan(
    doc: d.Document | None = None,
    *,
    account: str = ACCOUNT,
    region: str = REGION,
    name: str = "orders",
    current: p.Current | None = None,
    drops: tuple[str, ...] = (),
    env_values: Any = VALUES,
    **kw: Any,
) -> p.Plan:
    return p.build_plan(
        p.RestoreInputs(
            document=doc or document(),
            target=p.Target(account, region, name),
            current=current,
            drops=frozenset(drops),
            env_values=env_values,
            **kw,
        )
    )


def calls(result: p.Plan) -> list[tuple[str, dict[str, Any]]]:
    return [(c.method, dict(c.params)) for s in result.steps for c in s.calls]


def methods(result: p.Plan) -> list[str]:
    return [m for m, _ in calls(result)]


def test_create_order_and_version_mapping() -> None:
    result = plan()
    assert result.blocking == []
    assert methods(result) == [
        "create_function",  # with version 1's code and configuration
        "publish_version",  # -> new number for 1
        "update_function_code",  # version 2's code
        "update_function_configuration",  # version 2's environment value differs
        "publish_version",  # -> new number for 2
        "update_function_code",  # $LATEST's own code
        "update_function_configuration",
        "create_alias",
        "add_permission",
        "add_permission",
        "add_permission",
        "add_permission",  # the alias statement, after the alias exists
        "put_function_concurrency",
        "create_function_url_config",
        "create_function_url_config",
        "put_function_event_invoke_config",
        "put_function_event_invoke_config",
        "put_provisioned_concurrency_config",
        "create_event_source_mapping",  # last: it starts consuming
    ]
    (_method, create), *_ = calls(result)
    assert create["Code"] == {"ZipFile": p.Ref("code", CODE_1)}
    assert create["Publish"] is False
    assert create["LoggingConfig"] == {"LogFormat": "JSON", "LogGroup": "/custom/orders"}
    assert create["DeadLetterConfig"] == {"TargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"}
    assert create["Environment"] == {"Variables": {"TABLE": "orders"}}
    assert create["CodeSigningConfigArn"].endswith(":code-signing-config:c")
    assert create["Tags"] == {"team": "a"}  # aws: tags cannot be set
    assert any("aws: tags" in n for n in result.notes)
    publishes = [c.publishes for s in result.steps for c in s.calls if c.publishes]
    assert publishes == ["1", "2"]  # version 3 is referenced by nothing
    alias = next(params for m, params in calls(result) if m == "create_alias")
    assert alias["FunctionVersion"] == p.Ref("version", "1")
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {p.Ref("version", "2"): 0.25}}
    mapping = next(params for m, params in calls(result) if m == "create_event_source_mapping")
    assert mapping["FunctionName"] == p.Ref("function-version", "2")
    assert mapping["Enabled"] is True  # same place: as it was
    urls = [params for m, params in calls(result) if m == "create_function_url_config"]
    assert urls[1] == {
        "FunctionName": "orders",
        "AuthType": "NONE",
        "InvokeMode": "BUFFERED",
        "Qualifier": "live",
    }
    invoke = [params for m, params in calls(result) if m == "put_function_event_invoke_config"]
    assert invoke[1]["Qualifier"] == "live" and invoke[1]["MaximumEventAgeInSeconds"] == 600


def test_permissions_become_add_permission_parameters() -> None:
    result = plan()
    perms = {params["StatementId"]: params for m, params in calls(result) if m == "add_permission"}
    assert perms["sns"]["SourceArn"] == f"arn:aws:sns:{REGION}:{ACCOUNT}:t"
    assert perms["sns"]["Principal"] == "sns.amazonaws.com"
    assert perms["alexa"]["EventSourceToken"] == "amzn1.ask"
    assert perms["org"] == {
        "FunctionName": "orders",
        "StatementId": "org",
        "Action": "lambda:InvokeFunction",
        "Principal": "222222222222",
        "PrincipalOrgID": "o-abcdefghij",
    }
    assert perms["live-sns"]["Qualifier"] == "live"
    assert "odd" not in perms
    (warning,) = result.warnings
    assert (
        "statement odd cannot be recreated" in warning.message and "aws:SourceIp" in warning.message
    )


@pytest.mark.parametrize(
    ("st", "expected"),
    [
        (
            {
                "Sid": "u",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "lambda:InvokeFunctionUrl",
                "FunctionUrlAuthType": "NONE",
            },
            {
                "StatementId": "u",
                "Action": "lambda:InvokeFunctionUrl",
                "Principal": "*",
                "FunctionUrlAuthType": "NONE",
            },
        ),
        (
            {
                "Sid": "s",
                "Effect": "Allow",
                "Principal": {"Service": ["s3.amazonaws.com"]},
                "Action": ["lambda:InvokeFunction"],
                "Condition": {"StringEquals": {"AWS:SourceAccount": ["1"]}},
            },
            {
                "StatementId": "s",
                "Action": "lambda:InvokeFunction",
                "Principal": "s3.amazonaws.com",
                "SourceAccount": "1",
            },
        ),
    ],
)
def test_statement_params(st: dict[str, Any], expected: dict[str, Any]) -> None:
    assert p.statement_params(st) == (expected, None)


@pytest.mark.parametrize(
    ("st", "why"),
    [
        ({"Effect": "Allow"}, "no Sid"),
        ({"Sid": "x", "Effect": "Deny"}, "only creates Allow"),
        ({"Sid": "x", "Action": ["a", "b"]}, "several actions"),
        ({"Sid": "x", "Principal": {"AWS": ["1", "2"]}}, "several principals"),
        ({"Sid": "x", "Condition": {"ArnLike": {"AWS:SourceArn": ["a", "b"]}}}, "several values"),
    ],
)
def test_statements_addpermission_cannot_express(st: dict[str, Any], why: str) -> None:
    params, reason = p.statement_params(st)
    assert params is None and why in (reason or "")


def test_another_region_blocks_until_dropped() -> None:
    result = plan(account="333333333333", region="eu-west-1")
    parts_blocked = {(b.part, b.drop) for b in result.blocking}
    assert parts_blocked == {
        ("role", None),
        ("vpc", "vpc"),
        ("layers", "layers"),
        ("kms-key", "kms-key"),
        ("dead-letter", "dead-letter"),
        ("code-signing", "code-signing"),
        ("destinations", "destinations"),
        ("event-sources", "event-sources"),
    }
    allowed = plan(
        account="333333333333",
        region="eu-west-1",
        name="copy",
        role="arn:aws:iam::333333333333:role/r",
        drops=(
            "vpc",
            "layers",
            "kms-key",
            "dead-letter",
            "code-signing",
            "destinations",
            "event-sources",
        ),
    )
    assert allowed.blocking == []
    create = calls(allowed)[0][1]
    for dropped in ("VpcConfig", "Layers", "KMSKeyArn", "DeadLetterConfig", "CodeSigningConfigArn"):
        assert dropped not in create
    assert create["Role"] == "arn:aws:iam::333333333333:role/r"
    assert "create_event_source_mapping" not in methods(allowed)
    assert any("created disabled" in n for n in allowed.notes)


def test_triggers_are_created_disabled_elsewhere() -> None:
    result = plan(name="orders-copy")
    mapping = next(params for m, params in calls(result) if m == "create_event_source_mapping")
    assert mapping["Enabled"] is False


def test_environment_values_missing_or_unreadable() -> None:
    names_only = plan(document(env="omitted"), env_values=None)
    assert {b.part for b in names_only.blocking} == {"environment"}
    assert all(b.drop == "env-values" for b in names_only.blocking)
    assert "names only" in names_only.blocking[0].message
    empty = plan(document(env="omitted"), env_values=None, drops=("env-values",))
    assert empty.blocking == []
    assert calls(empty)[0][1]["Environment"] == {"Variables": {"TABLE": ""}}
    unreadable = parts(
        configuration={
            **config(CODE_LATEST),
            "Environment": {"Error": {"ErrorCode": "KMSAccessDeniedException"}},
        },
        versions=(),
        aliases=(),
        provisioned=(),
        event_source_mappings=(),
        invoke_configs=(),
        alias_policies={},
        alias_urls={},
    )
    result = plan(document(unreadable, env="omitted"), env_values=None)
    assert [(b.part, b.drop) for b in result.blocking] == [("environment", "environment")]
    assert "KMSAccessDeniedException" in result.blocking[0].message
    none = plan(document(unreadable, env="omitted"), env_values=None, drops=("environment",))
    assert none.blocking == [] and calls(none)[0][1]["Environment"] == {"Variables": {}}


def test_missing_or_large_packages() -> None:
    doc = document()
    raw = copy.deepcopy(dict(doc.raw))
    raw["code"]["packages"].pop(CODE_1)
    raw["code"]["missing"] = {CODE_1: "PackageTooLarge"}
    result = plan(d.Document.parse(raw))
    assert any(b.part == "code" and "PackageTooLarge" in b.message for b in result.blocking)
    big = {CODE_1: 60_000_000, CODE_2: 10, CODE_LATEST: 10}
    keys = {c: f"p/code/{c}.zip" for c in big}
    elsewhere = plan(package_sizes=big, bucket="b", bucket_region="eu-west-1", package_keys=keys)
    assert any("direct upload" in b.message for b in elsewhere.blocking)
    same = plan(package_sizes=big, bucket="b", bucket_region=REGION, package_keys=keys)
    assert same.blocking == []
    assert calls(same)[0][1]["Code"] == {"S3Bucket": "b", "S3Key": keys[CODE_1]}


def current_like(doc_parts: lc.FunctionParts, **changes: Any) -> p.Current:
    """A function that already is what the snapshot holds (versions 1 and 2 published as 1 and 2)."""
    live = copy.deepcopy(doc_parts)
    live = lc.FunctionParts(**{**live.__dict__, **changes})
    return p.Current(live)


def test_replace_changes_only_what_differs() -> None:
    source = parts()
    same = plan(current=current_like(source))
    # versions are reused by content, the alias and everything else already match
    assert same.version_map == {"1": "1", "2": "2"}
    assert same.steps == []
    # a different environment value alone is a change (compared in memory, never shown)
    values = {**VALUES, "$LATEST": {"TABLE": "other"}}
    (step,) = plan(current=current_like(source), env_values=values).steps
    assert step.what == "configuration of $LATEST (for $LATEST)" and "other" not in step.detail
    drifted = current_like(
        source,
        configuration={
            **config(CODE_LATEST),
            "MemorySize": 1024,
            "Environment": {"Variables": {"TABLE": "orders"}},
        },
        aliases=(*source.aliases, {"Name": "extra", "FunctionVersion": "1"}),
        tags={"team": "b", "owner": "x"},
        reserved_concurrency=None,
        event_source_mappings=(
            {**source.event_source_mappings[0], "BatchSize": 1},
            {
                "UUID": "u9",
                "EventSourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:other",
                "FunctionArn": ARN,
                "State": "Enabled",
            },
        ),
    )
    result = plan(current=drifted)
    assert [(s.action, s.what) for s in result.steps] == [
        ("update", "configuration of $LATEST (for $LATEST)"),
        ("delete", "alias extra"),
        ("create", "reserved concurrency"),
        ("update", "tags"),
        ("delete", "tags"),
        ("update", f"event source mapping u1 from arn:aws:sqs:{REGION}:{ACCOUNT}:in"),
        ("delete", f"event source mapping u9 from arn:aws:sqs:{REGION}:{ACCOUNT}:other"),
    ]
    update = next(params for m, params in calls(result) if m == "update_function_configuration")
    assert update["MemorySize"] == 512


def test_orphaned_triggers_of_a_deleted_function_are_reused() -> None:
    orphan = {
        "UUID": "u1",
        "EventSourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:in",
        "FunctionArn": ARN + ":2",
        "BatchSize": 10,
        "State": "Enabled",
    }
    result = plan(orphan_mappings=(orphan,))
    assert "create_event_source_mapping" not in methods(result)
    update = next(params for m, params in calls(result) if m == "update_event_source_mapping")
    assert update["UUID"] == "u1" and update["FunctionName"] == p.Ref("function-version", "2")


def test_render_plan() -> None:
    result = plan(account="333333333333", region="eu-west-1")
    text = "\n".join(p.render_plan(result, snapshot="s3://b/x/", dry_run=True))
    assert "BLOCKING (vpc)" in text and "--drop vpc" in text
    assert "refused:" in text and "nothing was changed" in text
