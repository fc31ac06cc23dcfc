"""AWS Lambda: functions, their versions, policies, URLs, aliases, code signing, invoke configs,
execution roles, log groups, subnets and web triggers; layer versions and their policies.

Environment variable values are reduced to "what they look like" in `_env_vars` and dropped there.
The presigned code URL that GetFunction returns is never kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from daemon.aws.errors import AwsError, ErrorKind
from daemon.collectors import concurrency, iam, region
from daemon.collectors.base import (
    AspectErrors,
    CollectContext,
    Operation,
    concurrently,
    parse_timestamp,
)
from daemon.collectors.cache import DetailCache, Lookups, digest
from daemon.model import awslambda as m
from daemon.model import frozen_errors, frozen_tags, parse_arn
from daemon.model import lambdaconfig as lc
from daemon.model.iampolicy import PolicyDocument, PolicyParseError, parse_policy
from daemon.model.secrets import env_var

SERVICE = "lambda"

OPERATIONS: tuple[Operation, ...] = (
    Operation("lambda", "ListFunctions", "lambda:ListFunctions"),
    Operation("lambda", "GetFunction", "lambda:GetFunction"),
    Operation("lambda", "GetPolicy", "lambda:GetPolicy"),
    Operation("lambda", "GetFunctionUrlConfig", "lambda:GetFunctionUrlConfig"),
    Operation("lambda", "ListAliases", "lambda:ListAliases"),
    # code signing: one listing per account-region instead of a call per function
    Operation("lambda", "ListCodeSigningConfigs", "lambda:ListCodeSigningConfigs"),
    Operation(
        "lambda", "ListFunctionsByCodeSigningConfig", "lambda:ListFunctionsByCodeSigningConfig"
    ),
    Operation("lambda", "GetFunctionEventInvokeConfig", "lambda:GetFunctionEventInvokeConfig"),
    Operation(
        "lambda", "ListProvisionedConcurrencyConfigs", "lambda:ListProvisionedConcurrencyConfigs"
    ),
    Operation("lambda", "ListLayers", "lambda:ListLayers"),
    Operation("lambda", "ListLayerVersions", "lambda:ListLayerVersions"),
    Operation("lambda", "GetLayerVersionPolicy", "lambda:GetLayerVersionPolicy"),
    # layer versions of other accounts that functions reference (do they still exist?)
    Operation("lambda", "GetLayerVersionByArn", "lambda:GetLayerVersion"),
    Operation("logs", "DescribeLogGroups", "logs:DescribeLogGroups"),
    # plain reads, granted with the rest; called only while lambda-log-export may run
    Operation("logs", "DescribeSubscriptionFilters", "logs:DescribeSubscriptionFilters"),
    Operation("logs", "DescribeExportTasks", "logs:DescribeExportTasks"),
    Operation("ec2", "DescribeSubnets", "ec2:DescribeSubnets"),
    Operation("apigateway", "GetStages", "apigateway:GET"),
    *iam.OPERATIONS,
    *region.OPERATIONS,
    *concurrency.OPERATIONS,
)

DEFAULT_LOG_PREFIX = "/aws/lambda/"
LOG_EXPORT_CONTROL = "lambda-log-export"

# Values the Lambda API documents today. A value outside them is logged once as odd data (AWS
# adds values over time); the controls still judge what they can.
PACKAGE_TYPES = frozenset({"Zip", "Image"})
TRACING_MODES = frozenset({"Active", "PassThrough"})
ARCHITECTURES = frozenset({"x86_64", "arm64"})
# Fields AWS returns for every function; their absence is odd data.
EXPECTED_FIELDS = ("Role", "Timeout", "MemorySize", "PackageType", "TracingConfig")
EXPECTED_ZIP_FIELDS = ("Runtime", "Handler")


def configuration_issues(raw: dict[str, Any]) -> list[str]:
    """What is odd about one ListFunctions entry: missing fields and unexpected enum values."""
    out = [f"missing field {name}" for name in EXPECTED_FIELDS if raw.get(name) in (None, "")]
    package_type = raw.get("PackageType")
    if package_type not in (None, "") and package_type not in PACKAGE_TYPES:
        out.append(f"unexpected PackageType {str(package_type)[:40]!r}")
    if package_type in (None, "Zip"):
        out += [
            f"missing field {name}" for name in EXPECTED_ZIP_FIELDS if raw.get(name) in (None, "")
        ]
    mode = (raw.get("TracingConfig") or {}).get("Mode")
    if mode is not None and mode not in TRACING_MODES:
        out.append(f"unexpected TracingConfig.Mode {str(mode)[:40]!r}")
    for arch in raw.get("Architectures") or []:
        if arch not in ARCHITECTURES:
            out.append(f"unexpected Architectures value {str(arch)[:40]!r}")
    for name, value in (("Timeout", raw.get("Timeout")), ("MemorySize", raw.get("MemorySize"))):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            out.append(f"{name} is not an integer")
    return out


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _env_vars(raw: dict[str, Any]) -> tuple[tuple[m.EnvVar, ...], str | None]:
    """Reduce the environment to names and value classes; the values go out of scope here."""
    env = raw.get("Environment") or {}
    error = env.get("Error")
    if error:
        return (), str(error.get("ErrorCode") or "EnvironmentError")
    variables = env.get("Variables") or {}
    return tuple(env_var(name, value) for name, value in sorted(variables.items())), None


def _layer_ref(raw: dict[str, Any]) -> m.LayerRef:
    arn = str(raw.get("Arn", ""))
    parts = parse_arn(arn)
    name, version = "", None
    if parts is not None:
        segs = parts.resource.split(":")  # layer:NAME:VERSION
        if len(segs) >= 2:
            name = segs[1]
        if len(segs) >= 3 and segs[2].isdigit():
            version = int(segs[2])
    return m.LayerRef(arn, parts.account_id if parts else "", name, version)


def _parse_policy_text(text: Any) -> tuple[PolicyDocument | None, str | None]:
    if text is None:
        return None, None
    try:
        return parse_policy(text), None
    except PolicyParseError as exc:
        return None, str(exc)


def _api_stage_refs(
    policy: PolicyDocument, account_id: str, region_name: str
) -> set[tuple[str, str]]:
    """(api id, stage) of API Gateway sources named in the policy, in this account and region."""
    refs: set[tuple[str, str]] = set()
    for st in policy.statements:
        if not st.allow or not any(p.startswith("apigateway.") for p in st.service_principals):
            continue
        for source in st.condition_values("aws:SourceArn"):
            parts = parse_arn(source)
            if parts is None or parts.service != "execute-api":
                continue
            if parts.region not in (region_name, "*") or parts.account_id not in (account_id, "*"):
                continue
            segs = parts.resource.split("/")
            api_id = segs[0]
            stage = segs[1] if len(segs) > 1 and segs[1] else "*"
            if api_id and api_id != "*":
                refs.add((api_id, stage))
    return refs


@dataclass(frozen=True, slots=True)
class _Details:
    tags: dict[str, str]
    reserved: int | None
    policy: PolicyDocument | None
    url_auth_type: str | None
    aliases: tuple[m.Alias, ...]
    csc_arn: str | None
    untrusted_action: str | None
    on_failure: str | None
    provisioned: tuple[m.ProvisionedConcurrency, ...]
    # the raw answers behind the function's config fingerprint; None when one was unreadable,
    # or when the export (the fingerprint's only reader) is off
    parts: lc.FunctionParts | None
    fetched_at: float  # unix time the answers were read (from the cache: earlier sweeps)


@dataclass
class _RegionData:
    """Lookups shared by every function of the target, fetched once per sweep."""

    log_groups: dict[str, m.LogGroup]
    log_groups_error: str | None
    log_export_errors: dict[str, str]  # log group name ("" for all) -> error code
    subnet_azs: dict[str, str]
    subnets_error: str | None
    layer_versions: set[str]  # ARNs of layer versions that exist in this account-region
    foreign_layers: dict[str, bool | str]  # other accounts' layer ARNs -> exists | error code
    stages: dict[
        str, tuple[bool, dict[str, str | None]] | str
    ]  # api id -> (found, stage->acl) | error
    signing: dict[str, str | None]  # code signing config ARN -> UntrustedArtifactOnDeployment
    signing_errors: dict[str, str]
    # function ARN -> its code signing config ARN (functions without one are absent); None: the
    # listing failed with `signing_list_error` and every function's code signing is unknown
    signing_by_function: dict[str, str] | None = None
    signing_list_error: str | None = None


@dataclass(frozen=True, slots=True)
class _Fetched:
    """The per-function answers beyond ListFunctions, as read (cached under the change key)."""

    tags: dict[str, str]
    reserved: int | None
    policy_text: Any
    url: dict[str, Any] | None
    aliases: tuple[dict[str, Any], ...]
    invoke: dict[str, Any] | None
    provisioned: tuple[dict[str, Any], ...]


def change_key(raw: dict[str, Any], versions: Iterable[dict[str, Any]]) -> tuple[Any, ...]:
    """What ListFunctions(FunctionVersion=ALL) says about a function: when any of it differs, the
    function changed and its details are read again."""
    return (
        raw.get("RevisionId"),
        raw.get("CodeSha256"),
        raw.get("LastModified"),
        tuple(
            sorted(
                (str(v.get("Version")), str(v.get("RevisionId")), str(v.get("CodeSha256")))
                for v in versions
            )
        ),
    )


class LambdaCollector:
    service = SERVICE
    operations = OPERATIONS

    def __init__(
        self,
        roles: iam.RoleReader,
        details: DetailCache[_Fetched] | None = None,
        metrics: Lookups | None = None,
    ) -> None:
        self.roles = roles
        # the CloudWatch concurrency answer per account-region (None: asked every sweep)
        self.metrics = metrics
        # per-function details, re-read on change or rolling refresh (daemon/collectors/cache.py)
        self.details: DetailCache[_Fetched] = details or DetailCache(0)
        # layer version policies (GetLayerVersionPolicy; None: the version has none)
        self.layer_policies: DetailCache[dict[str, Any] | None] = DetailCache(
            self.details.max_age, self.details.lookahead
        )
        # subscription filters per log group (only read while lambda-log-export may run)
        self.filters: DetailCache[tuple[dict[str, Any], ...]] = DetailCache(
            self.details.max_age, self.details.lookahead
        )
        # account-region lookups (layer listing, code signing, log groups, subnets, other
        # accounts' layers, AWS Config and CloudTrail): re-read when their input changes, after
        # a change event, or on the rolling refresh -- not every sweep
        self.lookups = Lookups(self.details.max_age, self.details.lookahead)

    def invalidate(self, account_id: str, region: str, resource: str | None = None) -> None:
        """Forget cached details (a change event): one function by ARN or name, or all."""
        if resource is not None and not resource.startswith("arn:"):
            resource = f"arn:aws:lambda:{region}:{account_id}:function:{resource}"
        if resource is not None:
            resource = ":".join(resource.split(":")[:7])  # no qualifier
        self.details.invalidate((account_id, region), resource)
        # any change in the account-region may show in a lookup (a code signing config put on a
        # function, a layer version published): read them again too
        self.lookups.invalidate((account_id, region))
        if resource is None:
            self.filters.invalidate((account_id, f"{region}/logs"))

    async def collect(self, ctx: CollectContext) -> m.LambdaSnapshot:
        api = ctx.api
        entries = await api.all_items(
            "lambda", "list_functions", "Functions", FunctionVersion="ALL"
        )
        latest: list[dict[str, Any]] = []
        versions: dict[str, list[m.PublishedVersion]] = {}
        raw_versions: dict[str, list[dict[str, Any]]] = {}
        target = ctx.target
        for entry in entries:
            e = entry
            if not isinstance(e, dict) or not e.get("FunctionName"):
                ctx.issue(
                    f"arn:aws:lambda:{target.region}:{target.account_id}:function:?",
                    m.ASPECT_CONFIG,
                    "ListFunctions entry without a FunctionName: skipped",
                )
                continue
            if not e.get("FunctionArn"):
                name = str(e["FunctionName"])
                e = {
                    **e,
                    "FunctionArn": f"arn:aws:lambda:{target.region}:{target.account_id}"
                    f":function:{name}",
                }
            if e.get("Version", "$LATEST") == "$LATEST":
                # with FunctionVersion=ALL, $LATEST entries carry a qualified ARN
                arn = str(e.get("FunctionArn", "")).removesuffix(":$LATEST")
                latest.append({**e, "FunctionArn": arn})
            else:
                base = str(e.get("FunctionArn", "")).rsplit(":", 1)[0]
                raw_versions.setdefault(base, []).append(e)
                versions.setdefault(base, []).append(
                    m.PublishedVersion(
                        version=str(e["Version"]),
                        code_sha256=str(e.get("CodeSha256", "")),
                        last_modified=parse_timestamp(e.get("LastModified")),
                    )
                )
        self.details.retain(
            (target.account_id, target.region), (str(e.get("FunctionArn")) for e in latest)
        )
        # the account-region lookups are independent of each other: one round trip, not five
        layers, shared, posture = await concurrently(
            self._layers(ctx, latest),
            self._region_data(ctx, latest),
            ctx.lookup(
                self.lookups,
                "region-posture",
                lambda: region.collect_region(ctx),
                ok=lambda posture: not posture.errors,
            ),
        )
        shared.layer_versions = {lv.arn for lv in layers}
        served = len(ctx.fetched_at)
        functions = await ctx.gather(
            latest, lambda raw: self._function(ctx, raw, versions, raw_versions, shared)
        )
        found = tuple(sorted((f for f in functions if f is not None), key=lambda f: f.arn))
        stamp = ctx.now.timestamp()
        cached = any(at < stamp for at in ctx.fetched_at[served:])
        budget, budget_errors = await concurrency.collect_concurrency(ctx, found, self.metrics)
        if cached and _reservations_disagree(budget):
            # Some details came from the cache, and AWS's unreserved concurrency says a
            # reservation changed since (PutFunctionConcurrency shows in no listing): read every
            # function's details again in this sweep instead of serving a stale reservation.
            self.details.invalidate((target.account_id, target.region))
            del ctx.fetched_at[served:]
            functions = await ctx.gather(
                latest, lambda raw: self._function(ctx, raw, versions, raw_versions, shared)
            )
            found = tuple(sorted((f for f in functions if f is not None), key=lambda f: f.arn))
            total, count, _ = concurrency.reservations(found)
            budget = replace(budget, reserved_total=total, reserved_functions=count)
        return m.LambdaSnapshot(
            target=ctx.target,
            collected_at=ctx.now,
            functions=found,
            layer_versions=tuple(layers),
            region=replace(
                posture,
                lambda_concurrency=budget,
                errors=frozen_errors({**posture.errors, **budget_errors}),
            ),
        )

    # --- shared lookups --------------------------------------------------------------------------

    async def _layer_listing(self, ctx: CollectContext) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        """(layer name, its versions as ListLayerVersions gives them) for each layer."""
        api = ctx.api
        listing = []
        for layer in await api.all_items("lambda", "list_layers", "Layers"):
            name = layer.get("LayerName", "")
            raw_versions = await api.all_items(
                "lambda", "list_layer_versions", "LayerVersions", LayerName=name
            )
            listing.append((str(name), tuple(raw_versions)))
        return tuple(listing)

    async def _layers(
        self, ctx: CollectContext, functions: list[dict[str, Any]]
    ) -> list[m.LayerVersion]:
        api = ctx.api
        out: list[m.LayerVersion] = []
        scope = (ctx.target.account_id, ctx.target.region)
        now = ctx.now.timestamp()
        listed: list[str] = []
        own = ctx.target.account_id
        # A cached listing serves only while it holds every own layer version a function uses:
        # one published since (and used at once) would otherwise look deleted.
        used = {
            ref.arn
            for f in functions
            for ref in (_layer_ref(layer) for layer in f.get("Layers") or [])
            if ref.account_id == own
        }

        def complete(listing: tuple[tuple[str, tuple[Any, ...]], ...]) -> bool:
            return used <= {
                str(raw.get("LayerVersionArn", "")) for _, versions in listing for raw in versions
            }

        layer_listing = await ctx.lookup(
            self.lookups, "layers", lambda: self._layer_listing(ctx), usable=complete
        )
        for name, raw_versions in layer_listing:

            async def one(raw: dict[str, Any], name: str = name) -> m.LayerVersion | None:
                errors = AspectErrors()
                number = _int_or_none(raw.get("Version"))
                if number is None:
                    ctx.issue(
                        str(raw.get("LayerVersionArn") or name),
                        m.ASPECT_LAYER_POLICY,
                        "layer version without a version number: skipped",
                    )
                    return None
                arn = str(raw.get("LayerVersionArn", ""))
                # a layer version is immutable, its policy is not: cached like function details
                entry = self.layer_policies.get(scope, arn, arn, now)
                if entry is not None:
                    resp = entry.value
                else:
                    resp = await errors.fetch(
                        m.ASPECT_LAYER_POLICY,
                        api.call(
                            "lambda",
                            "get_layer_version_policy",
                            LayerName=name,
                            VersionNumber=number,
                        ),
                    )
                    if not errors.errors:
                        self.layer_policies.put(scope, arn, arn, resp, now)
                policy, problem = _parse_policy_text(resp.get("Policy") if resp else None)
                if problem:
                    errors.fail(m.ASPECT_LAYER_POLICY, "MalformedPolicy")
                    ctx.issue(arn, m.ASPECT_LAYER_POLICY, problem)
                return m.LayerVersion(
                    arn=arn,
                    name=name,
                    version=number,
                    account_id=ctx.target.account_id,
                    region=ctx.target.region,
                    policy=policy,
                    errors=frozen_errors(errors.errors),
                )

            out.extend(lv for lv in await ctx.gather(raw_versions, one) if lv is not None)
            listed.extend(str(raw.get("LayerVersionArn", "")) for raw in raw_versions)
        self.layer_policies.retain(scope, listed)
        return sorted(out, key=lambda lv: lv.arn)

    async def _region_data(
        self, ctx: CollectContext, functions: list[dict[str, Any]]
    ) -> _RegionData:
        """The target's shared lookups, read concurrently (`layer_versions` is filled in by the
        caller from the layer listing)."""

        wanted = sorted({self._log_group_name(f) for f in functions})

        async def logs() -> tuple[dict[str, m.LogGroup], str | None, dict[str, str]]:
            log_groups, log_error = await ctx.lookup(
                self.lookups,
                "log-groups",
                lambda: self._log_groups(ctx, wanted),
                key=digest(wanted),
                ok=lambda found: found[1] is None,
            )
            log_groups, export_errors = await self._log_export(ctx, log_groups)
            return log_groups, log_error, export_errors

        subnet_ids = sorted(
            {s for f in functions for s in (f.get("VpcConfig") or {}).get("SubnetIds") or []}
        )
        foreign_arns = self._foreign_layer_arns(ctx, functions)
        # which function uses which code signing config shows in no listing of functions:
        # read again whenever any function of the account-region changed (and on the refresh)
        changes = digest(
            f"{f.get('FunctionArn')} {f.get('RevisionId')} {f.get('CodeSha256')} "
            f"{f.get('LastModified')}"
            for f in functions
        )
        (log_groups, log_error, export_errors), subnets, foreign, signing = await concurrently(
            logs(),
            ctx.lookup(
                self.lookups,
                "subnets",
                lambda: self._subnets(ctx, subnet_ids),
                key=digest(subnet_ids),
                ok=lambda found: found[1] is None,
            ),
            ctx.lookup(
                self.lookups,
                "foreign-layers",
                lambda: self._foreign_layers(ctx, foreign_arns),
                key=digest(foreign_arns),
                ok=lambda found: all(isinstance(v, bool) for v in found.values()),
            ),
            ctx.lookup(
                self.lookups,
                "code-signing",
                lambda: self._signing_configs(ctx),
                key=changes,
                ok=lambda found: found["signing_list_error"] is None,
            ),
        )
        subnet_azs, subnet_error = subnets
        return _RegionData(
            log_groups=log_groups,
            log_groups_error=log_error,
            log_export_errors=export_errors,
            subnet_azs=subnet_azs,
            subnets_error=subnet_error,
            layer_versions=set(),
            foreign_layers=foreign,
            stages={},
            signing_errors={},
            **signing,
        )

    async def _signing_configs(self, ctx: CollectContext) -> dict[str, Any]:
        """Which function uses which code signing config: ListCodeSigningConfigs and, per config,
        ListFunctionsByCodeSigningConfig -- a few calls per account-region instead of
        GetFunctionCodeSigningConfig for every function (Lambda's shared 15/s budget)."""
        by_function: dict[str, str] = {}
        signing: dict[str, str | None] = {}
        try:
            configs = await ctx.api.all_items(
                "lambda", "list_code_signing_configs", "CodeSigningConfigs"
            )
            for config in configs:
                arn = config.get("CodeSigningConfigArn")
                if not arn:
                    continue
                policies = config.get("CodeSigningPolicies") or {}
                signing[str(arn)] = policies.get("UntrustedArtifactOnDeployment")
                try:
                    arns = await ctx.api.all_items(
                        "lambda",
                        "list_functions_by_code_signing_config",
                        "FunctionArns",
                        CodeSigningConfigArn=arn,
                    )
                except AwsError as err:
                    if err.kind is ErrorKind.NOT_FOUND:
                        continue  # deleted since it was listed
                    raise
                for function_arn in arns:
                    by_function[":".join(str(function_arn).split(":")[:7])] = str(arn)
        except AwsError as err:
            if err.kind.retryable:
                raise
            return {"signing": {}, "signing_by_function": None, "signing_list_error": err.code}
        return {"signing": signing, "signing_by_function": by_function, "signing_list_error": None}

    async def _log_groups(
        self, ctx: CollectContext, log_groups: Iterable[str]
    ) -> tuple[dict[str, m.LogGroup], str | None]:
        wanted = set(log_groups)
        found: dict[str, m.LogGroup] = {}
        prefixes = (
            {DEFAULT_LOG_PREFIX} if any(w.startswith(DEFAULT_LOG_PREFIX) for w in wanted) else set()
        )
        prefixes |= {w for w in wanted if not w.startswith(DEFAULT_LOG_PREFIX)}
        try:
            for prefix in sorted(prefixes):
                groups = await ctx.api.all_items(
                    "logs", "describe_log_groups", "logGroups", logGroupNamePrefix=prefix
                )
                for g in groups:
                    name = g.get("logGroupName", "")
                    if name in wanted:
                        found[name] = m.LogGroup(
                            name=name,
                            arn=str(g.get("arn") or g.get("logGroupArn") or ""),
                            retention_days=g.get("retentionInDays"),
                        )
        except AwsError as err:
            if err.kind.retryable:
                raise
            return {}, err.code
        return found, None

    async def _log_export(
        self, ctx: CollectContext, groups: dict[str, m.LogGroup]
    ) -> tuple[dict[str, m.LogGroup], dict[str, str]]:
        """Subscription filters of each function's log group, and the newest completed export
        task per log group (one DescribeExportTasks walk per target). Only while the opt-in
        lambda-log-export control may run; errors are returned by log group ("" for all)."""
        if not groups or not ctx.wants(LOG_EXPORT_CONTROL):
            return groups, {}
        errors: dict[str, str] = {}
        newest: dict[str, dt.datetime] = {}
        try:
            tasks = await ctx.api.all_items(
                "logs", "describe_export_tasks", "exportTasks", statusCode="COMPLETED"
            )
            for task in tasks:
                to = task.get("to")
                name = str(task.get("logGroupName") or "")
                if name in groups and isinstance(to, int | float) and to > 0:
                    when = dt.datetime.fromtimestamp(to / 1000, dt.UTC)
                    newest[name] = max(when, newest.get(name, when))
        except AwsError as err:
            if err.kind.retryable:
                raise
            errors[""] = err.code

        scope = (ctx.target.account_id, f"{ctx.target.region}/logs")
        now = ctx.now.timestamp()
        self.filters.retain(scope, groups)

        async def one(group: m.LogGroup) -> m.LogGroup:
            # cached per log group like a function's details (filters show in no listing)
            entry = self.filters.get(scope, group.name, group.arn, now)
            if entry is not None:
                filters = list(entry.value)
            else:
                try:
                    filters = await ctx.api.all_items(
                        "logs",
                        "describe_subscription_filters",
                        "subscriptionFilters",
                        logGroupName=group.name,
                    )
                    self.filters.put(scope, group.name, group.arn, tuple(filters), now)
                except AwsError as err:
                    if err.kind.retryable:
                        raise
                    if err.kind is not ErrorKind.NOT_FOUND:  # deleted since: no filters
                        errors[group.name] = err.code
                    filters = []
            return replace(
                group,
                subscription_filters=len(filters),
                subscription_destinations=tuple(
                    sorted(str(f.get("destinationArn") or "") for f in filters)
                ),
                last_export_task=newest.get(group.name),
            )

        read = await ctx.gather(sorted(groups.values(), key=lambda g: g.name), one)
        return {g.name: g for g in read}, errors

    @staticmethod
    def _foreign_layer_arns(ctx: CollectContext, functions: list[dict[str, Any]]) -> list[str]:
        own = ctx.target.account_id
        return sorted(
            {
                ref.arn
                for f in functions
                for ref in (_layer_ref(layer) for layer in f.get("Layers") or [])
                if ref.account_id and ref.account_id != own
            }
        )

    async def _foreign_layers(self, ctx: CollectContext, arns: list[str]) -> dict[str, bool | str]:
        """Whether each layer version of another account that a function references still
        exists (GetLayerVersionByArn, once per distinct ARN): True, False (deleted), or the error
        code when the owner does not let this account read it."""

        async def one(arn: str) -> tuple[str, bool | str]:
            try:
                await ctx.api.call("lambda", "get_layer_version_by_arn", Arn=arn)
            except AwsError as err:
                if err.kind is ErrorKind.NOT_FOUND:
                    return arn, False
                if err.kind.retryable:
                    raise
                return arn, err.code
            return arn, True

        return dict(await ctx.gather(arns, one))

    async def _subnets(
        self, ctx: CollectContext, subnet_ids: list[str]
    ) -> tuple[dict[str, str], str | None]:
        azs: dict[str, str] = {}
        try:
            for i in range(0, len(subnet_ids), 200):
                chunk = subnet_ids[i : i + 200]
                subnets = await ctx.api.all_items(
                    "ec2",
                    "describe_subnets",
                    "Subnets",
                    Filters=[{"Name": "subnet-id", "Values": chunk}],
                )
                for s in subnets:
                    if s.get("SubnetId"):
                        azs[s["SubnetId"]] = s.get("AvailabilityZone", "")
        except AwsError as err:
            if err.kind.retryable:
                raise
            return {}, err.code
        return azs, None

    async def _stage_acls(
        self, ctx: CollectContext, shared: _RegionData, api_id: str
    ) -> tuple[bool, dict[str, str | None]] | str:
        if api_id not in shared.stages:
            try:
                resp = await ctx.api.call("apigateway", "get_stages", restApiId=api_id)
                shared.stages[api_id] = (
                    True,
                    {
                        s["stageName"]: s.get("webAclArn")
                        for s in resp.get("item") or []
                        if s.get("stageName")
                    },
                )
            except AwsError as err:
                if err.kind is ErrorKind.NOT_FOUND:
                    shared.stages[api_id] = (False, {})
                elif err.kind.retryable:
                    raise
                else:
                    shared.stages[api_id] = err.code
        return shared.stages[api_id]

    async def _signing_action(
        self, ctx: CollectContext, shared: _RegionData, csc_arn: str
    ) -> tuple[str | None, str | None]:
        """UntrustedArtifactOnDeployment of a code signing config. Functions only name configs
        of the listing (ListFunctionsByCodeSigningConfig of each listed config), whose answer
        carries the policies: no GetCodeSigningConfig is needed."""
        return shared.signing.get(csc_arn), shared.signing_errors.get(csc_arn)

    @staticmethod
    def _log_group_name(raw: dict[str, Any]) -> str:
        logging_config = raw.get("LoggingConfig") or {}
        return str(
            logging_config.get("LogGroup") or f"{DEFAULT_LOG_PREFIX}{raw.get('FunctionName', '')}"
        )

    # --- one function ---------------------------------------------------------------------------

    async def _function(
        self,
        ctx: CollectContext,
        raw: dict[str, Any],
        versions: dict[str, list[m.PublishedVersion]],
        raw_versions: dict[str, list[dict[str, Any]]],
        shared: _RegionData,
    ) -> m.LambdaFunction | None:
        arn = str(raw.get("FunctionArn", ""))
        errors = AspectErrors()
        # Provisioned concurrency needs a published version (directly or through an alias).
        published = bool(versions.get(arn))
        d = await self._details(
            ctx,
            arn,
            str(raw.get("FunctionName", "")),
            shared,
            errors,
            published,
            change_key(raw, raw_versions.get(arn, ())),
        )
        if d is None:
            return None  # deleted since it was listed
        fingerprint = ""
        if d.parts is not None:  # only with the export on, which alone reads the fingerprint
            parts = replace(d.parts, configuration=raw, versions=tuple(raw_versions.get(arn, ())))
            fingerprint = lc.base_fingerprint(parts)

        for problem in configuration_issues(raw):
            ctx.issue(arn, m.ASPECT_CONFIG, problem)
        role_arn = str(raw.get("Role") or "")
        if role_arn:
            role_result = await self.roles.role(ctx.global_api, role_arn, ctx.now.timestamp())
        else:
            role_result = iam.RoleResult(None, "NoRoleInConfiguration")
        if role_result.error:
            errors.fail(m.ASPECT_ROLE, role_result.error)
        # how old the data judged is: the older of the function's details and its role
        ctx.served(min(d.fetched_at, role_result.fetched_at or d.fetched_at))

        log_group_name = self._log_group_name(raw)
        if shared.log_groups_error:
            errors.fail(m.ASPECT_LOG_GROUP, shared.log_groups_error)
        export_error = shared.log_export_errors.get(log_group_name) or shared.log_export_errors.get(
            ""
        )
        if export_error:
            errors.fail(m.ASPECT_LOG_EXPORT, export_error)

        vpc = raw.get("VpcConfig") or {}
        subnet_ids = tuple(vpc.get("SubnetIds") or ())
        vpc_azs: frozenset[str] | None = None
        if subnet_ids and shared.subnets_error:
            errors.fail(m.ASPECT_SUBNETS, shared.subnets_error)
        elif subnet_ids:
            vpc_azs = frozenset(shared.subnet_azs[s] for s in subnet_ids if s in shared.subnet_azs)

        env_vars, env_error = _env_vars(raw)
        if env_error:
            errors.fail(m.ASPECT_ENV, env_error)
        layer_refs = tuple(_layer_ref(layer) for layer in raw.get("Layers") or [])
        own = ctx.target.account_id
        missing_layers = []
        for ref in layer_refs:
            if not ref.account_id:
                ctx.issue(arn, m.ASPECT_LAYERS, f"unparseable layer ARN {ref.arn!r}")
                errors.fail(m.ASPECT_LAYERS, "MalformedLayerArn")
                continue
            if ref.account_id == own:
                if ref.arn not in shared.layer_versions:
                    missing_layers.append(ref.arn)
                continue
            exists = shared.foreign_layers.get(ref.arn, True)
            if isinstance(exists, str):
                errors.fail(m.ASPECT_LAYERS, exists)
            elif not exists:
                missing_layers.append(ref.arn)
        return m.LambdaFunction(
            arn=arn,
            name=str(raw.get("FunctionName", "")),
            account_id=own,
            region=ctx.target.region,
            runtime=raw.get("Runtime"),
            package_type=str(raw.get("PackageType") or "Zip"),
            handler=raw.get("Handler"),
            role_arn=role_arn,
            memory_mb=_int_or_none(raw.get("MemorySize")),
            timeout_s=_int_or_none(raw.get("Timeout")),
            code_sha256=str(raw.get("CodeSha256", "")),
            last_modified=parse_timestamp(raw.get("LastModified")),
            revision_id=raw.get("RevisionId"),
            env_vars=env_vars,
            env_kms_key_arn=raw.get("KMSKeyArn") or None,
            vpc_subnet_ids=subnet_ids,
            vpc_security_group_ids=tuple(vpc.get("SecurityGroupIds") or ()),
            vpc_azs=vpc_azs,
            layers=layer_refs,
            missing_layers=tuple(missing_layers),
            tracing_mode=(raw.get("TracingConfig") or {}).get("Mode"),
            dead_letter_target=(raw.get("DeadLetterConfig") or {}).get("TargetArn") or None,
            on_failure_destination=d.on_failure,
            reserved_concurrency=d.reserved,
            tags=frozen_tags(d.tags),
            policy=d.policy,
            url_auth_type=d.url_auth_type,
            aliases=d.aliases,
            versions=tuple(sorted(versions.get(arn, []), key=_version_key)),
            code_signing_config_arn=d.csc_arn,
            untrusted_artifact_action=d.untrusted_action,
            role=role_result.role,
            log_group_name=log_group_name,
            log_group=shared.log_groups.get(log_group_name),
            web_stages=await self._web_stages(ctx, shared, d.policy, errors),
            provisioned=d.provisioned,
            config_fingerprint=fingerprint,
            errors=frozen_errors(errors.errors),
        )

    async def _details(
        self,
        ctx: CollectContext,
        arn: str,
        name: str,
        shared: _RegionData,
        errors: AspectErrors,
        published: bool,
        key: tuple[Any, ...],
    ) -> _Details | None:
        """The function's details beyond ListFunctions: cached under its change key, read again
        on a change or a rolling refresh. None if the function is gone."""
        scope = (ctx.target.account_id, ctx.target.region)
        now = ctx.now.timestamp()
        entry = self.details.get(scope, arn, key, now)
        if entry is not None:
            fetched, fetched_at = entry.value, entry.fetched_at
        else:
            got = await self._fetch(ctx, arn, name, errors, published)
            if got is None:
                self.details.discard(scope, arn)
                return None  # deleted since it was listed
            fetched, fetched_at = got, now
            if not errors.errors:  # unknown is never cached: read it again next sweep
                self.details.put(scope, arn, key, fetched, now)
            else:
                self.details.discard(scope, arn)

        policy, problem = _parse_policy_text(fetched.policy_text)
        if problem:
            errors.fail(m.ASPECT_POLICY, "MalformedPolicy")
            ctx.issue(arn, m.ASPECT_POLICY, problem)
        readable = not {
            m.ASPECT_FUNCTION,
            m.ASPECT_POLICY,
            m.ASPECT_URL,
            m.ASPECT_ALIASES,
            m.ASPECT_INVOKE_CONFIG,
            m.ASPECT_PROVISIONED,
        } & set(errors.errors)

        csc_arn: str | None = None
        untrusted_action = None
        if shared.signing_by_function is None:
            errors.fail(m.ASPECT_CODE_SIGNING, shared.signing_list_error or "Unknown")
            readable = False
        else:
            csc_arn = shared.signing_by_function.get(arn)
        if csc_arn:
            untrusted_action, signing_error = await self._signing_action(ctx, shared, csc_arn)
            if signing_error:
                errors.fail(m.ASPECT_CODE_SIGNING, signing_error)
        on_failure = ((fetched.invoke or {}).get("DestinationConfig") or {}).get("OnFailure") or {}
        parts = None
        if readable and ctx.export:
            parts = lc.FunctionParts(
                configuration={},  # the caller adds the ListFunctions entry and versions
                tags=fetched.tags,
                reserved_concurrency=fetched.reserved,
                policy=fetched.policy_text,
                aliases=fetched.aliases,
                url=fetched.url,
                invoke_config=fetched.invoke,
                provisioned=fetched.provisioned,
                code_signing_config_arn=csc_arn,
            )
        return _Details(
            tags=fetched.tags,
            reserved=fetched.reserved,
            policy=policy,
            url_auth_type=(fetched.url or {}).get("AuthType"),
            aliases=tuple(
                m.Alias(str(a.get("Name")), str(a.get("FunctionVersion"))) for a in fetched.aliases
            ),
            csc_arn=csc_arn,
            untrusted_action=untrusted_action,
            on_failure=on_failure.get("Destination") or None,
            provisioned=_provisioned(list(fetched.provisioned)),
            parts=parts,
            fetched_at=fetched_at,
        )

    async def _fetch(
        self,
        ctx: CollectContext,
        arn: str,
        name: str,
        errors: AspectErrors,
        published: bool,
    ) -> _Fetched | None:
        """The per-function calls: GetFunction (its own 100/s bucket: configuration, tags and
        reserved concurrency in one answer), GetPolicy (its own 15/s bucket), and from the shared
        15/s bucket GetFunctionUrlConfig, GetFunctionEventInvokeConfig and -- only for functions
        with published versions (or with the export on) -- ListAliases and
        ListProvisionedConcurrencyConfigs ($LATEST cannot have provisioned concurrency). Code
        signing comes from the account-region listing.

        Calls name the function by name (unambiguous within the target's account and region).
        None if the function is gone.
        """
        api = ctx.api
        try:
            detail = await api.call("lambda", "get_function", FunctionName=name)
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return None
            if err.kind.retryable:
                raise
            errors.fail(m.ASPECT_FUNCTION, err.code)
            detail = {}
        detail.pop("Code", None)  # a presigned URL: never kept

        policy_resp = await errors.fetch(
            m.ASPECT_POLICY, api.call("lambda", "get_policy", FunctionName=name)
        )
        url = await errors.fetch(
            m.ASPECT_URL, api.call("lambda", "get_function_url_config", FunctionName=name)
        )
        aliases: list[dict[str, Any]] | None = []
        if published or ctx.export:
            # Without a published version an alias can only point to $LATEST, and the control
            # that reads aliases (lambda-published-alias) fails such a function on "no published
            # version" whatever its aliases: one shared-bucket call saved per such function.
            aliases = await errors.fetch(
                m.ASPECT_ALIASES,
                api.all_items("lambda", "list_aliases", "Aliases", FunctionName=name),
            )
        invoke = await errors.fetch(
            m.ASPECT_INVOKE_CONFIG,
            api.call("lambda", "get_function_event_invoke_config", FunctionName=name),
        )
        provisioned: list[dict[str, Any]] | None = []
        if published:
            provisioned = await errors.fetch(
                m.ASPECT_PROVISIONED,
                api.all_items(
                    "lambda",
                    "list_provisioned_concurrency_configs",
                    "ProvisionedConcurrencyConfigs",
                    FunctionName=name,
                ),
            )
        return _Fetched(
            tags=detail.get("Tags") or {},
            reserved=(detail.get("Concurrency") or {}).get("ReservedConcurrentExecutions"),
            policy_text=policy_resp.get("Policy") if policy_resp else None,
            url=url,
            aliases=tuple(aliases or ()),
            invoke=invoke,
            provisioned=tuple(provisioned or ()),
        )

    async def _web_stages(
        self,
        ctx: CollectContext,
        shared: _RegionData,
        policy: PolicyDocument | None,
        errors: AspectErrors,
    ) -> tuple[m.ApiStage, ...]:
        if policy is None:
            return ()
        out: list[m.ApiStage] = []
        for api_id, stage in sorted(
            _api_stage_refs(policy, ctx.target.account_id, ctx.target.region)
        ):
            acls = await self._stage_acls(ctx, shared, api_id)
            if isinstance(acls, str):
                errors.fail(m.ASPECT_WEB, acls)
                continue
            found, by_stage = acls
            if not found:
                out.append(m.ApiStage(api_id, stage, None, found=False))
                continue
            names: Iterable[str] = by_stage if stage == "*" else [stage]
            out.extend(m.ApiStage(api_id, s, by_stage.get(s)) for s in names if s in by_stage)
        return tuple(out)


def _reservations_disagree(budget: m.LambdaConcurrency) -> bool:
    """Whether GetAccountSettings' unreserved concurrency contradicts the functions' reservations
    (limit - unreserved is the sum of every reservation of the account-region)."""
    settings = budget.settings
    if settings is None or budget.reserved_total is None:
        return False
    return settings.concurrency_limit - settings.unreserved_concurrency != budget.reserved_total


def _provisioned(raw: list[dict[str, Any]]) -> tuple[m.ProvisionedConcurrency, ...]:
    """ListProvisionedConcurrencyConfigs entries; the qualifier is the suffix of FunctionArn."""
    out = []
    for c in raw:
        qualifier = str(c.get("FunctionArn", "")).rsplit(":", 1)[-1]
        available = c.get("AvailableProvisionedConcurrentExecutions")
        out.append(
            m.ProvisionedConcurrency(
                qualifier=qualifier,
                requested=int(c.get("RequestedProvisionedConcurrentExecutions") or 0),
                allocated=int(c.get("AllocatedProvisionedConcurrentExecutions") or 0),
                available=available if isinstance(available, int) else None,
                status=str(c.get("Status") or ""),
            )
        )
    return tuple(sorted(out, key=lambda p: p.qualifier))


def _version_key(v: m.PublishedVersion) -> tuple[int, str]:
    return (int(v.version), v.version) if v.version.isdigit() else (0, v.version)
