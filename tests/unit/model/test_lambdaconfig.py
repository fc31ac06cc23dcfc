"""The normalised configuration and its fingerprints, on botocore's response shapes.

The collector (ListFunctions FunctionVersion=ALL, GetFunction, ...) and the export (GetFunction,
ListVersionsByFunction, ...) read the same function through different operations: their
fingerprints must agree, or every sweep would re-export. Every part a snapshot holds must change
the fingerprint; what changes by itself (state, allocation progress) must not.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from daemon.model import lambdaconfig as lc

ARN = "arn:aws:lambda:us-east-1:111111111111:function:orders"

# GetFunction's Configuration, as AWS returns it (with the fields ListFunctions leaves out)
GET_FUNCTION_CONFIG: dict[str, Any] = {
    "FunctionName": "orders",
    "FunctionArn": ARN,
    "Runtime": "python3.12",
    "Role": "arn:aws:iam::111111111111:role/orders",
    "Handler": "app.handler",
    "CodeSize": 1234,
    "Description": "",
    "Timeout": 30,
    "MemorySize": 512,
    "LastModified": "2025-05-01T10:00:00.000+0000",
    "CodeSha256": "u3WTiKMotyMEhqAvZV26QBdNwQnWMpN3GX4HagEp25g=",
    "Version": "$LATEST",
    "VpcConfig": {
        "SubnetIds": ["subnet-b", "subnet-a"],
        "SecurityGroupIds": ["sg-1"],
        "VpcId": "vpc-1",
        "Ipv6AllowedForDualStack": False,
    },
    "Environment": {"Variables": {"TABLE": "orders", "DB_PASSWORD": "hunter2-demo-password"}},
    "KMSKeyArn": "arn:aws:kms:us-east-1:111111111111:key/k",
    "TracingConfig": {"Mode": "Active"},
    "RevisionId": "8f2b6a1c-1111-2222-3333-444455556666",
    "Layers": [{"Arn": "arn:aws:lambda:us-east-1:111111111111:layer:common:3", "CodeSize": 10}],
    "State": "Active",
    "LastUpdateStatus": "Successful",
    "PackageType": "Zip",
    "Architectures": ["arm64"],
    "EphemeralStorage": {"Size": 512},
    "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
    "LoggingConfig": {"LogFormat": "JSON", "LogGroup": "/aws/lambda/orders"},
    "RuntimeVersionConfig": {"RuntimeVersionArn": "arn:aws:lambda:us-east-1::runtime:abc"},
    "DeadLetterConfig": {"TargetArn": "arn:aws:sqs:us-east-1:111111111111:dlq"},
}


def list_functions_entry() -> dict[str, Any]:
    """The same function in ListFunctions(FunctionVersion=ALL): a qualified ARN, no state fields."""
    entry = copy.deepcopy(GET_FUNCTION_CONFIG)
    entry["FunctionArn"] = ARN + ":$LATEST"
    for key in ("State", "LastUpdateStatus", "RuntimeVersionConfig"):
        entry.pop(key)
    return entry


def version(number: str, sha: str) -> dict[str, Any]:
    v = copy.deepcopy(GET_FUNCTION_CONFIG)
    v.update(Version=number, FunctionArn=f"{ARN}:{number}", CodeSha256=sha)
    return v


def parts(**changes: Any) -> lc.FunctionParts:
    base: dict[str, Any] = {
        "configuration": GET_FUNCTION_CONFIG,
        "versions": (version("1", "AAAA"),),
        "tags": {"team": "a"},
        "reserved_concurrency": 10,
        "policy": json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "b",
                        "Effect": "Allow",
                        "Principal": {"Service": "s3.amazonaws.com"},
                        "Action": "lambda:InvokeFunction",
                        "Resource": ARN,
                    },
                    {
                        "Sid": "a",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "lambda:InvokeFunctionUrl",
                        "Resource": ARN,
                    },
                ],
            }
        ),
        "aliases": (
            {"Name": "live", "FunctionVersion": "1", "Description": "", "RevisionId": "r1"},
        ),
        "url": {"AuthType": "AWS_IAM", "FunctionUrl": "https://x", "InvokeMode": "BUFFERED"},
        "invoke_config": {"MaximumRetryAttempts": 1, "LastModified": "2025-01-01"},
        "provisioned": (
            {
                "FunctionArn": ARN + ":live",
                "RequestedProvisionedConcurrentExecutions": 5,
                "AllocatedProvisionedConcurrentExecutions": 5,
                "Status": "READY",
            },
        ),
        "code_signing_config_arn": "arn:aws:lambda:us-east-1:111111111111:code-signing-config:c",
    }
    base.update(changes)
    return lc.FunctionParts(**base)


MAPPING = {
    "UUID": "u-1",
    "EventSourceArn": "arn:aws:sqs:us-east-1:111111111111:in",
    "FunctionArn": ARN + ":live",
    "BatchSize": 10,
    "State": "Enabled",
    "StateTransitionReason": "USER_INITIATED",
    "LastModified": "2025-01-01",
    "LastProcessingResult": "OK",
}


def test_configuration_is_normalised_without_values_or_state() -> None:
    out = lc.normalise_config(GET_FUNCTION_CONFIG)
    assert out["EnvironmentVariables"] == ["DB_PASSWORD", "TABLE"]
    assert "hunter2" not in json.dumps(out)
    for volatile in ("State", "LastUpdateStatus", "LastModified", "FunctionArn", "Version"):
        assert volatile not in out
    assert out["VpcConfig"] == {
        "SubnetIds": ["subnet-a", "subnet-b"],
        "SecurityGroupIds": ["sg-1"],
        "Ipv6AllowedForDualStack": False,
    }
    assert out["Layers"] == ["arn:aws:lambda:us-east-1:111111111111:layer:common:3"]
    assert out["SnapStart"] == {"ApplyOn": "None"}
    assert out["DeadLetterConfig"] == {"TargetArn": "arn:aws:sqs:us-east-1:111111111111:dlq"}
    assert out["LoggingConfig"]["LogFormat"] == "JSON"


def test_unreadable_environment_is_recorded_not_guessed() -> None:
    cfg = {
        **GET_FUNCTION_CONFIG,
        "Environment": {"Error": {"ErrorCode": "KMSAccessDeniedException", "Message": "x"}},
    }
    out = lc.normalise_config(cfg)
    assert "EnvironmentVariables" not in out
    assert out["EnvironmentError"] == "KMSAccessDeniedException"
    assert lc.env_names(cfg) is None


def test_collector_and_export_reads_agree() -> None:
    """ListFunctions' entry (collector) and GetFunction's configuration (export) of one function
    give the same fingerprint."""
    collector = parts(configuration=list_functions_entry())
    export = parts()
    assert lc.base_fingerprint(collector) == lc.base_fingerprint(export)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("configuration", {**GET_FUNCTION_CONFIG, "MemorySize": 1024}),
        ("configuration", {**GET_FUNCTION_CONFIG, "RevisionId": "another-revision"}),
        ("configuration", {**GET_FUNCTION_CONFIG, "CodeSha256": "bmV3IGNvZGU="}),
        ("configuration", {**GET_FUNCTION_CONFIG, "Environment": {"Variables": {"NEW": "x"}}}),
        ("configuration", {**GET_FUNCTION_CONFIG, "Layers": []}),
        ("versions", (version("1", "AAAA"), version("2", "BBBB"))),
        ("tags", {"team": "b"}),
        ("reserved_concurrency", None),
        ("policy", None),
        ("aliases", ({"Name": "live", "FunctionVersion": "2"},)),
        (
            "aliases",
            (
                {
                    "Name": "live",
                    "FunctionVersion": "1",
                    "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1}},
                },
            ),
        ),
        ("url", {"AuthType": "NONE"}),
        ("url", None),
        ("invoke_config", {"MaximumRetryAttempts": 2}),
        ("provisioned", ()),
        ("code_signing_config_arn", None),
    ],
)
def test_every_part_changes_the_fingerprint(field: str, change: Any) -> None:
    assert lc.base_fingerprint(parts(**{field: change})) != lc.base_fingerprint(parts())


@pytest.mark.parametrize(
    "change",
    [
        {"configuration": {**GET_FUNCTION_CONFIG, "State": "Pending", "LastUpdateStatus": "x"}},
        {"configuration": {**GET_FUNCTION_CONFIG, "LastModified": "2026-01-01T00:00:00.000+0000"}},
        # only a value changed: RevisionId changes with it in AWS (the RevisionId case above)
        {
            "configuration": {
                **GET_FUNCTION_CONFIG,
                "Environment": {"Variables": {"TABLE": "x", "DB_PASSWORD": "y"}},
            }
        },
        {
            "provisioned": (
                {
                    "FunctionArn": ARN + ":live",
                    "RequestedProvisionedConcurrentExecutions": 5,
                    "AllocatedProvisionedConcurrentExecutions": 0,
                    "Status": "IN_PROGRESS",
                },
            )
        },
        {"invoke_config": {"MaximumRetryAttempts": 1, "LastModified": "2026-02-02"}},
        {"aliases": ({"Name": "live", "FunctionVersion": "1", "RevisionId": "r2"},)},
    ],
)
def test_what_changes_by_itself_does_not(change: dict[str, Any]) -> None:
    assert lc.base_fingerprint(parts(**change)) == lc.base_fingerprint(parts())


def test_statement_order_does_not_matter() -> None:
    doc = json.loads(parts().policy or "")
    doc["Statement"].reverse()
    assert lc.base_fingerprint(parts(policy=json.dumps(doc))) == lc.base_fingerprint(parts())


def test_malformed_policy_still_changes_the_fingerprint() -> None:
    a = lc.base_fingerprint(parts(policy="{not json"))
    b = lc.base_fingerprint(parts(policy="{not json either"))
    assert a != b and a != lc.base_fingerprint(parts())


def test_event_source_mappings_fold_into_the_fingerprint() -> None:
    base = lc.base_fingerprint(parts())
    with_mapping = lc.fingerprint(base, [MAPPING], "orders")
    assert with_mapping != lc.fingerprint(base, [], "orders")
    # state transitions, results and identity are not configuration
    moving = {**MAPPING, "State": "Updating", "LastProcessingResult": "PROBLEM", "UUID": "u-2"}
    assert lc.fingerprint(base, [moving], "orders") == with_mapping
    disabled = {**MAPPING, "State": "Disabled"}
    assert lc.fingerprint(base, [disabled], "orders") != with_mapping
    resized = {**MAPPING, "BatchSize": 5}
    assert lc.fingerprint(base, [resized], "orders") != with_mapping


def test_mappings_of_a_function_by_name_and_qualifier() -> None:
    other = {**MAPPING, "FunctionArn": ARN.replace(":orders", ":orders-v2")}
    unqualified = {**MAPPING, "FunctionArn": ARN}
    assert lc.mappings_of([MAPPING, other, unqualified], "orders") == [MAPPING, unqualified]
    assert lc.normalise_mapping(MAPPING, "orders")["Qualifier"] == "live"
    assert lc.normalise_mapping(unqualified, "orders")["Qualifier"] == "$LATEST"


def test_qualifier_of() -> None:
    assert lc.qualifier_of(ARN, "orders") == "$LATEST"
    assert lc.qualifier_of(ARN + ":7", "orders") == "7"
    assert lc.qualifier_of(ARN + ":live", "orders") == "live"
    assert lc.qualifier_of("arn:aws:lambda:us-east-1:1:function:other", "orders") == "$LATEST"


def test_revision_covers_alias_level_attachments() -> None:
    base = parts()
    extra = parts(alias_policies={"live": base.policy}, alias_urls={"live": {"AuthType": "NONE"}})
    assert lc.base_fingerprint(extra) == lc.base_fingerprint(base)  # a sweep does not read them
    assert lc.revision(extra) != lc.revision(base)  # a snapshot holds them
    assert len(lc.revision(base)) == 16
