"""The snapshot document (`function.<h>.json`): a function's configuration for restore. Pure.

The document is the normalised view of model/lambdaconfig.py (configuration, versions, tags,
reservations, policies, aliases, URLs, invoke configs, provisioned concurrency, code signing,
event source mappings), plus:

- `environment`: the variable names, and their values only when the export setting allows it, each
  encrypted with KMS (`kms:Encrypt`, encryption context below) — never in plaintext;
- `code`: the deployment packages held in the snapshot, by CodeSha256, and why any is missing.

Environment values are exported for $LATEST and for every version the snapshot refers to (versions
may hold other values). Each is encrypted on its own: plaintext is the byte `v` followed by the
UTF-8 value (so an empty value can be encrypted), with the encryption context
`{"posture-daemon:function": <ARN>, "posture-daemon:qualifier": <$LATEST|version>,
"posture-daemon:variable": <name>}`, and stored base64 under `ciphertexts[qualifier][name]`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.export.manifest import ENV_ENCRYPTED, ENV_OMITTED, ENV_UNREADABLE, FunctionIdentity
from daemon.model import lambdaconfig as lc

DOCUMENT_SCHEMA = 1
CONTEXT_FUNCTION = "posture-daemon:function"
CONTEXT_VARIABLE = "posture-daemon:variable"
CONTEXT_QUALIFIER = "posture-daemon:qualifier"
PLAINTEXT_PREFIX = b"v"


class DocumentError(ValueError):
    """A snapshot document that does not hold what restore needs."""


def encryption_context(function_arn: str, qualifier: str, name: str) -> dict[str, str]:
    return {CONTEXT_FUNCTION: function_arn, CONTEXT_QUALIFIER: qualifier, CONTEXT_VARIABLE: name}


def plaintext_of(value: str) -> bytes:
    return PLAINTEXT_PREFIX + value.encode("utf-8")


def value_of(plaintext: bytes) -> str:
    if not plaintext.startswith(PLAINTEXT_PREFIX):
        raise DocumentError("decrypted environment value has an unknown format")
    return plaintext[len(PLAINTEXT_PREFIX) :].decode("utf-8")


def code_sha_hex(code_sha256: str) -> str:
    """Lambda's CodeSha256 (base64 of the SHA-256 of the package) as hex."""
    try:
        raw = base64.b64decode(code_sha256, validate=True)
    except (binascii.Error, ValueError):
        raise DocumentError(f"CodeSha256 {code_sha256!r} is not base64") from None
    if len(raw) != 32:
        raise DocumentError(f"CodeSha256 {code_sha256!r} is not a SHA-256")
    return raw.hex()


def code_object_name(code_sha256: str) -> str:
    return f"code/{code_sha_hex(code_sha256)}.zip"


def environment_section(
    names: list[str] | None,
    error: str | None,
    ciphertexts: Mapping[str, Mapping[str, str]] | None = None,
    kms_key_id: str | None = None,
) -> dict[str, Any]:
    """`names`: the variables of $LATEST (each version lists its own in its configuration)."""
    if names is None:
        return {"variables": None, "values": ENV_UNREADABLE, "error": error or "unreadable"}
    if ciphertexts is None:
        return {"variables": names, "values": ENV_OMITTED}
    return {
        "variables": names,
        "values": ENV_ENCRYPTED,
        "kms_key_id": kms_key_id,
        "ciphertexts": {q: dict(sorted(c.items())) for q, c in sorted(ciphertexts.items())},
    }


def referenced_versions(view: Mapping[str, Any]) -> list[str]:
    """Published versions something in the snapshot refers to (aliases, their routing,
    provisioned concurrency, invoke configs, event source mappings), in ascending order."""
    refs: set[str] = set()
    for alias in view.get("aliases") or []:
        refs.add(str(alias["FunctionVersion"]))
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        refs.update(str(v) for v in weights)
    for item in (
        *(view.get("provisioned_concurrency") or []),
        *(view.get("event_invoke_configs") or []),
        *(view.get("event_source_mappings") or []),
    ):
        refs.add(str(item.get("Qualifier", "")))
    published = {str(v["Version"]) for v in view.get("versions") or []}
    return sorted((r for r in refs if r in published), key=lambda v: (len(v), v))


def build_document(
    parts: lc.FunctionParts,
    identity: FunctionIdentity,
    *,
    fingerprint: str,
    environment: Mapping[str, Any],
    code: Mapping[str, Any],
    last_modified: str | None,
) -> dict[str, Any]:
    view = lc.full_view(parts)
    return {
        "schema_version": DOCUMENT_SCHEMA,
        "function": {
            "name": identity.name,
            "arn": identity.arn,
            "account_id": identity.account_id,
            "region": identity.region,
            "last_modified": last_modified,
        },
        "revision": lc.revision(parts),
        "fingerprint": fingerprint,
        **view,
        "environment": dict(environment),
        "code": dict(code),
    }


@dataclass(frozen=True)
class Document:
    """A parsed snapshot document, checked for the fields restore uses."""

    raw: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: Any) -> Document:
        if not isinstance(raw, dict):
            raise DocumentError("snapshot document is not a JSON object")
        version = raw.get("schema_version")
        if version != DOCUMENT_SCHEMA:
            raise DocumentError(f"snapshot document schema_version {version!r} is not supported")
        for key, kind in (
            ("function", dict),
            ("configuration", dict),
            ("versions", list),
            ("tags", dict),
            ("aliases", list),
            ("provisioned_concurrency", list),
            ("event_source_mappings", list),
            ("alias_policies", dict),
            ("alias_urls", dict),
            ("event_invoke_configs", list),
            ("environment", dict),
            ("code", dict),
        ):
            if not isinstance(raw.get(key), kind):
                raise DocumentError(f"snapshot document field {key} is missing or not a {kind}")
        for key in ("name", "arn", "account_id", "region"):
            if not isinstance(raw["function"].get(key), str):
                raise DocumentError(f"snapshot document field function.{key} is missing")
        return cls(raw)

    @property
    def name(self) -> str:
        return str(self.raw["function"]["name"])

    @property
    def arn(self) -> str:
        return str(self.raw["function"]["arn"])

    @property
    def account_id(self) -> str:
        return str(self.raw["function"]["account_id"])

    @property
    def region(self) -> str:
        return str(self.raw["function"]["region"])

    @property
    def configuration(self) -> Mapping[str, Any]:
        return self.raw["configuration"]  # type: ignore[no-any-return]

    @property
    def versions(self) -> list[Mapping[str, Any]]:
        return list(self.raw["versions"])

    def version(self, number: str) -> Mapping[str, Any]:
        for v in self.versions:
            if str(v.get("Version")) == number:
                return v
        raise DocumentError(f"snapshot document has no version {number}")

    @property
    def environment(self) -> Mapping[str, Any]:
        return self.raw["environment"]  # type: ignore[no-any-return]

    @property
    def code(self) -> Mapping[str, Any]:
        return self.raw["code"]  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def package(self, code_sha256: str) -> str | None:
        """The object name holding the package with this CodeSha256 (None: not in the snapshot)."""
        found = (self.code.get("packages") or {}).get(code_sha256)
        return str(found["object"]) if isinstance(found, dict) and found.get("object") else None

    def referenced_versions(self) -> list[str]:
        return referenced_versions(self.raw)
