"""Every AWS Lambda control, called through the registry with real snapshots and parameters.

Inputs are the frozen dataclasses collectors build; policy documents are parsed from the JSON text
AWS returns (GetPolicy, GetLayerVersionPolicy) or the decoded documents IAM returns, so these tests
also cover shapes the moto-based integration tests cannot produce. Time is always injected.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from daemon.controls.reference import LAMBDA_RUNTIMES, build_reference
from daemon.controls.registry import EvalContext, Outcome, all_controls, get_control
from daemon.model import Status, Target, region_resource_id
from daemon.model import awslambda as m
from daemon.model.iampolicy import parse_policy

ACCOUNT = "111111111111"
OTHER_ACCOUNT = "222222222222"
REGION = "us-east-1"
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
TARGET = Target(ACCOUNT, REGION, "lambda")
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/orders-role"
FN_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders"
LOG_GROUP_ARN = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/orders:*"

# The document of the AWS-managed AWSLambdaBasicExecutionRole policy.
BASIC_EXECUTION = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        }
    ],
}


# --- builders ------------------------------------------------------------------------------------


def make_fn(name: str = "orders", **overrides: Any) -> m.LambdaFunction:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "name": name,
        "account_id": ACCOUNT,
        "region": REGION,
        "runtime": "python3.12",
        "package_type": "Zip",
        "handler": "app.handler",
        "role_arn": ROLE_ARN,
        "memory_mb": 256,
        "timeout_s": 30,
        "code_sha256": "n8bW1mFv0VMhpt0HlcVEOgSxm6kOzGk2Yx3mSr8bDYo=",
        "last_modified": NOW - dt.timedelta(days=3),
        "revision_id": "3c2a7a55-6c5e-4f4a-9c43-2b4a0f0f6a11",
        "log_group_name": f"/aws/lambda/{name}",
    }
    fields.update(overrides)
    return m.LambdaFunction(**fields)


def aws_managed(name: str, document: dict[str, Any]) -> m.ManagedPolicy:
    return m.ManagedPolicy(f"arn:aws:iam::aws:policy/{name}", name, parse_policy(document))


def customer_managed(name: str, document: dict[str, Any]) -> m.ManagedPolicy:
    return m.ManagedPolicy(f"arn:aws:iam::{ACCOUNT}:policy/{name}", name, parse_policy(document))


def inline(name: str, document: dict[str, Any] | str) -> m.InlinePolicy:
    return m.InlinePolicy(name, parse_policy(document))


def make_role(
    managed: tuple[m.ManagedPolicy, ...] = (), inline_: tuple[m.InlinePolicy, ...] = ()
) -> m.ExecutionRole:
    return m.ExecutionRole(ROLE_ARN, "orders-role", managed, inline_)


def allow(action: str | list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource, **extra}],
    }


def lambda_policy(*statements: dict[str, Any]) -> str:
    """A resource-based policy as Lambda's GetPolicy returns it: JSON text with an Id."""
    return json.dumps({"Version": "2012-10-17", "Id": "default", "Statement": list(statements)})


def invoke_statement(
    sid: str, principal: Any, condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    st: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": "lambda:InvokeFunction",
        "Resource": FN_ARN,
    }
    if condition is not None:
        st["Condition"] = condition
    return st


def make_region(**overrides: Any) -> m.RegionPosture:
    fields: dict[str, Any] = {
        "arn": region_resource_id(ACCOUNT, REGION),
        "account_id": ACCOUNT,
        "region": REGION,
    }
    fields.update(overrides)
    return m.RegionPosture(**fields)


def make_snapshot(
    functions: tuple[m.LambdaFunction, ...] = (),
    layers: tuple[m.LayerVersion, ...] = (),
    region: m.RegionPosture | None = None,
) -> m.LambdaSnapshot:
    return m.LambdaSnapshot(
        target=TARGET,
        collected_at=NOW,
        functions=functions,
        layer_versions=layers,
        region=region or make_region(),
    )


def run(
    control_id: str,
    resource: Any,
    params: dict[str, Any] | None = None,
    *,
    snapshot: m.LambdaSnapshot | None = None,
    now: dt.datetime = NOW,
    reference: Any = None,
) -> Outcome | None:
    """Evaluate one registered control on one resource, with validated parameters."""
    ctrl = get_control(control_id)
    p = ctrl.params_model.model_validate(params or {})
    if snapshot is None:
        if isinstance(resource, m.LambdaFunction):
            snapshot = make_snapshot(functions=(resource,))
        elif isinstance(resource, m.LayerVersion):
            snapshot = make_snapshot(layers=(resource,))
        else:
            snapshot = make_snapshot(region=resource)
    ctx = EvalContext(
        now=now,
        target=TARGET,
        snapshot=snapshot,
        reference=build_reference() if reference is None else reference,
    )
    return ctrl.evaluate(resource, p, ctx)


def assert_pass(outcome: Outcome | None, *fragments: str) -> None:
    assert outcome is not None, "expected a verdict, got not-applicable"
    assert outcome.status is Status.PASS, outcome.evidence
    for fragment in fragments:
        assert fragment in outcome.evidence


def assert_fail(outcome: Outcome | None, *fragments: str) -> None:
    assert outcome is not None, "expected a verdict, got not-applicable"
    assert outcome.status is Status.FAIL, outcome.evidence
    for fragment in fragments:
        assert fragment in outcome.evidence


def assert_error(outcome: Outcome | None, *fragments: str) -> None:
    assert outcome is not None, "expected a verdict, got not-applicable"
    assert outcome.status is Status.ERROR, outcome.evidence
    for fragment in fragments:
        assert fragment in outcome.evidence


TESTED_CONTROLS = {
    "lambda-role-least-privilege",
    "lambda-role-not-shared",
    "lambda-env-cmk-encryption",
    "lambda-env-no-plaintext-secrets",
    "lambda-vpc-attached",
    "lambda-vpc-multi-az",
    "lambda-logging",
    "lambda-timeout-memory-bounds",
    "lambda-layers-trusted",
    "lambda-layer-not-public",
    "lambda-published-alias",
    "lambda-resource-policy-restricted",
    "lambda-url-auth",
    "lambda-api-waf",
    "lambda-reserved-concurrency",
    "lambda-runtime-supported",
    "lambda-code-signing-enforced",
    "lambda-async-failure-capture",
    "lambda-xray-active",
    "lambda-config-recording",
    "lambda-cloudtrail-management-events",
}


def test_every_lambda_control_has_tests_here() -> None:
    # the concurrency controls (daemon/controls/concurrency.py) are tested in test_concurrency.py
    registered = {
        cid
        for cid, c in all_controls().items()
        if c.service == "lambda" and c.evaluate.__module__ == "daemon.controls.awslambda"
    }
    assert registered == TESTED_CONTROLS


# --- 1. role least privilege ---------------------------------------------------------------------


class TestRoleLeastPrivilege:
    CID = "lambda-role-least-privilege"

    def test_basic_execution_role_passes(self) -> None:
        role = make_role((aws_managed("AWSLambdaBasicExecutionRole", BASIC_EXECUTION),))
        assert_pass(run(self.CID, make_fn(role=role)), "orders-role")

    def test_scoped_customer_policy_passes(self) -> None:
        doc = allow(
            ["dynamodb:GetItem", "dynamodb:PutItem"],
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/orders",
        )
        role = make_role(inline_=(inline("orders-table", doc),))
        assert_pass(run(self.CID, make_fn(role=role)))

    @pytest.mark.parametrize(
        "name",
        ["AdministratorAccess", "PowerUserAccess", "AmazonS3FullAccess", "AWSLambda_FullAccess"],
    )
    def test_denied_aws_managed_policy_fails(self, name: str) -> None:
        # A harmless document: only the managed-policy name rule can fail it.
        role = make_role((aws_managed(name, allow("logs:PutLogEvents")),))
        assert_fail(run(self.CID, make_fn(role=role)), f"AWS-managed policy {name} attached")

    def test_customer_policy_with_a_denied_name_is_judged_by_its_document(self) -> None:
        role = make_role((customer_managed("AdministratorAccess", allow("logs:PutLogEvents")),))
        assert_pass(run(self.CID, make_fn(role=role)))

    def test_real_administrator_access_reports_name_and_wildcard(self) -> None:
        role = make_role((aws_managed("AdministratorAccess", allow("*")),))
        outcome = run(self.CID, make_fn(role=role))
        assert_fail(
            outcome,
            "AWS-managed policy AdministratorAccess attached",
            "AdministratorAccess: Action '*'",
        )

    def test_allowed_managed_policies_lifts_the_name_rule(self) -> None:
        doc = allow(["xray:*"])  # the document of AWSXrayFullAccess, reduced
        role = make_role((aws_managed("AWSXrayFullAccess", doc),))
        fn = make_fn(role=role)
        outcome = run(self.CID, fn, {"allowed_managed_policies": ["AWSXray*"]})
        # the name is accepted, the document is still read
        assert_fail(outcome, "'xray:*' on Resource '*'")
        assert outcome is not None and "attached" not in outcome.evidence
        both = {
            "allowed_managed_policies": ["AWSXray*"],
            "allow_service_wildcard_actions": ["XRay"],
        }
        assert_pass(run(self.CID, fn, both))

    def test_denied_managed_policies_parameter_replaces_the_default(self) -> None:
        role = make_role((aws_managed("AmazonS3ReadOnlyAccess", allow(["s3:Get*", "s3:List*"])),))
        fn = make_fn(role=role)
        assert_pass(run(self.CID, fn))
        assert_fail(
            run(self.CID, fn, {"denied_managed_policies": ["*ReadOnlyAccess"]}),
            "AmazonS3ReadOnlyAccess",
        )

    def test_action_star_as_a_string_fails_even_on_one_resource(self) -> None:
        doc = allow("*", "arn:aws:s3:::orders-bucket")
        role = make_role(inline_=(inline("everything", doc),))
        assert_fail(run(self.CID, make_fn(role=role)), "inline everything: Action '*'")

    def test_service_wildcard_on_every_resource_fails(self) -> None:
        role = make_role(inline_=(inline("s3", allow("s3:*")),))
        assert_fail(run(self.CID, make_fn(role=role)), "inline s3: 's3:*' on Resource '*'")

    def test_service_wildcard_on_a_specific_bucket_passes(self) -> None:
        doc = allow("s3:*", ["arn:aws:s3:::orders-bucket", "arn:aws:s3:::orders-bucket/*"])
        role = make_role(inline_=(inline("s3", doc),))
        assert_pass(run(self.CID, make_fn(role=role)))

    def test_service_wildcard_with_not_resource_counts_as_everything(self) -> None:
        doc = {
            "Statement": {"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::audit"}
        }
        role = make_role(inline_=(inline("s3", doc),))
        assert_fail(run(self.CID, make_fn(role=role)), "'s3:*' on Resource '*'")

    def test_not_action_with_allow_fails(self) -> None:
        doc = {"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}
        role = make_role(inline_=(inline("all-but-iam", doc),))
        assert_fail(run(self.CID, make_fn(role=role)), "inline all-but-iam: Allow with NotAction")

    def test_wildcards_in_deny_statements_are_fine(self) -> None:
        doc = {
            "Statement": [
                {
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
                {"Effect": "Deny", "NotAction": "logs:*", "Resource": "*"},
            ]
        }
        role = make_role(inline_=(inline("guardrails", doc),))
        assert_pass(run(self.CID, make_fn(role=role)))

    def test_allow_service_wildcard_actions_is_case_insensitive(self) -> None:
        role = make_role(inline_=(inline("xray", allow("XRay:*")),))
        fn = make_fn(role=role)
        assert_fail(run(self.CID, fn), "XRay:*")
        assert_pass(run(self.CID, fn, {"allow_service_wildcard_actions": ["xray"]}))
        assert_fail(run(self.CID, fn, {"allow_service_wildcard_actions": ["s3"]}))

    def test_url_encoded_inline_document_is_read(self) -> None:
        """IAM's GetRolePolicy returns documents URL-encoded (RFC 3986)."""
        encoded = (
            "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%7B%22Effect%22%3A"
            "%22Allow%22%2C%22Action%22%3A%22*%22%2C%22Resource%22%3A%22*%22%7D%7D"
        )
        role = make_role(inline_=(inline("encoded", encoded),))
        assert_fail(run(self.CID, make_fn(role=role)), "inline encoded: Action '*'")

    def test_unreadable_policy_is_an_error_not_a_pass(self) -> None:
        """Malformed policy JSON (moto always stores valid documents)."""
        broken = m.InlinePolicy(
            "broken", None, "policy document is not valid JSON: Expecting value"
        )
        role = make_role((aws_managed("AWSLambdaBasicExecutionRole", BASIC_EXECUTION),), (broken,))
        assert_error(run(self.CID, make_fn(role=role)), "could not read policies broken")

    def test_a_readable_violation_wins_over_an_unreadable_policy(self) -> None:
        broken = m.ManagedPolicy(f"arn:aws:iam::{ACCOUNT}:policy/broken", "broken", None, "bad")
        role = make_role((broken,), (inline("star", allow("*")),))
        assert_fail(run(self.CID, make_fn(role=role)), "Action '*'")

    def test_missing_role_grants_nothing(self) -> None:
        outcome = run(self.CID, make_fn(role=None))
        assert_pass(outcome, ROLE_ARN, "does not exist")

    def test_many_problems_are_shortened(self) -> None:
        doc = allow(["s3:*", "sqs:*", "sns:*", "kms:*", "dynamodb:*"])
        role = make_role(inline_=(inline("wide", doc),))
        assert_fail(run(self.CID, make_fn(role=role)), "(+2 more)")


class TestRoleNotShared:
    CID = "lambda-role-not-shared"

    def _functions(self, sharing: int) -> tuple[m.LambdaFunction, ...]:
        shared = tuple(make_fn(f"fn-{i}") for i in range(sharing))
        own = make_fn("loner", role_arn=f"arn:aws:iam::{ACCOUNT}:role/loner-role")
        return (*shared, own)

    def test_role_used_by_few_functions_passes(self) -> None:
        fns = self._functions(5)
        assert_pass(run(self.CID, fns[0], snapshot=make_snapshot(fns)), "used by 5 function(s)")

    def test_role_used_by_too_many_functions_fails(self) -> None:
        fns = self._functions(6)
        assert_fail(
            run(self.CID, fns[0], snapshot=make_snapshot(fns)),
            ROLE_ARN,
            "used by 6 functions (max 5)",
        )

    def test_counts_only_functions_with_the_same_role(self) -> None:
        fns = self._functions(6)
        assert_pass(run(self.CID, fns[-1], snapshot=make_snapshot(fns)), "used by 1 function(s)")

    def test_max_functions_per_role_parameter(self) -> None:
        fns = self._functions(2)
        snap = make_snapshot(fns)
        assert_pass(run(self.CID, fns[0], {"max_functions_per_role": 2}, snapshot=snap))
        assert_fail(run(self.CID, fns[0], {"max_functions_per_role": 1}, snapshot=snap), "(max 1)")

    def test_the_count_follows_the_snapshots_functions_when_it_is_rebuilt(self) -> None:
        """The snapshot counts each role's functions once (`functions_with_role`), not once per
        function; a copy with other functions (the export's `replace`) counts them again."""
        fns = self._functions(6)
        snap = make_snapshot(fns)
        assert [snap.functions_with_role(f.role_arn) for f in fns] == [6] * 6 + [1]
        assert snap.functions_with_role(f"arn:aws:iam::{ACCOUNT}:role/unused") == 0
        fewer = dataclasses.replace(snap, functions=fns[:5])
        assert_pass(run(self.CID, fns[0], snapshot=fewer), "used by 5 function(s)")
        assert_fail(run(self.CID, fns[0], snapshot=snap), "used by 6 functions (max 5)")


# --- 2. environment encryption -------------------------------------------------------------------

KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


class TestEnvCmk:
    CID = "lambda-env-cmk-encryption"

    def test_no_environment_is_not_applicable(self) -> None:
        assert run(self.CID, make_fn()) is None

    def test_environment_with_aws_managed_key_fails(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("STAGE"), m.EnvVar("TABLE_NAME")))
        assert_fail(run(self.CID, fn), "2 environment variable(s) use the AWS-managed key")

    def test_customer_managed_key_passes(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("STAGE"),), env_kms_key_arn=KEY_ARN)
        assert_pass(run(self.CID, fn), KEY_ARN)

    def test_allowed_key_arns(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("STAGE"),), env_kms_key_arn=KEY_ARN)
        assert_pass(run(self.CID, fn, {"allowed_key_arns": [f"arn:aws:kms:*:{ACCOUNT}:key/*"]}))
        outcome = run(self.CID, fn, {"allowed_key_arns": [f"arn:aws:kms:*:{OTHER_ACCOUNT}:key/*"]})
        assert_fail(outcome, KEY_ARN, "not an allowed key")

    def test_key_without_variables_is_still_checked(self) -> None:
        """Environment `Error` from KMS-denied decryption (moto never returns it): the collector
        keeps no variables, but the configured key is still known and judged."""
        fn = make_fn(env_kms_key_arn=KEY_ARN, errors={m.ASPECT_ENV: "AccessDeniedException"})
        assert_pass(run(self.CID, fn), KEY_ARN)
        assert_fail(run(self.CID, fn, {"allowed_key_arns": ["arn:aws:kms:*:*:alias/approved"]}))


# --- 3. plaintext secrets ------------------------------------------------------------------------


class TestEnvNoPlaintextSecrets:
    CID = "lambda-env-no-plaintext-secrets"

    def test_innocent_environment_passes(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("STAGE"), m.EnvVar("TABLE_NAME"), m.EnvVar("LOG_LEVEL")))
        assert_pass(run(self.CID, fn), "3 variable(s) checked")

    def test_no_variables_passes(self) -> None:
        assert_pass(run(self.CID, make_fn()), "0 variable(s)")

    @pytest.mark.parametrize(
        "name",
        [
            "DB_PASSWORD",
            "db_passwd",
            "ADMIN_PASS",
            "CLIENT_SECRET",
            "GITHUB_TOKEN",
            "STRIPE_API_KEY",
            "apiKey",
            "PRIVATE_KEY",
            "SERVICE_CREDENTIALS",
            "AUTH",
            "BASIC_AUTH_HEADER",
        ],
    )
    def test_secret_like_names_with_a_literal_value_fail(self, name: str) -> None:
        fn = make_fn(env_vars=(m.EnvVar("STAGE"), m.EnvVar(name)))
        assert_fail(run(self.CID, fn), f"{name} (name suggests a secret)")

    @pytest.mark.parametrize(
        "name",
        [
            "DB_PASSWORD_SECRET_ARN",
            "API_KEY_PARAMETER",
            "TOKEN_TTL",
            "SECRET_NAME",
            "CLIENT_SECRET_ID",
            "db_password_path",
            "AUTHOR",
            "OAUTH_REGION",
        ],
    )
    def test_names_that_refer_to_a_secret_pass(self, name: str) -> None:
        assert_pass(run(self.CID, make_fn(env_vars=(m.EnvVar(name),))))

    def test_empty_value_is_not_a_secret(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("DB_PASSWORD", has_value=False),))
        assert_pass(run(self.CID, fn))

    def test_reference_to_secrets_manager_is_not_a_secret(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("DB_PASSWORD", is_reference=True),))
        assert_pass(run(self.CID, fn))

    def test_access_key_value_under_an_innocent_name_fails(self) -> None:
        # What the collector keeps for "AKIAIOSFODNN7EXAMPLE" (AKIA + 16 characters).
        fn = make_fn(env_vars=(m.EnvVar("UPSTREAM", value_kinds=frozenset({"aws_access_key_id"})),))
        assert_fail(run(self.CID, fn), "UPSTREAM (value looks like aws_access_key_id)")

    def test_several_detectors_are_listed_sorted(self) -> None:
        kinds = frozenset({"url_credentials", "high_entropy"})
        fn = make_fn(env_vars=(m.EnvVar("DATABASE_URL", value_kinds=kinds),))
        assert_fail(run(self.CID, fn), "DATABASE_URL (value looks like url_credentials)")
        strict = {"value_detectors": ["high_entropy", "url_credentials"]}
        assert_fail(run(self.CID, fn, strict), "value looks like high_entropy/url_credentials")

    def test_high_entropy_counts_only_when_enabled(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("BUILD_NONCE", value_kinds=frozenset({"high_entropy"})),))
        assert_pass(run(self.CID, fn))
        assert_fail(run(self.CID, fn, {"value_detectors": ["high_entropy"]}), "BUILD_NONCE")

    def test_a_detected_value_fails_even_under_an_ignored_suffix(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("KEY_ID", value_kinds=frozenset({"aws_access_key_id"})),))
        assert_fail(run(self.CID, fn), "KEY_ID (value looks like aws_access_key_id)")

    def test_name_patterns_and_suffix_parameters(self) -> None:
        fn = make_fn(env_vars=(m.EnvVar("PIN_CODE"), m.EnvVar("DB_PASSWORD_REF")))
        assert_fail(run(self.CID, fn), "DB_PASSWORD_REF")
        custom = {"name_patterns": [r"(?i)^pin"], "ignore_name_suffixes": ["_ref"]}
        assert_fail(run(self.CID, fn, custom), "PIN_CODE (name suggests a secret)")
        outcome = run(self.CID, fn, custom)
        assert outcome is not None and "DB_PASSWORD_REF" not in outcome.evidence

    def test_many_hits_are_shortened(self) -> None:
        fn = make_fn(env_vars=tuple(m.EnvVar(f"SECRET_{i}") for i in range(5)))
        assert_fail(run(self.CID, fn), "SECRET_0", "(+2 more)")


# --- 4. VPC --------------------------------------------------------------------------------------


class TestVpc:
    def test_attached(self) -> None:
        fn = make_fn(vpc_subnet_ids=("subnet-0a1", "subnet-0b2"), vpc_security_group_ids=("sg-01",))
        assert_pass(run("lambda-vpc-attached", fn), "in 2 subnet(s)")

    def test_not_attached(self) -> None:
        assert_fail(run("lambda-vpc-attached", make_fn()), "not attached to a VPC")

    def test_multi_az_not_applicable_outside_a_vpc(self) -> None:
        assert run("lambda-vpc-multi-az", make_fn()) is None

    def test_multi_az_passes_with_two_zones(self) -> None:
        fn = make_fn(
            vpc_subnet_ids=("subnet-0a1", "subnet-0b2"),
            vpc_azs=frozenset({"us-east-1a", "us-east-1b"}),
        )
        assert_pass(run("lambda-vpc-multi-az", fn), "span 2 AZs")

    def test_multi_az_fails_with_one_zone(self) -> None:
        fn = make_fn(vpc_subnet_ids=("subnet-0a1", "subnet-0a2"), vpc_azs=frozenset({"us-east-1a"}))
        assert_fail(run("lambda-vpc-multi-az", fn), "1 AZ(s)", "us-east-1a", "need 2")

    def test_multi_az_minimum_parameter(self) -> None:
        fn = make_fn(
            vpc_subnet_ids=("subnet-0a1", "subnet-0b2"),
            vpc_azs=frozenset({"us-east-1a", "us-east-1b"}),
        )
        assert_fail(run("lambda-vpc-multi-az", fn, {"min_availability_zones": 3}), "need 3")

    def test_multi_az_unresolved_subnets_is_an_error(self) -> None:
        fn = make_fn(vpc_subnet_ids=("subnet-0a1",), vpc_azs=None)
        assert_error(run("lambda-vpc-multi-az", fn), "could not be resolved")


# --- 5. logging ----------------------------------------------------------------------------------


def logged_fn(role: m.ExecutionRole | None, **overrides: Any) -> m.LambdaFunction:
    group = m.LogGroup("/aws/lambda/orders", LOG_GROUP_ARN, retention_days=30)
    return make_fn(role=role, log_group=group, **overrides)


class TestLogging:
    CID = "lambda-logging"

    def test_basic_execution_role_and_group_pass(self) -> None:
        role = make_role((aws_managed("AWSLambdaBasicExecutionRole", BASIC_EXECUTION),))
        assert_pass(run(self.CID, logged_fn(role)), "/aws/lambda/orders")

    def test_missing_log_group_fails(self) -> None:
        role = make_role((aws_managed("AWSLambdaBasicExecutionRole", BASIC_EXECUTION),))
        assert_fail(
            run(self.CID, make_fn(role=role)), "log group /aws/lambda/orders does not exist"
        )

    def test_custom_log_group_from_logging_config(self) -> None:
        """Custom LoggingConfig log group (moto does not return LoggingConfig.LogGroup)."""
        arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/org/payments/orders:*"
        scoped = allow(["logs:CreateLogStream", "logs:PutLogEvents"], arn)
        role = make_role(inline_=(inline("logs", scoped),))
        group = m.LogGroup("/org/payments/orders", arn, retention_days=365)
        fn = make_fn(role=role, log_group_name="/org/payments/orders", log_group=group)
        assert_pass(run(self.CID, fn), "/org/payments/orders")
        missing = make_fn(role=role, log_group_name="/org/payments/orders", log_group=None)
        assert_fail(run(self.CID, missing), "log group /org/payments/orders does not exist")

    def test_role_lacking_put_log_events_fails(self) -> None:
        role = make_role(inline_=(inline("logs", allow("logs:CreateLogStream", LOG_GROUP_ARN)),))
        outcome = run(self.CID, logged_fn(role))
        assert_fail(outcome, "may not logs:PutLogEvents on /aws/lambda/orders")
        assert outcome is not None and "CreateLogStream" not in outcome.evidence

    def test_role_without_any_log_permission_names_both_actions(self) -> None:
        role = make_role(inline_=(inline("table", allow("dynamodb:GetItem")),))
        assert_fail(run(self.CID, logged_fn(role)), "logs:CreateLogStream, logs:PutLogEvents")

    def test_wildcard_resource_on_the_group_prefix_allows(self) -> None:
        prefix = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/*"
        role = make_role(inline_=(inline("logs", allow("logs:*", prefix)),))
        assert_pass(run(self.CID, logged_fn(role)))

    def test_permission_on_another_group_does_not_allow(self) -> None:
        other = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/billing:*"
        role = make_role(
            inline_=(inline("logs", allow(["logs:CreateLogStream", "logs:PutLogEvents"], other)),)
        )
        assert_fail(run(self.CID, logged_fn(role)), "may not")

    def test_deny_in_the_same_document_overrides_the_allow(self) -> None:
        doc = {
            "Statement": [
                *BASIC_EXECUTION["Statement"],
                {"Effect": "Deny", "Action": "logs:PutLogEvents", "Resource": "*"},
            ]
        }
        role = make_role(inline_=(inline("logs-then-deny", doc),))
        assert_fail(run(self.CID, logged_fn(role)), "may not logs:PutLogEvents")

    def test_deny_statement_overrides_the_allow(self) -> None:
        """An explicit Deny in one of the role's policies overrides an Allow in another, as IAM
        evaluates all identity policies of the role together."""
        deny = {"Statement": [{"Effect": "Deny", "Action": "logs:PutLogEvents", "Resource": "*"}]}
        role = make_role(
            (aws_managed("AWSLambdaBasicExecutionRole", BASIC_EXECUTION),),
            (inline("no-logs", deny),),
        )
        assert_fail(run(self.CID, logged_fn(role)), "may not logs:PutLogEvents")

    def test_conditional_deny_is_not_counted(self) -> None:
        deny = {
            "Statement": [
                {
                    "Effect": "Deny",
                    "Action": "logs:*",
                    "Resource": "*",
                    "Condition": {"StringNotEquals": {"aws:RequestedRegion": "eu-west-1"}},
                }
            ]
        }
        role = make_role(
            (aws_managed("AWSLambdaBasicExecutionRole", BASIC_EXECUTION),),
            (inline("region", deny),),
        )
        assert_pass(run(self.CID, logged_fn(role)))

    def test_missing_role_fails(self) -> None:
        assert_fail(run(self.CID, logged_fn(None)), f"execution role {ROLE_ARN} does not exist")

    def test_missing_permission_with_unreadable_policy_is_an_error(self) -> None:
        broken = m.ManagedPolicy(
            f"arn:aws:iam::{ACCOUNT}:policy/logging", "logging", None, "bad JSON"
        )
        role = make_role((broken,))
        assert_error(run(self.CID, logged_fn(role)), "could not read all policies")

    def test_unreadable_policy_does_not_matter_once_allowed(self) -> None:
        broken = m.ManagedPolicy(f"arn:aws:iam::{ACCOUNT}:policy/extra", "extra", None, "bad JSON")
        role = make_role((aws_managed("AWSLambdaBasicExecutionRole", BASIC_EXECUTION), broken))
        assert_pass(run(self.CID, logged_fn(role)))


# --- 6. timeout and memory -----------------------------------------------------------------------


class TestTimeoutMemory:
    CID = "lambda-timeout-memory-bounds"

    def test_within_defaults(self) -> None:
        assert_pass(
            run(self.CID, make_fn(timeout_s=30, memory_mb=256)), "timeout 30s, memory 256 MB"
        )

    @pytest.mark.parametrize(("timeout", "memory"), [(1, 128), (300, 4096)])
    def test_bounds_are_inclusive(self, timeout: int, memory: int) -> None:
        assert_pass(run(self.CID, make_fn(timeout_s=timeout, memory_mb=memory)))

    def test_timeout_too_long(self) -> None:
        assert_fail(run(self.CID, make_fn(timeout_s=900)), "timeout 900s outside [1, 300]")

    def test_memory_too_large(self) -> None:
        assert_fail(run(self.CID, make_fn(memory_mb=10240)), "memory 10240 MB outside [128, 4096]")

    def test_both_out_of_bounds_are_reported(self) -> None:
        outcome = run(self.CID, make_fn(timeout_s=600, memory_mb=8192))
        assert_fail(outcome, "timeout 600s", "; memory 8192 MB")

    def test_parameters_change_the_verdict(self) -> None:
        fn = make_fn(timeout_s=600, memory_mb=256)
        assert_pass(run(self.CID, fn, {"max_timeout_seconds": 900}))
        assert_fail(
            run(self.CID, make_fn(memory_mb=256), {"min_memory_mb": 512}), "outside [512, 4096]"
        )

    def test_unknown_values_are_errors_never_passes(self) -> None:
        assert_error(
            run(self.CID, make_fn(timeout_s=None, memory_mb=None)),
            "Timeout and MemorySize missing",
        )
        assert_error(run(self.CID, make_fn(memory_mb=None)), "MemorySize missing")


# --- 7. layers -----------------------------------------------------------------------------------


def layer_ref(account: str, name: str = "deps", version: int = 3) -> m.LayerRef:
    return m.LayerRef(
        f"arn:aws:lambda:{REGION}:{account}:layer:{name}:{version}", account, name, version
    )


class TestLayersTrusted:
    CID = "lambda-layers-trusted"
    # AWS's account for the Parameters and Secrets Lambda extension in us-east-1.
    AWS_EXTENSION_ACCOUNT = "177933569100"

    def test_no_layers_passes(self) -> None:
        assert_pass(run(self.CID, make_fn()), "0 layer(s)")

    def test_own_account_layer_passes(self) -> None:
        assert_pass(run(self.CID, make_fn(layers=(layer_ref(ACCOUNT),))), "1 layer(s)")

    def test_foreign_account_layer_fails(self) -> None:
        """Foreign-account layers (moto replaces them with layers of the function's account)."""
        foreign = layer_ref(OTHER_ACCOUNT, "tracing")
        outcome = run(self.CID, make_fn(layers=(layer_ref(ACCOUNT), foreign)))
        assert_fail(outcome, foreign.arn)
        assert outcome is not None and layer_ref(ACCOUNT).arn not in outcome.evidence

    def test_allowlisted_account_passes(self) -> None:
        """Foreign-account layers (moto replaces them with layers of the function's account)."""
        ext = layer_ref(
            self.AWS_EXTENSION_ACCOUNT, "AWS-Parameters-and-Secrets-Lambda-Extension", 11
        )
        fn = make_fn(layers=(ext,))
        assert_fail(run(self.CID, fn))
        assert_pass(run(self.CID, fn, {"trusted_accounts": [self.AWS_EXTENSION_ACCOUNT]}))


def make_layer(policy: str | None, version: int = 4) -> m.LayerVersion:
    return m.LayerVersion(
        arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:shared-utils:{version}",
        name="shared-utils",
        version=version,
        account_id=ACCOUNT,
        region=REGION,
        policy=parse_policy(policy) if policy is not None else None,
    )


def layer_statement(
    sid: str, principal: Any, condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    st: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": "lambda:GetLayerVersion",
        "Resource": f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:shared-utils:4",
    }
    if condition is not None:
        st["Condition"] = condition
    return st


class TestLayerNotPublic:
    CID = "lambda-layer-not-public"

    def test_no_policy_passes(self) -> None:
        assert_pass(run(self.CID, make_layer(None)), "no layer version policy")

    def test_public_statement_fails(self) -> None:
        policy = json.dumps(
            {
                "Version": "2012-10-17",
                "Id": "default",
                "Statement": [layer_statement("public", "*")],
            }
        )
        assert_fail(run(self.CID, make_layer(policy)), "statement(s) public")

    def test_public_statement_limited_to_the_organization_passes(self) -> None:
        cond = {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}
        policy = json.dumps(
            {"Version": "2012-10-17", "Statement": [layer_statement("org", "*", cond)]}
        )
        assert_pass(run(self.CID, make_layer(policy)), "named principals")

    def test_shared_with_one_account_passes(self) -> None:
        principal = {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}
        policy = json.dumps(
            {"Version": "2012-10-17", "Statement": [layer_statement("partner", principal)]}
        )
        assert_pass(run(self.CID, make_layer(policy)))

    def test_wildcard_org_condition_does_not_restrict(self) -> None:
        cond = {"StringLike": {"aws:PrincipalOrgID": "*"}}
        policy = json.dumps(
            {"Version": "2012-10-17", "Statement": [layer_statement("any-org", "*", cond)]}
        )
        assert_fail(run(self.CID, make_layer(policy)), "any-org")

    def test_statement_without_sid_is_named(self) -> None:
        st = layer_statement("", {"AWS": "*"})
        del st["Sid"]
        policy = json.dumps({"Version": "2012-10-17", "Statement": st})
        assert_fail(run(self.CID, make_layer(policy)), "(no sid)")


# --- 8. versions and aliases ---------------------------------------------------------------------


def version(v: str) -> m.PublishedVersion:
    return m.PublishedVersion(
        v, "n8bW1mFv0VMhpt0HlcVEOgSxm6kOzGk2Yx3mSr8bDYo=", NOW - dt.timedelta(days=1)
    )


class TestPublishedAlias:
    CID = "lambda-published-alias"

    def test_alias_to_published_version_passes(self) -> None:
        fn = make_fn(versions=(version("1"), version("2")), aliases=(m.Alias("live", "2"),))
        assert_pass(run(self.CID, fn), "alias 'live' -> version 2")

    def test_no_published_version_fails(self) -> None:
        fn = make_fn(aliases=(m.Alias("live", "$LATEST"),))
        assert_fail(run(self.CID, fn), "no published version")

    def test_missing_alias_fails_when_required(self) -> None:
        fn = make_fn(versions=(version("1"),), aliases=(m.Alias("staging", "1"),))
        assert_fail(run(self.CID, fn), "alias 'live' does not exist")

    def test_missing_alias_passes_when_not_required(self) -> None:
        fn = make_fn(versions=(version("1"),))
        assert_pass(run(self.CID, fn, {"require_alias": False}), "1 published version(s)")

    def test_alias_to_latest_fails(self) -> None:
        fn = make_fn(versions=(version("1"),), aliases=(m.Alias("live", "$LATEST"),))
        assert_fail(run(self.CID, fn), "points to $LATEST")

    def test_alias_to_missing_version_fails(self) -> None:
        fn = make_fn(versions=(version("1"),), aliases=(m.Alias("live", "7"),))
        assert_fail(run(self.CID, fn), "points to missing version 7")

    def test_alias_name_parameter(self) -> None:
        fn = make_fn(versions=(version("3"),), aliases=(m.Alias("prod", "3"),))
        assert_fail(run(self.CID, fn))
        assert_pass(run(self.CID, fn, {"alias": "prod"}), "alias 'prod' -> version 3")


# --- 9. resource-based policy --------------------------------------------------------------------


def fn_with_policy(*statements: dict[str, Any]) -> m.LambdaFunction:
    return make_fn(policy=parse_policy(lambda_policy(*statements)))


class TestResourcePolicy:
    CID = "lambda-resource-policy-restricted"

    def test_no_policy_passes(self) -> None:
        assert_pass(run(self.CID, make_fn()), "no resource-based policy")

    def test_service_principal_with_source_arn_passes(self) -> None:
        cond = {"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::orders-uploads"}}
        fn = fn_with_policy(invoke_statement("s3-invoke", {"Service": "s3.amazonaws.com"}, cond))
        assert_pass(run(self.CID, fn), "1 statement(s), all scoped")

    def test_service_principal_with_source_account_passes(self) -> None:
        cond = {"StringEquals": {"AWS:SourceAccount": ACCOUNT}}
        fn = fn_with_policy(invoke_statement("sns", {"Service": "sns.amazonaws.com"}, cond))
        assert_pass(run(self.CID, fn))

    def test_service_principal_without_source_fails(self) -> None:
        fn = fn_with_policy(invoke_statement("events", {"Service": "events.amazonaws.com"}))
        assert_fail(
            run(self.CID, fn), "events: events.amazonaws.com without aws:SourceArn/SourceAccount"
        )

    def test_service_principal_with_wildcard_source_fails(self) -> None:
        cond = {"ArnLike": {"AWS:SourceArn": "*"}}
        fn = fn_with_policy(invoke_statement("s3", {"Service": "s3.amazonaws.com"}, cond))
        assert_fail(run(self.CID, fn), "s3.amazonaws.com without")

    @pytest.mark.parametrize("principal", ["*", {"AWS": "*"}, {"AWS": ["*"]}])
    def test_public_principal_fails(self, principal: Any) -> None:
        """Principal forms AWS accepts but moto never produces ({"AWS": "*"}, a list)."""
        fn = fn_with_policy(invoke_statement("open", principal))
        assert_fail(run(self.CID, fn), "open: public principal without a restricting condition")

    def test_not_principal_is_public(self) -> None:
        """Principal forms AWS accepts but moto never produces (NotPrincipal)."""
        st = invoke_statement("all-but-one", None)
        del st["Principal"]
        st["NotPrincipal"] = {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}
        assert_fail(run(self.CID, fn_with_policy(st)), "all-but-one: public principal")

    def test_public_principal_with_org_condition_passes(self) -> None:
        cond = {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}
        assert_pass(run(self.CID, fn_with_policy(invoke_statement("org", "*", cond))))

    def test_condition_with_a_wildcard_value_does_not_restrict(self) -> None:
        cond = {"StringLike": {"aws:PrincipalOrgID": "*"}}
        fn = fn_with_policy(invoke_statement("fake-scope", "*", cond))
        assert_fail(run(self.CID, fn), "fake-scope: public principal")

    def test_condition_on_an_unrelated_key_does_not_restrict(self) -> None:
        cond = {"Bool": {"aws:SecureTransport": "true"}}
        assert_fail(
            run(self.CID, fn_with_policy(invoke_statement("tls-only", "*", cond))), "tls-only"
        )

    @pytest.mark.parametrize(
        "condition",
        [
            pytest.param(
                {"StringNotEquals": {"aws:PrincipalAccount": OTHER_ACCOUNT}}, id="negated-operator"
            ),
            pytest.param({"Null": {"aws:PrincipalOrgID": "false"}}, id="null-operator"),
            pytest.param(
                {"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}},
                id="if-exists-operator",
            ),
        ],
    )
    def test_conditions_that_do_not_narrow_the_principal_do_not_restrict(
        self, condition: dict[str, Any]
    ) -> None:
        """Principal "*" with a condition that names a restricting key but does not narrow it:
        StringNotEquals admits every account but one, Null only asks the key to exist (any
        organization), ...IfExists is true for every caller without the key (any account outside
        an organization). Each leaves the function invocable by essentially any AWS account."""
        fn = fn_with_policy(invoke_statement("looks-scoped", "*", condition))
        assert_fail(run(self.CID, fn), "looks-scoped: public principal")

    def test_function_url_statement_is_left_to_url_auth(self) -> None:
        st = {
            "Sid": "FunctionURLAllowPublicAccess",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "lambda:InvokeFunctionUrl",
            "Resource": FN_ARN,
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
        }
        assert_pass(run(self.CID, fn_with_policy(st)))

    def test_function_url_invoke_statement_is_left_to_url_auth(self) -> None:
        """Since October 2025 a public function URL also needs lambda:InvokeFunction for "*",
        limited with {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}} (AddPermission
        --invoked-via-function-url; moto does not produce it). That statement only admits calls
        through the URL, which lambda-url-auth judges, like the InvokeFunctionUrl statement."""
        url = {
            "Sid": "FunctionURLAllowPublicAccess",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "lambda:InvokeFunctionUrl",
            "Resource": FN_ARN,
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
        }
        invoke = invoke_statement(
            "FunctionURLAllowInvokeAction", "*", {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
        )
        assert_pass(run(self.CID, fn_with_policy(url, invoke)))

    def test_url_statement_does_not_hide_other_actions(self) -> None:
        st = {
            "Sid": "url-and-more",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["lambda:InvokeFunctionUrl", "lambda:InvokeFunction"],
            "Resource": FN_ARN,
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
        }
        assert_fail(run(self.CID, fn_with_policy(st)), "url-and-more: public principal")

    def test_deny_statements_are_ignored(self) -> None:
        st = invoke_statement("deny-all", "*")
        st["Effect"] = "Deny"
        assert_pass(run(self.CID, fn_with_policy(st)))

    def test_cross_account_principal_and_allowed_accounts(self) -> None:
        st = invoke_statement("partner", {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"})
        fn = fn_with_policy(st)
        assert_pass(run(self.CID, fn))  # no allowlist: named accounts are fine
        assert_fail(
            run(self.CID, fn, {"allowed_accounts": []}),
            f"partner: account(s) {OTHER_ACCOUNT} not allowed",
        )
        assert_pass(run(self.CID, fn, {"allowed_accounts": [OTHER_ACCOUNT]}))

    def test_allowed_accounts_always_include_the_own_account_and_bare_ids(self) -> None:
        own = invoke_statement("self", {"AWS": f"arn:aws:iam::{ACCOUNT}:role/invoker"})
        bare = invoke_statement("bare", {"AWS": "333333333333"})
        outcome = run(self.CID, fn_with_policy(own, bare), {"allowed_accounts": [OTHER_ACCOUNT]})
        assert_fail(outcome, "bare: account(s) 333333333333 not allowed")
        assert outcome is not None and "self" not in outcome.evidence

    def test_every_problem_is_reported(self) -> None:
        fn = fn_with_policy(
            invoke_statement("open", "*"),
            invoke_statement("events", {"Service": "events.amazonaws.com"}),
        )
        assert_fail(run(self.CID, fn), "open: public principal", "events: events.amazonaws.com")


# --- 10. function URL ----------------------------------------------------------------------------


class TestUrlAuth:
    CID = "lambda-url-auth"

    def test_no_url_passes(self) -> None:
        assert_pass(run(self.CID, make_fn()), "no function URL")

    def test_iam_auth_passes(self) -> None:
        assert_pass(run(self.CID, make_fn(url_auth_type="AWS_IAM")), "AuthType AWS_IAM")

    def test_public_url_fails(self) -> None:
        assert_fail(run(self.CID, make_fn(url_auth_type="NONE")), "AuthType NONE (public)")


# --- 11. WAF -------------------------------------------------------------------------------------

WEB_ACL = (
    f"arn:aws:wafv2:{REGION}:{ACCOUNT}:regional/webacl/api-acl/0b5a1c2d-3e4f-5a6b-7c8d-9e0f1a2b3c4d"
)


class TestApiWaf:
    CID = "lambda-api-waf"

    def test_not_web_triggered_is_not_applicable(self) -> None:
        assert run(self.CID, make_fn()) is None

    def test_stages_with_web_acl_pass(self) -> None:
        fn = make_fn(
            web_stages=(m.ApiStage("a1b2c3", "prod", WEB_ACL), m.ApiStage("a1b2c3", "dev", WEB_ACL))
        )
        assert_pass(run(self.CID, fn), "2 stage(s)")

    def test_stage_without_web_acl_fails(self) -> None:
        fn = make_fn(
            web_stages=(m.ApiStage("a1b2c3", "prod", WEB_ACL), m.ApiStage("a1b2c3", "dev", None))
        )
        outcome = run(self.CID, fn)
        assert_fail(outcome, "stage(s) without a web ACL: a1b2c3/dev")
        assert outcome is not None and "a1b2c3/prod" not in outcome.evidence

    def test_api_that_is_not_a_rest_api_fails(self) -> None:
        fn = make_fn(web_stages=(m.ApiStage("h77p9q", "*", None, found=False),))
        assert_fail(run(self.CID, fn), "h77p9q", "HTTP APIs cannot have a web ACL")


# --- 12. reserved concurrency --------------------------------------------------------------------


class TestReservedConcurrency:
    CID = "lambda-reserved-concurrency"

    def test_reservation_within_bounds_passes(self) -> None:
        assert_pass(run(self.CID, make_fn(reserved_concurrency=50)), "reserved concurrency 50")

    def test_no_reservation_fails_when_required(self) -> None:
        assert_fail(run(self.CID, make_fn()), "no reserved concurrency")

    def test_no_reservation_passes_when_not_required(self) -> None:
        assert_pass(run(self.CID, make_fn(), {"required": False}), "no reservation")

    def test_zero_always_fails(self) -> None:
        fn = make_fn(reserved_concurrency=0)
        assert_fail(run(self.CID, fn), "throttled entirely")
        assert_fail(run(self.CID, fn, {"min_reserved": 0, "required": False}), "throttled entirely")

    def test_bounds(self) -> None:
        params = {"min_reserved": 5, "max_reserved": 100}
        assert_fail(run(self.CID, make_fn(reserved_concurrency=2), params), "2 outside [5, 100]")
        assert_fail(
            run(self.CID, make_fn(reserved_concurrency=101), params), "101 outside [5, 100]"
        )
        assert_pass(run(self.CID, make_fn(reserved_concurrency=5), params))
        assert_pass(run(self.CID, make_fn(reserved_concurrency=100), params))

    def test_bounds_do_not_apply_without_a_reservation(self) -> None:
        assert_pass(run(self.CID, make_fn(), {"required": False, "min_reserved": 5}))


# --- 13. runtime ---------------------------------------------------------------------------------


class TestRuntimeSupported:
    CID = "lambda-runtime-supported"

    def test_deprecated_runtime_fails(self) -> None:
        assert_fail(
            run(self.CID, make_fn(runtime="python3.8")), "python3.8 deprecated on 2024-10-14"
        )

    def test_supported_runtime_passes(self) -> None:
        assert_pass(run(self.CID, make_fn(runtime="python3.12")), "supported until 2028-10-31")

    def test_deprecation_day_itself_fails(self) -> None:
        on_the_day = dt.datetime(2025, 12, 15, 0, 0, tzinfo=dt.UTC)
        assert_fail(
            run(self.CID, make_fn(runtime="python3.9"), now=on_the_day), "deprecated on 2025-12-15"
        )
        day_before = on_the_day - dt.timedelta(days=1)
        assert_pass(run(self.CID, make_fn(runtime="python3.9"), now=day_before))

    def test_verdict_follows_the_injected_clock(self) -> None:
        fn = make_fn(runtime="nodejs18.x")  # deprecated 2025-09-01
        assert_pass(run(self.CID, fn, now=dt.datetime(2025, 8, 31, tzinfo=dt.UTC)))
        assert_fail(run(self.CID, fn, now=dt.datetime(2025, 9, 1, tzinfo=dt.UTC)))

    def test_warn_days_before(self) -> None:
        fn = make_fn(runtime="python3.9")  # deprecated 2025-12-15, NOW is 2025-06-01
        assert_pass(run(self.CID, fn, {"warn_days_before": 190}))
        outcome = run(self.CID, fn, {"warn_days_before": 197})
        assert_fail(outcome, "python3.9 will be deprecated on 2025-12-15")
        # any valid setting is judged, even one that reaches past the last date (found by the
        # policy property test: today + 2,912,292 days overflowed)
        outcome = run(self.CID, fn, {"warn_days_before": 10**12})
        assert_fail(outcome, "python3.9 will be deprecated on 2025-12-15")

    def test_image_package_is_not_applicable(self) -> None:
        assert run(self.CID, make_fn(package_type="Image", runtime=None, handler=None)) is None
        assert run(self.CID, make_fn(package_type="Image", runtime="python3.8")) is None

    def test_zip_without_runtime_is_an_error_never_a_pass(self) -> None:
        assert_error(run(self.CID, make_fn(runtime=None)), "no Runtime")

    def test_unknown_runtime_passes(self) -> None:
        assert_pass(run(self.CID, make_fn(runtime="python3.99")), "no known deprecation date")

    def test_policy_reference_overrides_the_packaged_dates(self) -> None:
        reference = build_reference(
            {
                LAMBDA_RUNTIMES: {
                    "python3.12": dt.date(2025, 1, 1),
                    "provided.al2": dt.date(2024, 1, 1),
                }
            }
        )
        assert_fail(
            run(self.CID, make_fn(runtime="python3.12"), reference=reference),
            "deprecated on 2025-01-01",
        )
        assert_fail(run(self.CID, make_fn(runtime="provided.al2"), reference=reference))
        # entries not overridden keep their packaged date
        assert_fail(run(self.CID, make_fn(runtime="python3.8"), reference=reference), "2024-10-14")

    def test_override_can_postpone_a_deprecation(self) -> None:
        reference = build_reference({LAMBDA_RUNTIMES: {"python3.8": dt.date(2030, 1, 1)}})
        assert_pass(
            run(self.CID, make_fn(runtime="python3.8"), reference=reference), "until 2030-01-01"
        )

    def test_empty_reference_falls_back_to_packaged_data(self) -> None:
        assert_fail(run(self.CID, make_fn(runtime="python3.8"), reference={}), "2024-10-14")


# --- 14. code signing ----------------------------------------------------------------------------

CSC_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:code-signing-config:csc-0a1b2c3d4e5f6a7b8"


class TestCodeSigning:
    CID = "lambda-code-signing-enforced"

    def test_enforce_passes(self) -> None:
        fn = make_fn(code_signing_config_arn=CSC_ARN, untrusted_artifact_action="Enforce")
        assert_pass(run(self.CID, fn), "enforced")

    def test_no_config_fails(self) -> None:
        assert_fail(run(self.CID, make_fn()), "no code signing config")

    def test_warn_fails(self) -> None:
        fn = make_fn(code_signing_config_arn=CSC_ARN, untrusted_artifact_action="Warn")
        assert_fail(run(self.CID, fn), CSC_ARN, "only warns", "UntrustedArtifactOnDeployment=Warn")

    def test_image_is_not_applicable(self) -> None:
        assert run(self.CID, make_fn(package_type="Image", runtime=None)) is None


# --- 15. asynchronous failures -------------------------------------------------------------------


class TestAsyncFailure:
    CID = "lambda-async-failure-capture"
    DLQ = f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders-dlq"

    def test_dead_letter_queue_passes(self) -> None:
        """DeadLetterConfig (moto drops it from the function configuration)."""
        assert_pass(run(self.CID, make_fn(dead_letter_target=self.DLQ)), self.DLQ)

    def test_on_failure_destination_passes(self) -> None:
        topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:orders-failures"
        assert_pass(run(self.CID, make_fn(on_failure_destination=topic)), topic)

    def test_neither_fails(self) -> None:
        assert_fail(run(self.CID, make_fn()), "no dead-letter queue and no on-failure destination")


# --- 16. tracing ---------------------------------------------------------------------------------


class TestXray:
    CID = "lambda-xray-active"

    def test_active_passes(self) -> None:
        assert_pass(run(self.CID, make_fn(tracing_mode="Active")))

    def test_pass_through_fails(self) -> None:
        assert_fail(run(self.CID, make_fn(tracing_mode="PassThrough")), "tracing mode PassThrough")

    def test_unset_fails(self) -> None:
        assert_fail(run(self.CID, make_fn(tracing_mode=None)), "PassThrough")


# --- 17. region-wide audit -----------------------------------------------------------------------


def recorder(**overrides: Any) -> m.ConfigRecorder:
    fields: dict[str, Any] = {
        "name": "default",
        "recording": True,
        "all_supported": True,
        "resource_types": frozenset(),
    }
    fields.update(overrides)
    return m.ConfigRecorder(**fields)


class TestConfigRecording:
    CID = "lambda-config-recording"

    def test_no_recorder_fails(self) -> None:
        assert_fail(run(self.CID, make_region()), "no AWS Config recorder")

    def test_all_supported_recorder_passes(self) -> None:
        assert_pass(
            run(self.CID, make_region(config_recorders=(recorder(),))), "AWS::Lambda::Function"
        )

    def test_stopped_recorder_fails(self) -> None:
        region = make_region(config_recorders=(recorder(recording=False),))
        assert_fail(run(self.CID, region), "not recorded: AWS::Lambda::Function", "default stopped")

    def test_all_supported_with_lambda_excluded_fails(self) -> None:
        rec = recorder(excluded_types=frozenset({"AWS::Lambda::Function"}))
        assert_fail(run(self.CID, make_region(config_recorders=(rec,))), "default recording")

    def test_all_supported_with_other_exclusions_passes(self) -> None:
        rec = recorder(excluded_types=frozenset({"AWS::EC2::NetworkInterface"}))
        assert_pass(run(self.CID, make_region(config_recorders=(rec,))))

    def test_explicit_resource_types(self) -> None:
        good = recorder(
            all_supported=False,
            resource_types=frozenset({"AWS::Lambda::Function", "AWS::IAM::Role"}),
        )
        assert_pass(run(self.CID, make_region(config_recorders=(good,))))
        bad = recorder(all_supported=False, resource_types=frozenset({"AWS::IAM::Role"}))
        assert_fail(run(self.CID, make_region(config_recorders=(bad,))), "AWS::Lambda::Function")

    def test_resource_types_parameter(self) -> None:
        rec = recorder(all_supported=False, resource_types=frozenset({"AWS::Lambda::Function"}))
        region = make_region(config_recorders=(rec,))
        params = {"resource_types": ["AWS::Lambda::Function", "AWS::IAM::Role"]}
        outcome = run(self.CID, region, params)
        assert_fail(outcome, "not recorded: AWS::IAM::Role")
        assert outcome is not None and "Lambda" not in outcome.evidence.split("(")[0]

    def test_one_good_recorder_is_enough(self) -> None:
        region = make_region(
            config_recorders=(recorder(name="old", recording=False), recorder(name="main"))
        )
        assert_pass(run(self.CID, region))


def trail(name: str = "org-trail", **overrides: Any) -> m.Trail:
    fields: dict[str, Any] = {
        "name": name,
        "arn": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{name}",
        "home_region": REGION,
        "multi_region": True,
        "logging": True,
        "management_events": True,
    }
    fields.update(overrides)
    return m.Trail(**fields)


class TestCloudTrail:
    CID = "lambda-cloudtrail-management-events"

    def test_no_trails_fails(self) -> None:
        assert_fail(run(self.CID, make_region()), "no trail covers this region")

    def test_good_trail_passes(self) -> None:
        assert_pass(run(self.CID, make_region(trails=(trail(),))), "org-trail")

    def test_trail_not_logging_fails(self) -> None:
        region = make_region(trails=(trail(logging=False),))
        assert_fail(run(self.CID, region), "org-trail: not logging, management events")

    def test_trail_without_management_events_fails(self) -> None:
        region = make_region(trails=(trail("data-only", management_events=False),))
        assert_fail(run(self.CID, region), "data-only: logging, no management events")

    def test_one_good_trail_among_bad_ones_passes(self) -> None:
        region = make_region(trails=(trail("stopped", logging=False), trail("main")))
        outcome = run(self.CID, region)
        assert_pass(outcome, "main")
        assert outcome is not None and "stopped" not in outcome.evidence
