"""AWS Lambda security controls: pure functions of a LambdaSnapshot and the policy's parameters."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from daemon.controls import common
from daemon.controls.common import (
    RESTRICTING_KEYS,
    SOURCE_KEYS,
    EnvSecretsParams,
    account_of,
    secret_hits,
)
from daemon.controls.common import glob_any as _glob_any
from daemon.controls.common import short as _short
from daemon.controls.reference import runtime_deprecations
from daemon.controls.registry import (
    EvalContext,
    NoParams,
    Outcome,
    Params,
    control,
    errored,
    failed,
    passed,
)
from daemon.model import Severity
from daemon.model import awslambda as m
from daemon.model.iampolicy import PolicyDocument, Statement, allows

SERVICE = "lambda"

# 1. Execution role least privilege -----------------------------------------------------------


class RoleLeastPrivilegeParams(Params):
    denied_managed_policies: list[str] = Field(
        default=["AdministratorAccess", "PowerUserAccess", "*FullAccess"],
        description="AWS-managed policy names (globs) an execution role must not have attached.",
    )
    allowed_managed_policies: list[str] = Field(
        default=[], description="Exceptions to denied_managed_policies (globs)."
    )
    allow_service_wildcard_actions: list[str] = Field(
        default=[],
        description="Services whose `service:*` on `Resource: *` is accepted, e.g. ['xray'].",
    )


def _statement_problems(st: Statement, allowed_services: set[str]) -> list[str]:
    if not st.allow:
        return []
    problems: list[str] = []
    if st.not_actions is not None:
        problems.append("Allow with NotAction")
        return problems
    on_everything = st.not_resources is not None or "*" in st.resources
    for action in st.actions:
        if action.strip() == "*":
            problems.append("Action '*'")
        elif action.endswith(":*") and on_everything:
            service = action.split(":", 1)[0].lower()
            if service not in allowed_services:
                problems.append(f"'{action}' on Resource '*'")
    return problems


@control(
    id="lambda-role-least-privilege",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Execution role follows least privilege",
    severity=Severity.HIGH,
    rationale="""A function's execution role is what an attacker gets when the function's code or
    dependencies are compromised. Wildcard actions or broad AWS-managed policies turn one
    vulnerable function into an account takeover.""",
    remediation="""Replace broad managed policies (AdministratorAccess, PowerUserAccess,
    *FullAccess) with a customer-managed policy listing the actions and resources the function
    uses; IAM Access Analyzer can generate one from CloudTrail history.""",
    params=RoleLeastPrivilegeParams,
    requires=(m.ASPECT_ROLE,),
    aws_config_rule="iam-policy-no-statements-with-admin-access",
    security_hub="IAM.1",
)
def role_least_privilege(
    fn: m.LambdaFunction, p: RoleLeastPrivilegeParams, ctx: EvalContext
) -> Outcome | None:
    role = fn.role
    if role is None:
        return passed(f"execution role {fn.role_arn} does not exist (the function cannot run)")
    problems: list[str] = []
    for policy in role.managed:
        denied = policy.aws_managed and _glob_any(policy.name, p.denied_managed_policies)
        if denied and not _glob_any(policy.name, p.allowed_managed_policies):
            problems.append(f"AWS-managed policy {policy.name} attached")
    allowed_services = {s.lower() for s in p.allow_service_wildcard_actions}
    for name, doc in _named_documents(role):
        for st in doc.statements:
            problems.extend(
                f"{name}: {issue}" for issue in _statement_problems(st, allowed_services)
            )
    if problems:
        return failed(f"role {role.name}: {_short(sorted(set(problems)))}")
    unreadable = role.unreadable()
    if unreadable:
        return errored(f"role {role.name}: could not read policies {_short(list(unreadable))}")
    return passed(f"role {role.name}: no wildcard or admin grants")


def _named_documents(role: m.ExecutionRole) -> list[tuple[str, PolicyDocument]]:
    out = [(pol.name, pol.document) for pol in role.managed if pol.document is not None]
    out += [(f"inline {pol.name}", pol.document) for pol in role.inline if pol.document is not None]
    return out


class RoleSharingParams(Params):
    max_functions_per_role: int = Field(
        default=5, ge=1, description="Most functions in one account-region that may share a role."
    )


@control(
    id="lambda-role-not-shared",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Execution role is not shared by many functions",
    severity=Severity.LOW,
    rationale="""A role shared by many functions holds the union of their permissions, so each
    function gets more access than it needs and a compromise of one reaches the data of all.""",
    remediation="""Give each function (or each small group of functions with the same needs) its
    own execution role.""",
    params=RoleSharingParams,
)
def role_not_shared(fn: m.LambdaFunction, p: RoleSharingParams, ctx: EvalContext) -> Outcome | None:
    snapshot = ctx.snapshot
    assert isinstance(snapshot, m.LambdaSnapshot)
    users = snapshot.functions_with_role(fn.role_arn)  # counted once per snapshot, not per function
    if users > p.max_functions_per_role:
        return failed(
            f"role {fn.role_arn} is used by {users} functions (max {p.max_functions_per_role})"
        )
    return passed(f"role used by {users} function(s)")


# 2. Environment encryption -------------------------------------------------------------------


class EnvEncryptionParams(Params):
    allowed_key_arns: list[str] = Field(
        default=[], description="If set, the customer-managed key must be one of these (globs)."
    )


@control(
    id="lambda-env-cmk-encryption",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Environment variables are encrypted with a customer-managed KMS key",
    severity=Severity.MEDIUM,
    rationale="""With the default AWS-managed key, anyone allowed to read the function's
    configuration can read its environment. A customer-managed key adds a key policy you control
    and an audit trail of every decrypt.""",
    remediation="""Create a KMS key, allow the execution role kms:Decrypt on it, and set it as the
    function's KMS key (KMSKeyArn) for environment variable encryption.""",
    params=EnvEncryptionParams,
    references=("prowler:awslambda_function_env_vars_not_encrypted_with_cmk",),
)
def env_cmk(fn: m.LambdaFunction, p: EnvEncryptionParams, ctx: EvalContext) -> Outcome | None:
    if not fn.env_vars and fn.env_kms_key_arn is None:
        return None
    if fn.env_kms_key_arn is None:
        return failed(f"{len(fn.env_vars)} environment variable(s) use the AWS-managed key")
    if p.allowed_key_arns and not _glob_any(fn.env_kms_key_arn, p.allowed_key_arns):
        return failed(f"key {fn.env_kms_key_arn} is not an allowed key")
    return passed(f"encrypted with {fn.env_kms_key_arn}")


# 3. No plaintext secrets ---------------------------------------------------------------------


@control(
    id="lambda-env-no-plaintext-secrets",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="No plaintext secrets in environment variables",
    severity=Severity.CRITICAL,
    rationale="""Environment variables are returned by GetFunctionConfiguration to anyone with read
    access, copied into every deployment tool and often logged. Secrets belong in Secrets
    Manager or SSM Parameter Store, fetched at runtime.""",
    remediation="""Move the value to AWS Secrets Manager (or SSM SecureString), keep only its ARN or
    name in the environment, and rotate the exposed secret.""",
    params=EnvSecretsParams,
    requires=(m.ASPECT_ENV,),
    references=("prowler:awslambda_function_no_secrets_in_variables",),
)
def env_no_secrets(fn: m.LambdaFunction, p: EnvSecretsParams, ctx: EvalContext) -> Outcome | None:
    hits = secret_hits(fn.env_vars, p)
    if hits:
        return failed(f"possible secrets in: {_short(hits)}")
    return passed(f"{len(fn.env_vars)} variable(s) checked")


# 4. VPC ---------------------------------------------------------------------------------------


@control(
    id="lambda-vpc-attached",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Function is attached to a VPC",
    severity=Severity.MEDIUM,
    rationale="""A function in a VPC reaches only the networks its subnets and security groups
    allow, and its egress can be inspected and restricted.""",
    remediation="""Configure VpcConfig with private subnets and a security group; give the subnets
    a NAT gateway or VPC endpoints for the AWS services the function calls.""",
    params=NoParams,
    security_hub="Lambda.3",
    aws_config_rule="lambda-inside-vpc",
)
def vpc_attached(fn: m.LambdaFunction, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if fn.vpc_subnet_ids:
        return passed(f"in {len(fn.vpc_subnet_ids)} subnet(s)")
    return failed("not attached to a VPC")


class MultiAzParams(Params):
    min_availability_zones: int = Field(default=2, ge=2, le=6)


@control(
    id="lambda-vpc-multi-az",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="VPC function spans several Availability Zones",
    severity=Severity.MEDIUM,
    rationale="""A function whose subnets are all in one Availability Zone stops running when that
    zone has an outage.""",
    remediation="Add subnets in at least two Availability Zones to the function's VpcConfig.",
    params=MultiAzParams,
    requires=(m.ASPECT_SUBNETS,),
    security_hub="Lambda.5",
    aws_config_rule="lambda-vpc-multi-az-check",
)
def vpc_multi_az(fn: m.LambdaFunction, p: MultiAzParams, ctx: EvalContext) -> Outcome | None:
    if not fn.vpc_subnet_ids:
        return None
    azs = sorted(fn.vpc_azs or ())
    if fn.vpc_azs is None:
        return errored("subnets could not be resolved to Availability Zones")
    if len(azs) < p.min_availability_zones:
        return failed(f"subnets span {len(azs)} AZ(s) {azs}; need {p.min_availability_zones}")
    return passed(f"subnets span {len(azs)} AZs")


# 5. Logging -----------------------------------------------------------------------------------


@control(
    id="lambda-logging",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Function logs to CloudWatch Logs",
    severity=Severity.MEDIUM,
    rationale="""Without a log group the execution role can write to, a function's output and
    errors are lost, and so is the evidence needed to investigate misuse.""",
    remediation="""Create the log group (default /aws/lambda/FUNCTION, or the one in LoggingConfig)
    and grant the execution role logs:CreateLogStream and logs:PutLogEvents on it, for example
    with AWSLambdaBasicExecutionRole.""",
    params=NoParams,
    requires=(m.ASPECT_LOG_GROUP, m.ASPECT_ROLE),
)
def logging_configured(fn: m.LambdaFunction, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if fn.log_group is None:
        return failed(f"log group {fn.log_group_name} does not exist")
    if fn.role is None:
        return failed(f"execution role {fn.role_arn} does not exist")
    stream_arn = f"{fn.log_group.arn.removesuffix(':*')}:log-stream:{fn.name}"
    docs = fn.role.documents()  # evaluated together: a Deny in one policy beats an Allow in another
    missing = [
        action
        for action in ("logs:CreateLogStream", "logs:PutLogEvents")
        if not allows(docs, action, stream_arn)
    ]
    if missing:
        if fn.role.unreadable():
            return errored(f"role {fn.role.name}: could not read all policies")
        return failed(f"role {fn.role.name} may not {', '.join(missing)} on {fn.log_group_name}")
    return passed(f"logs to {fn.log_group_name}")


# 6. Timeout and memory ------------------------------------------------------------------------


class BoundsParams(Params):
    min_timeout_seconds: int = Field(default=1, ge=1, le=900)
    max_timeout_seconds: int = Field(default=300, ge=1, le=900)
    min_memory_mb: int = Field(default=128, ge=128, le=10240)
    max_memory_mb: int = Field(default=4096, ge=128, le=10240)


@control(
    id="lambda-timeout-memory-bounds",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Timeout and memory are within bounds",
    severity=Severity.LOW,
    rationale="""Bounded timeouts and memory cap how long and how hard a runaway or abused
    function can run, and therefore its cost and blast radius.""",
    remediation="Set the function's Timeout and MemorySize within the policy's bounds.",
    params=BoundsParams,
    aws_config_rule="lambda-function-settings-check",
)
def timeout_memory(fn: m.LambdaFunction, p: BoundsParams, ctx: EvalContext) -> Outcome | None:
    problems = []
    t, mem = fn.timeout_s, fn.memory_mb
    if t is None or mem is None:
        missing = " and ".join(n for n, v in (("Timeout", t), ("MemorySize", mem)) if v is None)
        return errored(f"{missing} missing from the function configuration")
    if not p.min_timeout_seconds <= t <= p.max_timeout_seconds:
        problems.append(f"timeout {t}s outside [{p.min_timeout_seconds}, {p.max_timeout_seconds}]")
    if not p.min_memory_mb <= mem <= p.max_memory_mb:
        problems.append(f"memory {mem} MB outside [{p.min_memory_mb}, {p.max_memory_mb}]")
    if problems:
        return failed("; ".join(problems))
    return passed(f"timeout {t}s, memory {mem} MB")


# 7. Layers -------------------------------------------------------------------------------------


class TrustedLayersParams(Params):
    trusted_accounts: list[str] = Field(
        default=[],
        description="Accounts besides the function's own whose layers may be used "
        "(e.g. AWS's account for the Parameters and Secrets extension).",
    )


@control(
    id="lambda-layers-trusted",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Layers come only from trusted accounts",
    severity=Severity.HIGH,
    rationale="""A layer's code runs inside the function with its role. A layer from an account
    you do not control is third-party code that can change under you.""",
    remediation="""Copy the layer into your own account (or a trusted publishing account), review
    it, and reference that version; or add its publisher to trusted_accounts.""",
    params=TrustedLayersParams,
    references=("prowler:awslambda_function_using_cross_account_layers",),
)
def layers_trusted(
    fn: m.LambdaFunction, p: TrustedLayersParams, ctx: EvalContext
) -> Outcome | None:
    trusted = {fn.account_id, *p.trusted_accounts}
    untrusted = [layer.arn for layer in fn.layers if layer.account_id not in trusted]
    if untrusted:
        return failed(f"layers from untrusted accounts: {_short(untrusted)}")
    return passed(f"{len(fn.layers)} layer(s), all from trusted accounts")


@control(
    id="lambda-layer-not-public",
    service=SERVICE,
    resource_type=m.LAYER_VERSION,
    title="Layer versions are not shared publicly",
    severity=Severity.HIGH,
    rationale="""A layer version shared with everyone exposes its code, and any secrets or
    internal logic baked into it, to every AWS account.""",
    remediation="""Remove the public statement with RemoveLayerVersionPermission; share with
    specific accounts or with your organization (aws:PrincipalOrgID) instead.""",
    params=NoParams,
    requires=(m.ASPECT_LAYER_POLICY,),
)
def layer_not_public(layer: m.LayerVersion, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if layer.policy is None:
        return passed("no layer version policy")
    public = [
        st.sid or "(no sid)"
        for st in layer.policy.statements
        if st.allow and st.is_public and not st.has_restricting_condition(RESTRICTING_KEYS)
    ]
    if public:
        return failed(f"shared with any AWS account by statement(s) {_short(public)}")
    return passed("shared only with named principals")


# 8. Versions and aliases ---------------------------------------------------------------------


class AliasParams(Params):
    alias: str = Field(default="live", description="The alias that must point to a version.")
    require_alias: bool = Field(default=True, description="Fail when the alias does not exist.")


@control(
    id="lambda-published-alias",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="A published version exists and the alias points to it",
    severity=Severity.LOW,
    rationale="""Published versions are immutable: they are the history to roll back to. An alias
    that points to $LATEST runs whatever was deployed last, untested.""",
    remediation="""Publish a version (PublishVersion) and point the alias at it (UpdateAlias), as
    part of the deployment pipeline.""",
    params=AliasParams,
    requires=(m.ASPECT_VERSIONS, m.ASPECT_ALIASES),
)
def published_alias(fn: m.LambdaFunction, p: AliasParams, ctx: EvalContext) -> Outcome | None:
    if not fn.versions:
        return failed("no published version")
    alias = next((a for a in fn.aliases if a.name == p.alias), None)
    if alias is None:
        if p.require_alias:
            return failed(f"alias {p.alias!r} does not exist")
        return passed(f"{len(fn.versions)} published version(s)")
    if alias.function_version == "$LATEST":
        return failed(f"alias {p.alias!r} points to $LATEST")
    if alias.function_version not in {v.version for v in fn.versions}:
        return failed(f"alias {p.alias!r} points to missing version {alias.function_version}")
    return passed(f"alias {p.alias!r} -> version {alias.function_version}")


# 9. Resource-based policy --------------------------------------------------------------------


class ResourcePolicyParams(Params):
    allowed_accounts: list[str] | None = Field(
        default=None,
        description="If set, AWS account principals outside this list (and the function's own "
        "account) are violations.",
    )


def _is_function_url_statement(st: Statement) -> bool:
    """Statements that only open the function URL (judged by lambda-url-auth instead).

    A public URL needs lambda:InvokeFunctionUrl with lambda:FunctionUrlAuthType and, since
    October 2025, lambda:InvokeFunction with lambda:InvokedViaFunctionUrl = true.
    """
    actions = [a.lower() for a in st.actions]
    if not actions:
        return False
    if st.condition_values("lambda:FunctionUrlAuthType") and all(
        a == "lambda:invokefunctionurl" for a in actions
    ):
        return True
    via_url = st.condition_values("lambda:InvokedViaFunctionUrl")
    return (
        bool(via_url)
        and all(v.lower() == "true" for v in via_url)
        and all(a == "lambda:invokefunction" for a in actions)
    )


@control(
    id="lambda-resource-policy-restricted",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Resource-based policy does not allow public or unscoped access",
    severity=Severity.CRITICAL,
    rationale="""A statement with a public principal and no narrowing condition lets any AWS
    account invoke the function. A service principal without aws:SourceArn/SourceAccount lets
    any customer's resource of that service invoke it (the confused-deputy problem).""",
    remediation="""Remove public statements (RemovePermission); re-add service permissions with
    --source-arn and --source-account so only your own bucket, topic or API can invoke.""",
    params=ResourcePolicyParams,
    requires=(m.ASPECT_POLICY,),
    security_hub="Lambda.1",
    aws_config_rule="lambda-function-public-access-prohibited",
)
def resource_policy(
    fn: m.LambdaFunction, p: ResourcePolicyParams, ctx: EvalContext
) -> Outcome | None:
    if fn.policy is None:
        return passed("no resource-based policy")
    problems: list[str] = []
    for st in fn.policy.statements:
        if not st.allow or _is_function_url_statement(st):
            continue  # function URL access is judged by lambda-url-auth
        sid = st.sid or "(no sid)"
        if st.is_public and not st.has_restricting_condition(RESTRICTING_KEYS):
            problems.append(f"{sid}: public principal without a restricting condition")
            continue
        services = st.service_principals
        if services and not st.has_restricting_condition(SOURCE_KEYS):
            problems.append(f"{sid}: {services[0]} without aws:SourceArn/SourceAccount")
        if p.allowed_accounts is not None:
            allowed = {fn.account_id, *p.allowed_accounts}
            foreign = [
                acct
                for acct in (account_of(pr) for pr in st.aws_principals)
                if acct is not None and acct not in allowed
            ]
            if foreign:
                problems.append(f"{sid}: account(s) {_short(sorted(set(foreign)))} not allowed")
    if problems:
        return failed(_short(problems))
    return passed(f"{len(fn.policy.statements)} statement(s), all scoped")


# 10. Function URL ------------------------------------------------------------------------------


@control(
    id="lambda-url-auth",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Function URL requires IAM authentication",
    severity=Severity.HIGH,
    rationale="""A function URL with AuthType NONE is a public HTTPS endpoint: anyone on the
    internet can invoke the function and run up its cost.""",
    remediation="""Set the URL's AuthType to AWS_IAM, or delete the URL and front the function with
    API Gateway (with WAF). Exempt deliberate public endpoints with a reason and expiry.""",
    params=NoParams,
    requires=(m.ASPECT_URL,),
    references=("prowler:awslambda_function_url_public",),
)
def url_auth(fn: m.LambdaFunction, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if fn.url_auth_type is None:
        return passed("no function URL")
    if fn.url_auth_type == "NONE":
        return failed("function URL with AuthType NONE (public)")
    return passed(f"function URL with AuthType {fn.url_auth_type}")


# 11. WAF for web-triggered functions ----------------------------------------------------------


@control(
    id="lambda-api-waf",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="API Gateway stages that invoke the function have AWS WAF",
    severity=Severity.MEDIUM,
    rationale="""A web-triggered function behind an API Gateway stage without a web ACL receives
    every request the internet sends, including floods and injection attempts.""",
    remediation="""Associate an AWS WAF web ACL (with rate-based and managed rule groups) with each
    REST API stage that invokes the function.""",
    params=NoParams,
    requires=(m.ASPECT_POLICY, m.ASPECT_WEB),
)
def api_waf(fn: m.LambdaFunction, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if not fn.web_stages:
        return None
    missing = [f"{s.api_id}/{s.stage}" for s in fn.web_stages if s.found and not s.web_acl_arn]
    unknown = [s.api_id for s in fn.web_stages if not s.found]
    if missing:
        return failed(f"stage(s) without a web ACL: {_short(missing)}")
    if unknown:
        return failed(
            f"invoked by API(s) {_short(unknown)} that are not REST APIs here "
            "(HTTP APIs cannot have a web ACL)"
        )
    return passed(f"{len(fn.web_stages)} stage(s) protected by WAF")


# 12. Reserved concurrency ---------------------------------------------------------------------


class ConcurrencyParams(Params):
    required: bool = Field(default=True, description="Fail when no reservation is configured.")
    min_reserved: int = Field(default=1, ge=0)
    max_reserved: int | None = Field(default=None, ge=0)


@control(
    id="lambda-reserved-concurrency",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Reserved concurrency is configured and within bounds",
    severity=Severity.LOW,
    rationale="""Reserved concurrency caps how many copies of a function run at once, which
    contains the cost and downstream damage of abuse or a retry storm, and guarantees the function
    capacity when the account's pool is busy.""",
    remediation="Set PutFunctionConcurrency within the policy's bounds.",
    params=ConcurrencyParams,
    requires=(m.ASPECT_FUNCTION,),
    aws_config_rule="lambda-concurrency-check",
)
def reserved_concurrency(
    fn: m.LambdaFunction, p: ConcurrencyParams, ctx: EvalContext
) -> Outcome | None:
    rc = fn.reserved_concurrency
    if rc is None:
        return failed("no reserved concurrency") if p.required else passed("no reservation")
    if rc == 0:
        return failed("reserved concurrency 0: the function is throttled entirely")
    if rc < p.min_reserved or (p.max_reserved is not None and rc > p.max_reserved):
        return failed(f"reserved concurrency {rc} outside [{p.min_reserved}, {p.max_reserved}]")
    return passed(f"reserved concurrency {rc}")


# 13. Runtime ------------------------------------------------------------------------------------


class RuntimeParams(Params):
    warn_days_before: int = Field(
        default=0, ge=0, description="Fail this many days before the deprecation date."
    )


@control(
    id="lambda-runtime-supported",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Runtime is supported",
    severity=Severity.HIGH,
    rationale="""A deprecated runtime no longer receives security patches, and AWS later blocks
    updates to functions that use it.""",
    remediation="""Upgrade the function to a supported runtime (deprecation dates are in the
    daemon's reference data and can be updated in the policy).""",
    params=RuntimeParams,
    security_hub="Lambda.2",
    aws_config_rule="lambda-function-settings-check",
)
def runtime_supported(fn: m.LambdaFunction, p: RuntimeParams, ctx: EvalContext) -> Outcome | None:
    if fn.package_type == "Image":
        return None
    if not fn.runtime:
        return errored("no Runtime in the configuration of a .zip function")
    deprecations = runtime_deprecations(ctx.reference)
    deprecated_on: date | None = deprecations.get(fn.runtime)
    if deprecated_on is None:
        return passed(f"{fn.runtime} has no known deprecation date")
    today = ctx.now.date()
    if deprecated_on <= today:
        return failed(f"{fn.runtime} deprecated on {deprecated_on.isoformat()}")
    # days apart, not today + timedelta(warn_days_before): any int is a valid setting, and a date
    # that far ahead overflows
    if (deprecated_on - today).days <= p.warn_days_before:
        return failed(f"{fn.runtime} will be deprecated on {deprecated_on.isoformat()}")
    return passed(f"{fn.runtime} supported until {deprecated_on.isoformat()}")


# 14. Code signing ----------------------------------------------------------------------------


@control(
    id="lambda-code-signing-enforced",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Code signing is enforced",
    severity=Severity.MEDIUM,
    rationale="""Code signing with an Enforce policy makes Lambda reject deployment packages that
    were not signed by a trusted signing profile, so stolen deploy credentials cannot push
    arbitrary code.""",
    remediation="""Create a code signing config with your AWS Signer profile and
    UntrustedArtifactOnDeployment=Enforce, and attach it to the function.""",
    params=NoParams,
    requires=(m.ASPECT_CODE_SIGNING,),
)
def code_signing(fn: m.LambdaFunction, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if fn.package_type == "Image":
        return None  # code signing applies to .zip packages only
    if fn.code_signing_config_arn is None:
        return failed("no code signing config")
    if fn.untrusted_artifact_action != "Enforce":
        return failed(
            f"code signing config {fn.code_signing_config_arn} only warns "
            f"(UntrustedArtifactOnDeployment={fn.untrusted_artifact_action})"
        )
    return passed("code signing enforced")


# 15. Asynchronous failures ---------------------------------------------------------------------


@control(
    id="lambda-async-failure-capture",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Failed asynchronous invocations are captured",
    severity=Severity.LOW,
    rationale="""Lambda discards an asynchronous event after its retries fail. Without a
    dead-letter queue or an on-failure destination, those events are lost silently.""",
    remediation="""Configure an on-failure destination (PutFunctionEventInvokeConfig) or a
    dead-letter queue (DeadLetterConfig) pointing to SQS or SNS.""",
    params=NoParams,
    requires=(m.ASPECT_INVOKE_CONFIG,),
    aws_config_rule="lambda-dlq-check",
)
def async_failure(fn: m.LambdaFunction, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if fn.dead_letter_target:
        return passed(f"dead-letter target {fn.dead_letter_target}")
    if fn.on_failure_destination:
        return passed(f"on-failure destination {fn.on_failure_destination}")
    return failed("no dead-letter queue and no on-failure destination")


# 16. Tracing -----------------------------------------------------------------------------------


@control(
    id="lambda-xray-active",
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="X-Ray active tracing is on",
    severity=Severity.LOW,
    rationale="""Active tracing records every invocation's path through downstream services,
    which is how unexpected calls from a compromised function are spotted and debugged.""",
    remediation="Set TracingConfig Mode=Active and allow the role xray:PutTraceSegments.",
    params=NoParams,
    security_hub="Lambda.7",
    aws_config_rule="lambda-function-xray-enabled",
)
def xray(fn: m.LambdaFunction, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if fn.tracing_mode == "Active":
        return passed("active tracing")
    return failed(f"tracing mode {fn.tracing_mode or 'PassThrough'}")


# 17. Region-wide audit trail --------------------------------------------------------------------


class ConfigRecordingParams(Params):
    resource_types: list[str] = Field(
        default=["AWS::Lambda::Function"],
        description="AWS Config resource types that must be recorded.",
    )


@control(
    id="lambda-config-recording",
    service=SERVICE,
    resource_type=m.ACCOUNT_REGION,
    title="AWS Config records Lambda functions in the region",
    severity=Severity.MEDIUM,
    rationale="""AWS Config keeps the configuration history of each function, which is what you
    need to see who changed what, and to restore a configuration.""",
    remediation="""Start a configuration recorder that records all supported resource types, or
    at least AWS::Lambda::Function, with a delivery channel.""",
    params=ConfigRecordingParams,
    requires=(m.ASPECT_CONFIG_RECORDER,),
)
def config_recording(
    region: m.RegionPosture, p: ConfigRecordingParams, ctx: EvalContext
) -> Outcome | None:
    return common.config_recording(region.config_recorders, p.resource_types)


@control(
    id="lambda-cloudtrail-management-events",
    service=SERVICE,
    resource_type=m.ACCOUNT_REGION,
    title="CloudTrail logs Lambda management events in the region",
    severity=Severity.HIGH,
    rationale="""CloudTrail management events record every CreateFunction, UpdateFunctionCode and
    AddPermission call: without them, changes to functions cannot be attributed.""",
    remediation="""Create a multi-Region trail (or an organization trail) that is logging and
    includes management events (read/write All or WriteOnly).""",
    params=NoParams,
    requires=(m.ASPECT_CLOUDTRAIL,),
    references=("prowler:awslambda_function_invoke_api_operations_cloudtrail_logging_enabled",),
)
def cloudtrail(region: m.RegionPosture, p: NoParams, ctx: EvalContext) -> Outcome | None:
    good = [t.name for t in region.trails if t.logging and t.management_events]
    if good:
        return passed(f"trail(s) {_short(good)}")
    if not region.trails:
        return failed("no trail covers this region")
    states = [
        f"{t.name}: {'logging' if t.logging else 'not logging'}, "
        f"{'management events' if t.management_events else 'no management events'}"
        for t in region.trails
    ]
    return failed(_short(states))
