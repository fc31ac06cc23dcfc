"""Policy documents as AWS returns them: Lambda's JSON text, IAM's URL-encoded text or decoded
objects, and the many shorthand spellings the IAM grammar allows."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from daemon.model.iampolicy import (
    PolicyDocument,
    PolicyParseError,
    action_matches,
    allows,
    parse_policy,
    parse_statement,
    resource_matches,
)

FN_ARN = "arn:aws:lambda:us-east-1:111111111111:function:orders"

# Lambda GetPolicy "Policy" field: JSON text.
LAMBDA_POLICY_TEXT = json.dumps(
    {
        "Version": "2012-10-17",
        "Id": "default",
        "Statement": [
            {
                "Sid": "s3-invoke",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
                "Resource": FN_ARN,
                "Condition": {
                    "StringEquals": {"AWS:SourceAccount": "111111111111"},
                    "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::orders-uploads"},
                },
            }
        ],
    },
    separators=(",", ":"),
)


def doc(*statements: dict[str, Any]) -> PolicyDocument:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


# --- parsing -------------------------------------------------------------------------------------


def test_parse_lambda_policy_json_text() -> None:
    policy = parse_policy(LAMBDA_POLICY_TEXT)
    (st,) = policy.statements
    assert st.sid == "s3-invoke"
    assert st.allow
    assert st.service_principals == ("s3.amazonaws.com",)
    assert st.aws_principals == ()
    assert st.actions == ("lambda:InvokeFunction",)
    assert st.resources == (FN_ARN,)
    assert st.not_actions is None and st.not_resources is None
    # condition keys are case-insensitive: Lambda writes "AWS:SourceArn"
    assert st.condition_values("aws:sourcearn") == ("arn:aws:s3:::orders-uploads",)
    assert st.condition_values("aws:SourceAccount") == ("111111111111",)
    assert st.condition_values("aws:PrincipalOrgID") == ()
    assert not st.is_public


def test_parse_url_encoded_iam_document() -> None:
    """IAM GetPolicyVersion / GetRolePolicy return URL-encoded JSON (RFC 3986)."""
    raw = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::b/*"}
        ],
    }
    encoded = urllib.parse.quote(json.dumps(raw), safe="")
    assert encoded.startswith("%7B")
    assert parse_policy(encoded) == parse_policy(raw)
    assert parse_policy("%7b" + encoded[3:]) == parse_policy(raw)  # lower-case escapes too


def test_parse_decoded_dict_and_text_are_equal() -> None:
    assert parse_policy(json.loads(LAMBDA_POLICY_TEXT)) == parse_policy(LAMBDA_POLICY_TEXT)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_policy("\n  " + LAMBDA_POLICY_TEXT + "\n") == parse_policy(LAMBDA_POLICY_TEXT)


def test_single_statement_object() -> None:
    policy = parse_policy({"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*"}})
    assert len(policy.statements) == 1
    assert policy.statements[0].effect == "Deny"
    assert not policy.statements[0].allow


def test_action_string_and_list_are_equivalent() -> None:
    one = parse_statement({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
    many = parse_statement({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["*"]})
    assert one == many


def test_not_action_and_not_resource() -> None:
    st = parse_statement(
        {
            "Effect": "Allow",
            "NotAction": "iam:*",
            "NotResource": ["arn:aws:s3:::audit", "arn:aws:s3:::audit/*"],
        }
    )
    assert st.actions == ()
    assert st.not_actions == ("iam:*",)
    assert st.not_resources == ("arn:aws:s3:::audit", "arn:aws:s3:::audit/*")
    assert st.matches_action("s3:GetObject")
    assert not st.matches_action("iam:PassRole")
    assert st.matches_resource("arn:aws:s3:::data/key")
    assert not st.matches_resource("arn:aws:s3:::audit/2025/01/log")


def test_empty_not_action_list_is_kept_distinct_from_absent() -> None:
    st = parse_statement({"Effect": "Allow", "NotAction": [], "Resource": "*"})
    assert st.not_actions == ()
    assert st.matches_action("anything:AtAll")  # NotAction [] excludes nothing


@pytest.mark.parametrize(
    ("principal", "public"),
    [
        ("*", True),
        ({"AWS": "*"}, True),
        ({"AWS": ["arn:aws:iam::222222222222:root", "*"]}, True),
        ({"AWS": "222222222222"}, False),
        ({"Service": "sns.amazonaws.com"}, False),
        ({"Federated": "cognito-identity.amazonaws.com"}, False),
    ],
)
def test_principal_forms(principal: Any, public: bool) -> None:
    st = parse_statement(
        {"Effect": "Allow", "Principal": principal, "Action": "lambda:InvokeFunction"}
    )
    assert st.is_public is public
    assert st.principal_is_wildcard is (principal == "*")


def test_not_principal_counts_as_public() -> None:
    st = parse_statement(
        {
            "Effect": "Allow",
            "NotPrincipal": {"AWS": "arn:aws:iam::222222222222:root"},
            "Action": "*",
        }
    )
    assert st.has_not_principal and st.is_public


def test_all_principals_flattens_every_kind() -> None:
    st = parse_statement(
        {"Effect": "Allow", "Principal": {"AWS": ["a", "b"], "Service": "c"}, "Action": "*"}
    )
    assert sorted(st.all_principals()) == ["a", "b", "c"]


def test_numeric_and_boolean_condition_values_become_strings() -> None:
    st = parse_statement(
        {
            "Effect": "Allow",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "NumericLessThan": {"aws:MultiFactorAuthAge": 3600},
                "StringEquals": {"aws:SourceAccount": [111111111111, "222222222222"]},
            },
        }
    )
    assert st.condition_values("aws:MultiFactorAuthAge") == ("3600",)
    assert st.condition_values("aws:sourceaccount") == ("111111111111", "222222222222")


def test_condition_values_gather_every_operator() -> None:
    st = parse_statement(
        {
            "Effect": "Allow",
            "Action": "*",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": "111111111111"},
                "StringLike": {"AWS:SOURCEACCOUNT": "2222*"},
            },
        }
    )
    assert sorted(st.condition_values("aws:SourceAccount")) == ["111111111111", "2222*"]


@pytest.mark.parametrize(
    ("values", "restricting"),
    [
        (["o-a1b2c3"], True),
        (["*"], False),
        ([" * "], False),
        ([""], False),
        (["*", "o-a1b2c3"], True),
    ],
)
def test_has_restricting_condition(values: list[str], restricting: bool) -> None:
    st = parse_statement(
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "*",
            "Condition": {"StringLike": {"aws:PrincipalOrgID": values}},
        }
    )
    assert st.has_restricting_condition(["aws:PrincipalOrgID"]) is restricting
    assert not st.has_restricting_condition(["aws:SourceArn"])


# --- malformed documents -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"Statement": [', "not valid JSON"),
        ("", "not valid JSON"),
        ("%7B%22Statement", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('"just text"', "not a JSON object"),
        ('{"Version": "2012-10-17"}', "no Statement"),
        ('{"Statement": "Allow"}', "Statement must be an object or a list"),
        ('{"Statement": ["Allow"]}', "a Statement entry is not an object"),
        ('{"Statement": [null]}', "a Statement entry is not an object"),
        ('{"Statement": [{"Action": "*"}]}', "Effect must be Allow or Deny, not None"),
        ('{"Statement": [{"Effect": "allow", "Action": "*"}]}', "not 'allow'"),
        ('{"Statement": [{"Effect": "Allow", "Action": {"s3": "*"}}]}', "Action must be a string"),
        ('{"Statement": [{"Effect": "Allow", "Action": [["s3:*"]]}]}', "Action must be a string"),
        (
            '{"Statement": [{"Effect": "Allow", "Principal": "me", "Action": "*"}]}',
            "Principal must be",
        ),
        ('{"Statement": [{"Effect": "Allow", "Principal": {"AWS": {"x": 1}}}]}', "Principal.AWS"),
        ('{"Statement": [{"Effect": "Allow", "Condition": "yes"}]}', "Condition must be an object"),
        (
            '{"Statement": [{"Effect": "Allow", "Condition": {"Bool": true}}]}',
            "Condition.Bool must be",
        ),
        ('{"Statement": [{"Effect": "Allow", "NotResource": {"a": 1}}]}', "NotResource must be"),
    ],
)
def test_malformed_documents_raise_policy_parse_error(document: str, message: str) -> None:
    with pytest.raises(PolicyParseError, match=message) as info:
        parse_policy(document)
    assert isinstance(info.value, ValueError)


def test_non_text_non_object_is_rejected() -> None:
    with pytest.raises(PolicyParseError, match="neither JSON text nor an object"):
        parse_policy(b'{"Statement": []}')  # type: ignore[arg-type]


def test_empty_statement_list_is_a_policy_that_allows_nothing() -> None:
    policy = parse_policy('{"Statement": []}')
    assert policy.statements == ()
    assert not policy.allows("s3:GetObject", "arn:aws:s3:::b/k")


# --- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("s3:GetObject", "s3:GetObject", True),
        ("s3:getobject", "S3:GETOBJECT", True),
        ("S3:Get*", "s3:getObjectAcl", True),
        ("s3:*", "s3:PutObject", True),
        ("*", "iam:PassRole", True),
        ("s3:Get?bject", "s3:GetObject", True),
        ("s3:Get?bject", "s3:GetObbject", False),
        ("s3:Get*", "s3:PutObject", False),
        ("s3:GetObject", "s3:GetObjectAcl", False),  # whole-string match
        ("s3:*", "s3-object-lambda:GetObject", False),
        ("logs:[a]*", "logs:CreateLogStream", False),  # brackets are literal, not a class
        ("logs:[a]*", "logs:[A]ny", True),
    ],
)
def test_action_matches(pattern: str, action: str, expected: bool) -> None:
    assert action_matches(pattern, action) is expected


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("*", "arn:aws:s3:::anything", True),
        ("arn:aws:s3:::orders/*", "arn:aws:s3:::orders/2025/01/a.json", True),
        ("arn:aws:s3:::Orders/*", "arn:aws:s3:::orders/a", False),  # case-sensitive
        ("arn:aws:s3:::orders", "arn:aws:s3:::orders/a", False),
        (
            "arn:aws:logs:*:111111111111:log-group:/aws/lambda/*",
            "arn:aws:logs:us-east-1:111111111111:log-group:/aws/lambda/f:log-stream:x",
            True,
        ),
        ("arn:aws:s3:::bucket-?", "arn:aws:s3:::bucket-1", True),
        ("arn:aws:s3:::bucket-?", "arn:aws:s3:::bucket-10", False),
        ("arn:aws:s3:::[ab]", "arn:aws:s3:::a", False),
        ("arn:aws:s3:::[ab]", "arn:aws:s3:::[ab]", True),
        ("arn:aws:s3:::x]", "arn:aws:s3:::x]", True),
    ],
)
def test_resource_matches(pattern: str, resource: str, expected: bool) -> None:
    assert resource_matches(pattern, resource) is expected


# --- evaluation ----------------------------------------------------------------------------------

BUCKET = "arn:aws:s3:::orders"


def test_allows_needs_a_matching_allow() -> None:
    policy = doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{BUCKET}/*"})
    assert policy.allows("s3:GetObject", f"{BUCKET}/a")
    assert policy.allows("S3:GETOBJECT", f"{BUCKET}/a")
    assert not policy.allows("s3:PutObject", f"{BUCKET}/a")
    assert not policy.allows("s3:GetObject", "arn:aws:s3:::other/a")


def test_deny_overrides_allow_in_any_order() -> None:
    allow_st = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny_st = {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": f"{BUCKET}/*"}
    for policy in (doc(allow_st, deny_st), doc(deny_st, allow_st)):
        assert not policy.allows("s3:DeleteObject", f"{BUCKET}/a")
        assert policy.allows("s3:DeleteObject", "arn:aws:s3:::other/a")
        assert policy.allows("s3:GetObject", f"{BUCKET}/a")


def test_deny_in_one_document_overrides_allow_in_another() -> None:
    granting = doc({"Effect": "Allow", "Action": "*", "Resource": "*"})
    denying = doc({"Effect": "Deny", "Action": "iam:*", "Resource": "*"})
    assert not allows([granting, denying], "iam:PassRole", "*")
    assert not allows([denying, granting], "iam:PassRole", "*")
    assert allows([granting, denying], "s3:GetObject", "*")


def test_conditional_statements_are_read_generously() -> None:
    conditional_allow = {
        "Effect": "Allow",
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:ViaService": "lambda.us-east-1.amazonaws.com"}},
    }
    conditional_deny = {
        "Effect": "Deny",
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    assert doc(conditional_allow).allows("kms:Decrypt", "arn:aws:kms:us-east-1:1:key/k")
    assert doc(conditional_allow, conditional_deny).allows("kms:Decrypt", "k")


def test_not_action_allow_and_not_resource_deny() -> None:
    policy = doc(
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "NotResource": f"{BUCKET}/*"},
    )
    assert policy.allows("s3:GetObject", f"{BUCKET}/a")
    assert not policy.allows("s3:GetObject", "arn:aws:s3:::other/a")
    assert not policy.allows("iam:CreateUser", "*")


def test_no_documents_allow_nothing() -> None:
    assert not allows([], "s3:GetObject", "*")
