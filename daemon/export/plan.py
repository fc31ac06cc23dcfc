"""Restore planning: what to create, change or delete to make a function match a snapshot. Pure.

The planner compares the snapshot document with the target function as it is now (nothing, when
it does not exist) and returns ordered steps, each a list of Lambda API calls. Restoring over an
existing function (`--replace`) is the same comparison: only what differs is changed, so running a
restore again after a failure finishes the job.

Order, chosen so a failure half-way leaves a working function and a clear message:
1. the function itself (CreateFunction with the configuration and code of the oldest version the
   snapshot refers to, or of $LATEST), then for each referenced version in ascending order its
   code and configuration followed by PublishVersion, then $LATEST's own code and configuration;
2. aliases (pointing at the versions just published: version numbers are assigned by AWS, the plan
   shows the mapping), then resource-policy statements, reserved concurrency, function URLs, event
   invoke configs, provisioned concurrency, tags;
3. event source mappings last, since they start consuming events. When the restore is not in the
   function's original place (another name, account or region), they are created disabled: the
   original may still be consuming the same source.

Dependencies the snapshot cannot bring back (an execution role, layer version, subnet, KMS key or
code signing config that does not exist in the target, or lives in another region or account; a
missing package; environment values not exported) are reported as blocking problems, each with
the `--drop` option that restores without that part. Nothing is changed while a blocking problem
remains.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.export.document import Document
from daemon.model import lambdaconfig as lc
from daemon.model import parse_arn

DROPS = {
    "vpc": "VPC subnets, security groups and EFS file systems",
    "layers": "layers",
    "kms-key": "the customer-managed key of the environment (AWS's own key is used)",
    "code-signing": "the code signing config",
    "dead-letter": "the dead-letter queue",
    "destinations": "async invoke and event source mapping destinations",
    "event-sources": "event source mappings",
    "env-values": "environment values (the variables are created empty)",
    "environment": "environment variables altogether",
    "url": "function URLs",
    "permissions": "resource-policy statements",
    "provisioned-concurrency": "provisioned concurrency",
}
LIVE = "(live)"  # the target function as it is, before the restore changes it
MAX_ZIP_UPLOAD = 50 * 1000 * 1000  # AWS: 50 MB for a package uploaded directly with the request
_AWS_TAG = "aws:"
_CONFIG_PARAMS = (
    "Role",
    "Handler",
    "Description",
    "Timeout",
    "MemorySize",
    "VpcConfig",
    "Environment",
    "Runtime",
    "DeadLetterConfig",
    "KMSKeyArn",
    "TracingConfig",
    "Layers",
    "FileSystemConfigs",
    "ImageConfig",
    "EphemeralStorage",
    "SnapStart",
    "LoggingConfig",
)


@dataclass(frozen=True)
class Ref:
    """A value known only while restoring: a new version number or a package's bytes."""

    kind: str  # "version" | "function-version" (NAME:VERSION) | "code"
    key: str  # the snapshot's version number | the package's CodeSha256


@dataclass(frozen=True)
class Call:
    service: str
    method: str
    params: Mapping[str, Any]
    publishes: str | None = None  # the snapshot version this PublishVersion recreates
    wait: bool = False  # wait for the function's update to finish afterwards
    tolerate: tuple[str, ...] = ()  # error codes that mean "already so"


@dataclass(frozen=True)
class Step:
    action: str  # create | update | delete | publish
    what: str
    detail: str = ""
    calls: tuple[Call, ...] = ()


@dataclass(frozen=True)
class Problem:
    part: str
    message: str
    drop: str | None = None  # the --drop option that restores without this part
    blocking: bool = True


@dataclass(frozen=True)
class Target:
    account: str
    region: str
    name: str
    partition: str = "aws"

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:lambda:{self.region}:{self.account}:function:{self.name}"


@dataclass
class Current:
    """The target function as it is now (from the same full read as the export)."""

    parts: lc.FunctionParts

    @property
    def view(self) -> dict[str, Any]:
        return lc.full_view(self.parts)


@dataclass(frozen=True)
class RestoreInputs:
    document: Document
    target: Target
    current: Current | None
    drops: frozenset[str] = frozenset()
    role: str | None = None  # execution role override
    # decrypted environment values by qualifier ("$LATEST", version) -> name -> value
    env_values: Mapping[str, Mapping[str, str]] | None = None
    package_sizes: Mapping[str, int] = field(default_factory=dict)  # CodeSha256 -> bytes
    bucket: str | None = None  # for packages above MAX_ZIP_UPLOAD (S3Bucket/S3Key)
    bucket_region: str | None = None
    package_keys: Mapping[str, str] = field(default_factory=dict)  # CodeSha256 -> S3 key
    # event source mappings that still name the (deleted) target function: reused, not duplicated
    orphan_mappings: tuple[Mapping[str, Any], ...] = ()


@dataclass
class Plan:
    target: Target
    steps: list[Step] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    version_map: dict[str, str] = field(default_factory=dict)  # known before applying (reuse)

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.blocking]

    @property
    def changes(self) -> int:
        return len(self.steps)


# --- helpers ------------------------------------------------------------------------------------


def _region_of(arn: str) -> str | None:
    parts = parse_arn(arn)
    return parts.region if parts else None


def _account_of(arn: str) -> str | None:
    parts = parse_arn(arn)
    return parts.account_id if parts else None


def _elsewhere(arn: str, target: Target) -> bool:
    """An ARN in another region (or account) than the target: Lambda cannot use it there."""
    region = _region_of(arn)
    return bool(region) and region != target.region


def _version_key(v: str) -> tuple[int, str]:
    return (len(v), v)


def _qualified(name: str, qualifier: str, mapping: Mapping[str, str | Ref]) -> str | Ref:
    """The qualifier to use on the target: versions map to the new numbers."""
    if qualifier == lc.LATEST:
        return lc.LATEST
    if qualifier.isdigit():
        return mapping.get(qualifier, Ref("version", qualifier))
    return qualifier


def statement_params(st: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """AddPermission parameters for a policy statement, or (None, why it cannot be expressed)."""
    sid = st.get("Sid")
    if not isinstance(sid, str) or not sid:
        return None, "the statement has no Sid"
    if st.get("Effect", "Allow") != "Allow":
        return None, "AddPermission only creates Allow statements"
    action = st.get("Action")
    if isinstance(action, list):
        if len(action) != 1:
            return None, "several actions in one statement"
        action = action[0]
    principal = st.get("Principal")
    if isinstance(principal, dict):
        if len(principal) != 1:
            return None, "several principal types"
        ((kind, value),) = principal.items()
        if isinstance(value, list):
            if len(value) != 1:
                return None, "several principals"
            value = value[0]
        if kind == "AWS" and isinstance(value, str):
            arn = parse_arn(value)
            principal = arn.account_id if arn and value.endswith(":root") else value
        else:
            principal = value
    params: dict[str, Any] = {"StatementId": sid, "Action": action, "Principal": principal}
    if st.get("FunctionUrlAuthType"):  # moto keeps it outside the condition block
        params["FunctionUrlAuthType"] = st["FunctionUrlAuthType"]
    known = {
        ("ArnLike", "aws:sourcearn"): "SourceArn",
        ("ArnEquals", "aws:sourcearn"): "SourceArn",
        ("StringEquals", "aws:sourceaccount"): "SourceAccount",
        ("StringEquals", "lambda:eventsourcetoken"): "EventSourceToken",
        ("StringEquals", "aws:principalorgid"): "PrincipalOrgID",
        ("StringEquals", "lambda:functionurlauthtype"): "FunctionUrlAuthType",
    }
    for operator, entries in (st.get("Condition") or {}).items():
        if not isinstance(entries, dict):
            return None, f"condition {operator} is not an object"
        for key, value in entries.items():
            param = known.get((operator, str(key).lower()))
            if param is None:
                return None, f"condition {operator} {key} has no AddPermission parameter"
            values = value if isinstance(value, list) else [value]
            if len(values) != 1:
                return None, f"condition {key} has several values"
            params[param] = values[0]
    return params, None


def statements(doc: Document) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Every policy statement of the snapshot by (qualifier, Sid); the qualifier comes from the
    statement's Resource (alias policies and the function policy may repeat statements)."""
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    sources: list[Any] = [doc.get("policy")]
    sources += list((doc.get("alias_policies") or {}).values())
    for source in sources:
        if not isinstance(source, list):
            continue
        for st in source:
            resource = st.get("Resource")
            resource = resource[0] if isinstance(resource, list) and resource else resource
            qualifier = lc.qualifier_of(str(resource or doc.arn), doc.name)
            out.setdefault((qualifier, str(st.get("Sid", ""))), st)
    return out


def _current_statements(current: Current | None) -> dict[tuple[str, str], Mapping[str, Any]]:
    if current is None:
        return {}
    view = current.view
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    name = current.parts.name
    for source in [view.get("policy"), *(view.get("alias_policies") or {}).values()]:
        if not isinstance(source, list):
            continue
        for st in source:
            resource = st.get("Resource")
            resource = resource[0] if isinstance(resource, list) and resource else resource
            out.setdefault((lc.qualifier_of(str(resource or ""), name), str(st.get("Sid"))), st)
    return out


# --- the planner --------------------------------------------------------------------------------


class Planner:
    def __init__(self, inputs: RestoreInputs) -> None:
        self.i = inputs
        self.doc = inputs.document
        self.target = inputs.target
        self.drops = inputs.drops
        self.plan = Plan(inputs.target)
        self.same_place = (
            self.target.account == self.doc.account_id
            and self.target.region == self.doc.region
            and self.target.name == self.doc.name
        )
        self.mapping: dict[str, str | Ref] = {}

    # problems ---------------------------------------------------------------------------------

    def problem(self, part: str, message: str, drop: str | None = None) -> None:
        if drop is not None and drop in self.drops:
            return
        found = Problem(part, message, drop)
        if found not in self.plan.problems:
            self.plan.problems.append(found)

    def warn(self, part: str, message: str) -> None:
        found = Problem(part, message, None, blocking=False)
        if found not in self.plan.problems:
            self.plan.problems.append(found)

    # desired configuration of a stage ---------------------------------------------------------

    def config_params(self, config: Mapping[str, Any], qualifier: str) -> dict[str, Any]:
        """CreateFunction / UpdateFunctionConfiguration parameters for a snapshot configuration,
        with the drops applied and dependencies checked (problems recorded)."""
        out: dict[str, Any] = {}
        t = self.target
        for key in ("Runtime", "Handler", "Description", "Timeout", "MemorySize"):
            if key in config:
                out[key] = config[key]
        out["Role"] = self.i.role or config.get("Role")
        role_account = _account_of(str(out["Role"] or ""))
        if role_account and role_account != t.account:
            self.problem(
                "role",
                f"execution role {out['Role']} is in account {role_account}, not {t.account}: "
                "create a role in the target account and pass --role ARN",
            )
        vpc = config.get("VpcConfig")
        if vpc and "vpc" not in self.drops:
            if not self.same_place_network():
                self.problem(
                    "vpc",
                    f"VPC subnets {', '.join(vpc.get('SubnetIds') or [])} belong to "
                    f"{self.doc.account_id}/{self.doc.region}",
                    "vpc",
                )
            out["VpcConfig"] = {
                k: v
                for k, v in vpc.items()
                if k in ("SubnetIds", "SecurityGroupIds", "Ipv6AllowedForDualStack")
            }
        fs = config.get("FileSystemConfigs")
        if fs and "vpc" not in self.drops:
            for f in fs:
                if _elsewhere(str(f.get("Arn", "")), t) or not self.same_place_network():
                    self.problem("vpc", f"EFS access point {f.get('Arn')} is elsewhere", "vpc")
            out["FileSystemConfigs"] = fs
        layers = config.get("Layers") or []
        if layers and "layers" not in self.drops:
            for arn in layers:
                if _elsewhere(arn, t):
                    self.problem(
                        "layers", f"layer {arn} is in another region than {t.region}", "layers"
                    )
            out["Layers"] = list(layers)
        kms = config.get("KMSKeyArn")
        if kms and "kms-key" not in self.drops:
            if _elsewhere(kms, t) or _account_of(kms) not in (t.account, None):
                self.problem(
                    "kms-key", f"KMS key {kms} is not in {t.account}/{t.region}", "kms-key"
                )
            out["KMSKeyArn"] = kms
        dlq = (config.get("DeadLetterConfig") or {}).get("TargetArn")
        if dlq and "dead-letter" not in self.drops:
            if _elsewhere(dlq, t):
                self.problem("dead-letter", f"dead-letter target {dlq} is elsewhere", "dead-letter")
            out["DeadLetterConfig"] = {"TargetArn": dlq}
        for key in (
            "TracingConfig",
            "ImageConfig",
            "EphemeralStorage",
            "SnapStart",
            "LoggingConfig",
            "Architectures",
        ):
            if config.get(key):
                out[key] = config[key]
        out["Environment"] = {"Variables": self.environment(config, qualifier)}
        return out

    def same_place_network(self) -> bool:
        return self.target.account == self.doc.account_id and self.target.region == self.doc.region

    def environment(self, config: Mapping[str, Any], qualifier: str) -> dict[str, str]:
        if "environment" in self.drops:
            return {}
        names = config.get("EnvironmentVariables")
        if names is None:
            if config.get("EnvironmentError") or self.doc.environment.get("values") == "unreadable":
                self.problem(
                    "environment",
                    "the environment was unreadable when the snapshot was taken "
                    f"({config.get('EnvironmentError') or self.doc.environment.get('error')})",
                    "environment",
                )
            return {}
        values = (self.i.env_values or {}).get(qualifier)
        if values is None and names:
            if "env-values" not in self.drops:
                mode = self.doc.environment.get("values")
                why = (
                    "the snapshot holds their names only"
                    if mode == "omitted"
                    else "their values could not be decrypted"
                )
                self.problem(
                    "environment",
                    f"environment variables {', '.join(names)} of {qualifier}: {why}",
                    "env-values",
                )
            return dict.fromkeys(names, "")
        return {n: (values or {}).get(n, "") for n in names}

    def code_params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        sha = str(config.get("CodeSha256") or "")
        code = self.doc.code
        if str(code.get("package_type") or "Zip") == "Image":
            uri = code.get("resolved_image_uri") or code.get("image_uri")
            if not uri:
                self.problem("code", "the snapshot holds no image URI")
            elif f".{self.target.region}." not in str(uri):
                self.warn("code", f"image {uri} is not in {self.target.region}'s registry")
            return {"ImageUri": uri}
        if self.doc.package(sha) is None:
            why = (code.get("missing") or {}).get(sha, "not in the snapshot")
            self.problem("code", f"package {sha} is not in the snapshot ({why})")
            return {"ZipFile": Ref("code", sha)}
        size = self.i.package_sizes.get(sha, 0)
        if size > MAX_ZIP_UPLOAD:
            if self.i.bucket and self.i.bucket_region == self.target.region:
                return {"S3Bucket": self.i.bucket, "S3Key": self.i.package_keys[sha]}
            self.problem(
                "code",
                f"package {sha} has {size} bytes, above the {MAX_ZIP_UPLOAD}-byte direct upload "
                f"limit, and the snapshot bucket is not in {self.target.region}: copy it to a "
                f"bucket there and deploy it from S3",
            )
        return {"ZipFile": Ref("code", sha)}

    # stages -----------------------------------------------------------------------------------

    def build(self) -> Plan:
        doc, t = self.doc, self.target
        if str(doc.code.get("package_type") or "Zip") != "Image" and not doc.configuration.get(
            "CodeSha256"
        ):
            self.problem("code", "the snapshot's configuration has no CodeSha256")
        self.functions()
        self.aliases()
        self.permissions()
        self.concurrency()
        self.urls()
        self.invoke_configs()
        self.provisioned()
        self.tags()
        self.mappings()
        if not self.same_place:
            self.plan.notes.append(
                f"restoring {doc.arn} as {t.arn}: event source mappings are created disabled"
            )
        return self.plan

    def step(self, action: str, what: str, detail: str, *calls: Call) -> None:
        self.plan.steps.append(Step(action, what, detail, tuple(calls)))

    def functions(self) -> None:
        doc, t = self.doc, self.target
        versions = doc.referenced_versions()
        stages: list[tuple[str, Mapping[str, Any]]] = [(v, doc.version(v)) for v in versions]
        latest = doc.configuration
        current = self.i.current
        existing: dict[str, Mapping[str, Any]] = {}
        if current is not None:
            for v in current.view["versions"]:
                existing.setdefault(_stage_key(v), v)
        last: Mapping[str, Any] | None = current.view["configuration"] if current else None
        last_qualifier = LIVE
        for number, config in stages:
            reuse = existing.get(_stage_key(config))
            if reuse is not None:
                self.mapping[number] = str(reuse["Version"])
                self.plan.version_map[number] = str(reuse["Version"])
                continue
            last = self.stage(config, number, last, last_qualifier)
            last_qualifier = number
            self.step(
                "publish",
                f"version (was {number})",
                f"code {config.get('CodeSha256')}",
                Call(
                    "lambda",
                    "publish_version",
                    {"FunctionName": t.name, "Description": config.get("Description", "")},
                    publishes=number,
                ),
            )
            self.mapping[number] = Ref("version", number)
        self.stage(latest, lc.LATEST, last, last_qualifier)

    def stage(
        self,
        config: Mapping[str, Any],
        qualifier: str,
        last: Mapping[str, Any] | None,
        last_qualifier: str,
    ) -> Mapping[str, Any]:
        """Make $LATEST hold this configuration and code; returns it."""
        t = self.target
        params = self.config_params(config, qualifier)
        if last is None:
            create = {
                "FunctionName": t.name,
                **params,
                "Code": self.code_params(config),
                "PackageType": config.get("PackageType") or "Zip",
                "Publish": False,
            }
            if self.doc.get("code_signing_config_arn") and "code-signing" not in self.drops:
                csc = str(self.doc.get("code_signing_config_arn"))
                if _elsewhere(csc, t) or _account_of(csc) != t.account:
                    self.problem(
                        "code-signing",
                        f"code signing config {csc} is not in {t.account}/{t.region}",
                        "code-signing",
                    )
                create["CodeSigningConfigArn"] = csc
            tags = self.desired_tags()
            if tags:
                create["Tags"] = tags
            self.step(
                "create",
                f"function {t.name}",
                _describe_config(config, qualifier),
                Call("lambda", "create_function", create, wait=True),
            )
            return config
        if last.get("CodeSha256") != config.get("CodeSha256"):
            code = self.code_params(config)
            if config.get("Architectures"):
                code["Architectures"] = config["Architectures"]
            self.step(
                "update",
                f"code of $LATEST (for {qualifier})",
                f"package {config.get('CodeSha256')}",
                Call("lambda", "update_function_code", {"FunctionName": t.name, **code}, wait=True),
            )
        if self.config_differs(last, config, last_qualifier, qualifier):
            update = {k: v for k, v in params.items() if k in _CONFIG_PARAMS}
            _clear_absent(update)
            self.step(
                "update",
                f"configuration of $LATEST (for {qualifier})",
                _describe_config(config, qualifier),
                Call(
                    "lambda",
                    "update_function_configuration",
                    {"FunctionName": t.name, **update},
                    wait=True,
                ),
            )
        return config

    def config_differs(
        self,
        last: Mapping[str, Any],
        config: Mapping[str, Any],
        last_qualifier: str,
        qualifier: str,
    ) -> bool:
        """Whether $LATEST, holding `last`, needs an UpdateFunctionConfiguration to hold `config`.
        Environment values are compared in memory (they are never shown)."""
        ignore = {"CodeSha256", "CodeSize", "RevisionId", "Version", "Architectures"}
        a = {k: v for k, v in last.items() if k not in ignore}
        b = {k: v for k, v in self.desired_config(config).items() if k not in ignore}
        if a != b:
            return True
        return self.env_of(last, last_qualifier) != self.environment(config, qualifier)

    def env_of(self, config: Mapping[str, Any], qualifier: str) -> dict[str, str]:
        if qualifier == LIVE:
            current = self.i.current
            live = (current.parts.configuration.get("Environment") or {}) if current else {}
            return {str(k): str(v) for k, v in (live.get("Variables") or {}).items()}
        return self.environment(config, qualifier)

    def desired_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The snapshot configuration with the drops and overrides applied (normalised form)."""
        out = dict(config)
        if self.i.role:
            out["Role"] = self.i.role
        for drop, keys in (
            ("vpc", ("VpcConfig", "FileSystemConfigs")),
            ("layers", ("Layers",)),
            ("kms-key", ("KMSKeyArn",)),
            ("dead-letter", ("DeadLetterConfig",)),
        ):
            if drop in self.drops:
                for key in keys:
                    out.pop(key, None)
        if "environment" in self.drops:
            out.pop("EnvironmentVariables", None)
        return out

    # attachments ------------------------------------------------------------------------------

    def version_of(self, qualifier: str) -> str | Ref:
        return _qualified(self.target.name, qualifier, self.mapping)

    def aliases(self) -> None:
        t = self.target
        current = {a["Name"]: a for a in (self.i.current.view["aliases"] if self.i.current else [])}
        wanted = {str(a["Name"]): a for a in self.doc.get("aliases") or []}
        for name, alias in sorted(wanted.items()):
            version = self.version_of(str(alias["FunctionVersion"]))
            weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
            params: dict[str, Any] = {
                "FunctionName": t.name,
                "Name": name,
                "FunctionVersion": version,
                "Description": alias.get("Description", ""),
                "RoutingConfig": {
                    "AdditionalVersionWeights": {
                        self.version_of(str(v)): w for v, w in weights.items()
                    }
                },
            }
            was = f"version {alias['FunctionVersion']} in the snapshot"
            have = current.get(name)
            if have is None:
                self.step("create", f"alias {name}", was, Call("lambda", "create_alias", params))
            elif not isinstance(version, Ref) and _alias_same(have, alias, version, self.mapping):
                continue
            else:
                self.step("update", f"alias {name}", was, Call("lambda", "update_alias", params))
        for name in sorted(set(current) - set(wanted)):
            self.step(
                "delete",
                f"alias {name}",
                "not in the snapshot",
                Call("lambda", "delete_alias", {"FunctionName": t.name, "Name": name}),
            )

    def permissions(self) -> None:
        t = self.target
        if "permissions" in self.drops:
            return
        wanted = statements(self.doc)
        have = _current_statements(self.i.current)
        for (qualifier, sid), st in sorted(wanted.items()):
            params, why = statement_params(st)
            where = "" if qualifier == lc.LATEST else f" on {qualifier}"
            if params is None:
                self.warn("permissions", f"statement {sid}{where} cannot be recreated: {why}")
                continue
            if qualifier != lc.LATEST:
                params["Qualifier"] = self.version_of(qualifier)
            existing = have.get((qualifier, sid))
            if existing is not None:
                same, _ = statement_params(existing)
                if same is not None and same == {
                    k: v for k, v in params.items() if k != "Qualifier"
                }:
                    continue
                self.step(
                    "delete",
                    f"permission {sid}{where}",
                    "differs from the snapshot",
                    Call("lambda", "remove_permission", _remove(t.name, sid, qualifier)),
                )
            principal = params.get("Principal")
            self.step(
                "create",
                f"permission {sid}{where}",
                f"{params.get('Action')} for {principal}",
                Call("lambda", "add_permission", {"FunctionName": t.name, **params}),
            )
        for qualifier, sid in sorted(set(have) - set(wanted)):
            where = "" if qualifier == lc.LATEST else f" on {qualifier}"
            self.step(
                "delete",
                f"permission {sid}{where}",
                "not in the snapshot",
                Call("lambda", "remove_permission", _remove(t.name, sid, qualifier)),
            )

    def concurrency(self) -> None:
        t = self.target
        wanted = self.doc.get("reserved_concurrency")
        have = self.i.current.parts.reserved_concurrency if self.i.current else None
        if wanted == have:
            return
        if wanted is None:
            self.step(
                "delete",
                "reserved concurrency",
                f"was {have}",
                Call("lambda", "delete_function_concurrency", {"FunctionName": t.name}),
            )
            return
        self.step(
            "update" if have is not None else "create",
            "reserved concurrency",
            str(wanted),
            Call(
                "lambda",
                "put_function_concurrency",
                {"FunctionName": t.name, "ReservedConcurrentExecutions": wanted},
            ),
        )

    def urls(self) -> None:
        t = self.target
        wanted: dict[str, Mapping[str, Any]] = {}
        if self.doc.get("url"):
            wanted[lc.LATEST] = self.doc.get("url")
        for alias, url in (self.doc.get("alias_urls") or {}).items():
            if url:
                wanted[str(alias)] = url
        have: dict[str, Mapping[str, Any]] = {}
        if self.i.current is not None:
            view = self.i.current.view
            if view.get("url"):
                have[lc.LATEST] = view["url"]
            have.update({a: u for a, u in (view.get("alias_urls") or {}).items() if u})
        if "url" in self.drops:
            wanted = {}
        for qualifier, url in sorted(wanted.items()):
            params: dict[str, Any] = {"FunctionName": t.name, **url}
            if qualifier != lc.LATEST:
                params["Qualifier"] = qualifier
            where = "" if qualifier == lc.LATEST else f" of {qualifier}"
            if qualifier not in have:
                self.step(
                    "create",
                    f"function URL{where}",
                    f"auth {url.get('AuthType')}",
                    Call("lambda", "create_function_url_config", params),
                )
            elif have[qualifier] != url:
                self.step(
                    "update",
                    f"function URL{where}",
                    f"auth {url.get('AuthType')}",
                    Call("lambda", "update_function_url_config", params),
                )
        for qualifier in sorted(set(have) - set(wanted)):
            params = {"FunctionName": t.name}
            if qualifier != lc.LATEST:
                params["Qualifier"] = qualifier
            self.step(
                "delete",
                "function URL" + ("" if qualifier == lc.LATEST else f" of {qualifier}"),
                "not in the snapshot",
                Call("lambda", "delete_function_url_config", params),
            )

    def destination(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        dest = config.get("DestinationConfig")
        if not dest:
            return None
        if "destinations" in self.drops:
            return None
        for kind in ("OnSuccess", "OnFailure"):
            arn = (dest.get(kind) or {}).get("Destination")
            if arn and _elsewhere(str(arn), self.target):
                self.problem(
                    "destinations", f"{kind} destination {arn} is elsewhere", "destinations"
                )
        return dict(dest)

    def invoke_configs(self) -> None:
        t = self.target
        wanted = {str(c["Qualifier"]): c for c in self.doc.get("event_invoke_configs") or []}
        if not wanted and self.doc.get("invoke_config"):
            wanted[lc.LATEST] = {"Qualifier": lc.LATEST, **self.doc.get("invoke_config")}
        have: dict[str, Mapping[str, Any]] = {}
        if self.i.current is not None:
            view = self.i.current.view
            have = {str(c["Qualifier"]): c for c in view.get("event_invoke_configs") or []}
            if not have and view.get("invoke_config"):
                have[lc.LATEST] = {"Qualifier": lc.LATEST, **view["invoke_config"]}
        for qualifier, config in sorted(wanted.items()):
            params: dict[str, Any] = {"FunctionName": t.name}
            for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
                if key in config:
                    params[key] = config[key]
            dest = self.destination(config)
            if dest:
                params["DestinationConfig"] = dest
            if len(params) == 1:  # nothing left once destinations were dropped: AWS's defaults
                continue
            if qualifier != lc.LATEST:
                params["Qualifier"] = self.version_of(qualifier)
            if have.get(qualifier) == config and isinstance(params.get("Qualifier", ""), str):
                continue
            where = "" if qualifier == lc.LATEST else f" of {qualifier}"
            self.step(
                "update" if qualifier in have else "create",
                f"event invoke config{where}",
                ", ".join(f"{k}={v}" for k, v in params.items() if k.startswith("Maximum")),
                Call("lambda", "put_function_event_invoke_config", params),
            )
        for qualifier in sorted(set(have) - set(wanted)):
            params = {"FunctionName": t.name}
            if qualifier != lc.LATEST:
                params["Qualifier"] = qualifier
            self.step(
                "delete",
                "event invoke config" + ("" if qualifier == lc.LATEST else f" of {qualifier}"),
                "not in the snapshot",
                Call("lambda", "delete_function_event_invoke_config", params),
            )

    def provisioned(self) -> None:
        t = self.target
        wanted = {
            str(c["Qualifier"]): int(c["ProvisionedConcurrentExecutions"])
            for c in self.doc.get("provisioned_concurrency") or []
        }
        if "provisioned-concurrency" in self.drops:
            wanted = {}
        have = {}
        if self.i.current is not None:
            have = {
                str(c["Qualifier"]): int(c["ProvisionedConcurrentExecutions"])
                for c in self.i.current.view["provisioned_concurrency"]
            }
        for qualifier, n in sorted(wanted.items()):
            target_q = self.version_of(qualifier)
            if have.get(qualifier) == n and not isinstance(target_q, Ref):
                continue
            self.step(
                "create" if qualifier not in have else "update",
                f"provisioned concurrency of {qualifier}",
                str(n),
                Call(
                    "lambda",
                    "put_provisioned_concurrency_config",
                    {
                        "FunctionName": t.name,
                        "Qualifier": target_q,
                        "ProvisionedConcurrentExecutions": n,
                    },
                ),
            )
        for qualifier in sorted(set(have) - set(wanted)):
            self.step(
                "delete",
                f"provisioned concurrency of {qualifier}",
                "not in the snapshot",
                Call(
                    "lambda",
                    "delete_provisioned_concurrency_config",
                    {"FunctionName": t.name, "Qualifier": qualifier},
                ),
            )

    def desired_tags(self) -> dict[str, str]:
        tags = {k: v for k, v in (self.doc.get("tags") or {}).items() if not k.startswith(_AWS_TAG)}
        skipped = sorted(k for k in self.doc.get("tags") or {} if k.startswith(_AWS_TAG))
        if skipped and not any("aws: tags" in n for n in self.plan.notes):
            self.plan.notes.append(
                f"aws: tags cannot be set and are not restored: {', '.join(skipped)}"
            )
        return tags

    def tags(self) -> None:
        if self.i.current is None:
            return  # set with CreateFunction
        t = self.target
        wanted = self.desired_tags()
        have = {
            k: v for k, v in (self.i.current.parts.tags or {}).items() if not k.startswith(_AWS_TAG)
        }
        changed = {k: v for k, v in wanted.items() if have.get(k) != v}
        extra = sorted(set(have) - set(wanted))
        if changed:
            self.step(
                "update",
                "tags",
                ", ".join(sorted(changed)),
                Call("lambda", "tag_resource", {"Resource": t.arn, "Tags": changed}),
            )
        if extra:
            self.step(
                "delete",
                "tags",
                ", ".join(extra),
                Call("lambda", "untag_resource", {"Resource": t.arn, "TagKeys": extra}),
            )

    def mappings(self) -> None:
        t = self.target
        wanted = list(self.doc.get("event_source_mappings") or [])
        if "event-sources" in self.drops:
            wanted = []
        have: list[tuple[str, Mapping[str, Any]]] = []
        existing_raw: tuple[Mapping[str, Any], ...] = self.i.orphan_mappings
        if self.i.current is not None:
            existing_raw = tuple(self.i.current.parts.event_source_mappings)
        elif existing_raw:
            self.plan.notes.append(
                f"{len(existing_raw)} event source mapping(s) of the deleted function still exist: "
                "they are updated, not duplicated"
            )
        for raw in existing_raw:
            have.append((str(raw.get("UUID") or ""), lc.normalise_mapping(raw, t.name)))
        matched: set[str] = set()
        for m in wanted:
            source = str(m.get("EventSourceArn") or "self-managed")
            if m.get("EventSourceArn") and _elsewhere(str(m["EventSourceArn"]), t):
                self.problem(
                    "event-sources",
                    f"event source {source} is in another region than {t.region}",
                    "event-sources",
                )
            qualifier = str(m.get("Qualifier") or lc.LATEST)
            function: str | Ref = t.name
            same_target = True
            if qualifier != lc.LATEST:
                q = self.version_of(qualifier)
                function = Ref("function-version", q.key) if isinstance(q, Ref) else f"{t.name}:{q}"
                same_target = q == qualifier
            params: dict[str, Any] = {
                k: v for k, v in m.items() if k not in ("Qualifier", "Enabled", "DestinationConfig")
            }
            dest = self.destination(m)
            if dest:
                params["DestinationConfig"] = dest
            enabled = bool(m.get("Enabled", True)) and self.same_place
            params["Enabled"] = enabled
            existing = next(
                (
                    uuid
                    for uuid, h in have
                    if uuid not in matched
                    and h.get("EventSourceArn") == m.get("EventSourceArn")
                    and h.get("Qualifier") == qualifier
                ),
                None,
            )
            state = "enabled" if enabled else "disabled"
            if existing is None:
                self.step(
                    "create",
                    f"event source mapping from {source}",
                    state,
                    Call(
                        "lambda",
                        "create_event_source_mapping",
                        {"FunctionName": function, **params},
                    ),
                )
                continue
            matched.add(existing)
            have_m = next(h for uuid, h in have if uuid == existing)
            if same_target and have_m == {**m, "Enabled": enabled}:
                continue
            update = {
                k: v
                for k, v in params.items()
                if k
                not in (
                    "EventSourceArn",
                    "StartingPosition",
                    "StartingPositionTimestamp",
                    "SelfManagedEventSource",
                    "Topics",
                    "Queues",
                    "AmazonManagedKafkaEventSourceConfig",
                    "SelfManagedKafkaEventSourceConfig",
                )
            }
            self.step(
                "update",
                f"event source mapping {existing} from {source}",
                state,
                Call(
                    "lambda",
                    "update_event_source_mapping",
                    {"UUID": existing, "FunctionName": function, **update},
                ),
            )
        for uuid, h in have:
            if uuid in matched or not uuid:
                continue
            self.step(
                "delete",
                f"event source mapping {uuid} from {h.get('EventSourceArn', 'self-managed')}",
                "not in the snapshot",
                Call("lambda", "delete_event_source_mapping", {"UUID": uuid}),
            )


def _stage_key(config: Mapping[str, Any]) -> str:
    ignore = {"Version", "RevisionId", "Description"}
    return lc.digest({k: v for k, v in config.items() if k not in ignore})


def _alias_same(
    have: Mapping[str, Any], want: Mapping[str, Any], version: str, mapping: Mapping[str, Any]
) -> bool:
    if str(have.get("FunctionVersion")) != version:
        return False
    if (have.get("Description") or "") != (want.get("Description") or ""):
        return False
    hw = (have.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    ww = (want.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    mapped = {str(mapping.get(str(k), k)): v for k, v in ww.items()}
    return {str(k): float(v) for k, v in hw.items()} == mapped


def _remove(name: str, sid: str, qualifier: str) -> dict[str, Any]:
    params = {"FunctionName": name, "StatementId": sid}
    if qualifier != lc.LATEST:
        params["Qualifier"] = qualifier
    return params


def _clear_absent(update: dict[str, Any]) -> None:
    """UpdateFunctionConfiguration keeps what is not sent: send empty values to remove."""
    update.setdefault("VpcConfig", {"SubnetIds": [], "SecurityGroupIds": []})
    update.setdefault("Layers", [])
    update.setdefault("KMSKeyArn", "")
    update.setdefault("DeadLetterConfig", {"TargetArn": ""})
    update.setdefault("FileSystemConfigs", [])


def _describe_config(config: Mapping[str, Any], qualifier: str) -> str:
    bits = [
        str(config.get("Runtime") or config.get("PackageType") or ""),
        f"{config.get('MemorySize')} MB",
        f"{config.get('Timeout')} s",
    ]
    if qualifier != lc.LATEST:
        bits.append(f"as version {qualifier} was")
    return ", ".join(b for b in bits if b and not b.startswith("None"))


def build_plan(inputs: RestoreInputs) -> Plan:
    return Planner(inputs).build()


def render_plan(plan: Plan, *, snapshot: str, dry_run: bool) -> Iterable[str]:
    t = plan.target
    yield f"Restore {snapshot}"
    yield f"     to {t.arn}"
    if plan.version_map:
        reused = ", ".join(f"{a}->{b}" for a, b in sorted(plan.version_map.items()))
        yield f"  versions reused: {reused}"
    for note in plan.notes:
        yield f"  note: {note}"
    for p in plan.warnings:
        yield f"  warning ({p.part}): {p.message}"
    for p in plan.blocking:
        fix = f" — or pass --drop {p.drop} to restore without it" if p.drop else ""
        yield f"  BLOCKING ({p.part}): {p.message}{fix}"
    if not plan.steps:
        yield "  nothing to change: the function already matches the snapshot"
    for i, s in enumerate(plan.steps, 1):
        detail = f" ({s.detail})" if s.detail else ""
        yield f"  {i:>3}. {s.action:<7} {s.what}{detail}"
    if plan.blocking:
        yield f"  refused: {len(plan.blocking)} blocking problem(s); nothing was changed"
    elif dry_run:
        yield f"  dry run: {len(plan.steps)} change(s) planned, nothing was changed"
