"""The normalised form of a Lambda function's configuration, and its fingerprints.

One definition, used by three readers that must agree: the Lambda collector (every sweep, from
ListFunctions and the per-function calls it makes anyway), the configuration export (from its own
full read) and restore (to compare what it made with what the snapshot holds).

Normalising keeps what describes the function and can be set through the API, and drops what
changes by itself (State, LastUpdateStatus, allocation progress, timestamps of reads) or differs
between ListFunctions and GetFunction (FunctionArn with `:$LATEST`, RuntimeVersionConfig). It never
keeps an environment variable's value: only its name.

- `base_fingerprint(parts)`: digest of what a sweep reads anyway (configuration including
  RevisionId and CodeSha256, published versions, tags, reservations, the function policy, aliases,
  function URL, invoke config, provisioned concurrency, code signing). Where AWS gives a RevisionId
  it is part of the configuration; moto does not, and the digest of the normalised configuration
  stands in for it.
- `fingerprint(base, mappings)`: the base plus the function's event source mappings. A change of
  any of these produces a new snapshot.
- `revision(parts)`: digest of everything a snapshot holds (also alias-level permissions, URLs and
  invoke configs), the suffix of a snapshot's key.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LATEST = "$LATEST"

# Esm states that mean "enabled" (the others are Disabled / Disabling / Deleting).
_ENABLED_STATES = frozenset({"Enabled", "Enabling", "Creating", "Updating"})

_ESM_KEYS = (
    "EventSourceArn",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "ParallelizationFactor",
    "StartingPosition",
    "StartingPositionTimestamp",
    "DestinationConfig",
    "Topics",
    "Queues",
    "SourceAccessConfigurations",
    "SelfManagedEventSource",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "TumblingWindowInSeconds",
    "FunctionResponseTypes",
    "AmazonManagedKafkaEventSourceConfig",
    "SelfManagedKafkaEventSourceConfig",
    "ScalingConfig",
    "DocumentDBEventSourceConfig",
    "FilterCriteria",
    "KMSKeyArn",
    "MetricsConfig",
    "ProvisionedPollerConfig",
)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def digest(value: Any, length: int = 20) -> str:
    """A short hex digest of a JSON-able value (collisions are irrelevant at this length)."""
    return hashlib.sha256(canonical_json(value)).hexdigest()[:length]


def qualifier_of(arn: str, function_name: str) -> str:
    """`$LATEST` for an unqualified ARN of the function, else the alias or version suffix."""
    marker = f":function:{function_name}"
    if marker not in arn:
        return LATEST
    rest = arn.split(marker, 1)[1]
    return rest[1:] if rest.startswith(":") and len(rest) > 1 else LATEST


def _sorted(values: Iterable[Any]) -> list[Any]:
    return sorted(values, key=canonical_json)


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v not in ({}, [])}


def env_names(raw: Mapping[str, Any]) -> list[str] | None:
    """Environment variable names, or None when AWS could not return them (Environment.Error)."""
    env = raw.get("Environment") or {}
    if env.get("Error"):
        return None
    return sorted(str(k) for k in (env.get("Variables") or {}))


def normalise_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A FunctionConfiguration (ListFunctions, GetFunction, a version) without volatile fields and
    without environment values."""
    vpc = raw.get("VpcConfig") or {}
    vpc_out = _drop_empty(
        {
            "SubnetIds": sorted(vpc.get("SubnetIds") or []),
            "SecurityGroupIds": sorted(vpc.get("SecurityGroupIds") or []),
        }
    )
    if vpc_out and vpc.get("Ipv6AllowedForDualStack") is not None:
        vpc_out["Ipv6AllowedForDualStack"] = bool(vpc.get("Ipv6AllowedForDualStack"))
    env = raw.get("Environment") or {}
    image = (raw.get("ImageConfigResponse") or {}).get("ImageConfig") or None
    out: dict[str, Any] = {
        "Runtime": raw.get("Runtime"),
        "Role": raw.get("Role"),
        "Handler": raw.get("Handler"),
        "Description": raw.get("Description", ""),
        "Timeout": raw.get("Timeout"),
        "MemorySize": raw.get("MemorySize"),
        "PackageType": raw.get("PackageType") or "Zip",
        "CodeSha256": raw.get("CodeSha256"),
        "CodeSize": raw.get("CodeSize"),
        "RevisionId": raw.get("RevisionId"),
        "KMSKeyArn": raw.get("KMSKeyArn") or None,
        "VpcConfig": vpc_out or None,
        "DeadLetterConfig": _drop_empty(
            {"TargetArn": (raw.get("DeadLetterConfig") or {}).get("TargetArn") or None}
        )
        or None,
        "TracingConfig": _drop_empty({"Mode": (raw.get("TracingConfig") or {}).get("Mode")})
        or None,
        "Layers": [str(layer.get("Arn")) for layer in raw.get("Layers") or []] or None,
        "FileSystemConfigs": sorted(
            (
                {"Arn": f.get("Arn"), "LocalMountPath": f.get("LocalMountPath")}
                for f in raw.get("FileSystemConfigs") or []
            ),
            key=lambda f: str(f["LocalMountPath"]),
        )
        or None,
        "ImageConfig": image,
        "Architectures": list(raw.get("Architectures") or []) or None,
        "EphemeralStorage": _drop_empty({"Size": (raw.get("EphemeralStorage") or {}).get("Size")})
        or None,
        "SnapStart": _drop_empty({"ApplyOn": (raw.get("SnapStart") or {}).get("ApplyOn")}) or None,
        "LoggingConfig": _drop_empty(dict(raw.get("LoggingConfig") or {})) or None,
        "EnvironmentVariables": env_names(raw),
        "EnvironmentError": (env.get("Error") or {}).get("ErrorCode") if env.get("Error") else None,
    }
    return {k: v for k, v in out.items() if v is not None}


def normalise_version(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {"Version": str(raw.get("Version", "")), **normalise_config(raw)}


def parse_policy(text: str | None) -> list[dict[str, Any]] | None:
    """The statements of a resource policy, sorted by Sid; None without a policy.

    Raises ValueError for a policy that is not JSON with a Statement list.
    """
    if text is None:
        return None
    doc = json.loads(text) if isinstance(text, str) else text
    if not isinstance(doc, dict):
        raise ValueError("policy is not a JSON object")
    statements = doc.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not all(isinstance(s, dict) for s in statements):
        raise ValueError("policy Statement is not a list of objects")
    return sorted(
        (dict(s) for s in statements),
        key=lambda s: (str(s.get("Sid", "")), str(s.get("Resource", ""))),
    )


def normalise_policy(text: str | None) -> Any:
    try:
        return parse_policy(text)
    except ValueError:
        return {"Unparsed": digest(text or "", 64)}  # odd data: changes are still seen


def normalise_alias(raw: Mapping[str, Any]) -> dict[str, Any]:
    weights = (raw.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    out: dict[str, Any] = {
        "Name": str(raw.get("Name", "")),
        "FunctionVersion": str(raw.get("FunctionVersion", "")),
        "Description": raw.get("Description") or "",
    }
    if weights:
        out["RoutingConfig"] = {
            "AdditionalVersionWeights": {str(k): float(v) for k, v in sorted(weights.items())}
        }
    return out


def normalise_url(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not raw:
        return None
    return _drop_empty(
        {
            "AuthType": raw.get("AuthType"),
            "Cors": _drop_empty(dict(raw.get("Cors") or {})) or None,
            "InvokeMode": raw.get("InvokeMode") or "BUFFERED",
        }
    )


def normalise_invoke_config(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not raw:
        return None
    dest = raw.get("DestinationConfig") or {}
    destinations = {
        k: {"Destination": (dest.get(k) or {}).get("Destination")}
        for k in ("OnSuccess", "OnFailure")
        if (dest.get(k) or {}).get("Destination")
    }
    return _drop_empty(
        {
            "MaximumRetryAttempts": raw.get("MaximumRetryAttempts"),
            "MaximumEventAgeInSeconds": raw.get("MaximumEventAgeInSeconds"),
            "DestinationConfig": destinations or None,
        }
    )


def normalise_provisioned(raw: Sequence[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    return sorted(
        (
            {
                "Qualifier": qualifier_of(str(c.get("FunctionArn", "")), name),
                "ProvisionedConcurrentExecutions": int(
                    c.get("RequestedProvisionedConcurrentExecutions") or 0
                ),
            }
            for c in raw
        ),
        key=lambda c: str(c["Qualifier"]),
    )


def normalise_mapping(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    """An event source mapping without its identity (UUID) and transient state."""
    out: dict[str, Any] = {k: raw[k] for k in _ESM_KEYS if raw.get(k) not in (None, [], {})}
    out["Qualifier"] = qualifier_of(str(raw.get("FunctionArn", "")), name)
    out["Enabled"] = str(raw.get("State", "Enabled")) in _ENABLED_STATES
    return out


def mappings_of(raw: Iterable[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """The event source mappings (from a region-wide listing) that invoke this function."""
    out = []
    for m in raw:
        arn = str(m.get("FunctionArn", ""))
        if f":function:{name}" in arn and arn.split(f":function:{name}", 1)[1][:1] in ("", ":"):
            out.append(m)
    return out


def normalise_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in sorted((tags or {}).items())}


@dataclass(frozen=True)
class FunctionParts:
    """Raw AWS answers about one function, as read (environment values included: transient)."""

    configuration: Mapping[str, Any]  # FunctionConfiguration of $LATEST
    versions: Sequence[Mapping[str, Any]] = ()  # FunctionConfiguration of each published version
    tags: Mapping[str, str] = field(default_factory=dict)
    reserved_concurrency: int | None = None
    policy: str | None = None  # GetPolicy (unqualified) Policy text
    aliases: Sequence[Mapping[str, Any]] = ()
    url: Mapping[str, Any] | None = None  # GetFunctionUrlConfig (unqualified)
    invoke_config: Mapping[str, Any] | None = None  # GetFunctionEventInvokeConfig (unqualified)
    provisioned: Sequence[Mapping[str, Any]] = ()  # ListProvisionedConcurrencyConfigs
    code_signing_config_arn: str | None = None
    event_source_mappings: Sequence[Mapping[str, Any]] = ()
    # read by the export only (alias-level attachments): alias -> raw answer
    alias_policies: Mapping[str, str | None] = field(default_factory=dict)
    alias_urls: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    invoke_configs: Sequence[Mapping[str, Any]] = ()  # ListFunctionEventInvokeConfigs

    @property
    def name(self) -> str:
        return str(self.configuration.get("FunctionName", ""))


def base_view(parts: FunctionParts) -> dict[str, Any]:
    """What a sweep reads of a function, normalised (no event source mappings)."""
    name = parts.name
    versions = sorted(
        (normalise_version(v) for v in parts.versions if str(v.get("Version")) != LATEST),
        key=lambda v: (len(v["Version"]), v["Version"]),
    )
    return {
        "configuration": normalise_config(parts.configuration),
        "versions": versions,
        "tags": normalise_tags(parts.tags),
        "reserved_concurrency": parts.reserved_concurrency,
        "policy": normalise_policy(parts.policy),
        "aliases": sorted((normalise_alias(a) for a in parts.aliases), key=lambda a: a["Name"]),
        "url": normalise_url(parts.url),
        "invoke_config": normalise_invoke_config(parts.invoke_config),
        "provisioned_concurrency": normalise_provisioned(parts.provisioned, name),
        "code_signing_config_arn": parts.code_signing_config_arn or None,
    }


def mappings_view(raw: Iterable[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    return _sorted(normalise_mapping(m, name) for m in raw)


def extras_view(parts: FunctionParts) -> dict[str, Any]:
    """Alias-level attachments, read by the export only."""
    name = parts.name
    return {
        "alias_policies": {
            alias: normalise_policy(text)
            for alias, text in sorted(parts.alias_policies.items())
            if text is not None
        },
        "alias_urls": {
            alias: normalise_url(url) for alias, url in sorted(parts.alias_urls.items()) if url
        },
        "event_invoke_configs": sorted(
            (
                {
                    "Qualifier": qualifier_of(str(c.get("FunctionArn", "")), name),
                    **(normalise_invoke_config(c) or {}),
                }
                for c in parts.invoke_configs
            ),
            key=lambda c: str(c["Qualifier"]),
        ),
    }


def base_fingerprint(parts: FunctionParts) -> str:
    return digest(base_view(parts))


def fingerprint(base: str, mappings: Iterable[Mapping[str, Any]], name: str) -> str:
    """The base fingerprint combined with the function's event source mappings."""
    return digest([base, mappings_view(mappings, name)])


def full_view(parts: FunctionParts) -> dict[str, Any]:
    return {
        **base_view(parts),
        "event_source_mappings": mappings_view(parts.event_source_mappings, parts.name),
        **extras_view(parts),
    }


def revision(parts: FunctionParts) -> str:
    """The content digest of a snapshot of these parts (16 hex, the suffix of its key)."""
    return digest(full_view(parts), 16)
