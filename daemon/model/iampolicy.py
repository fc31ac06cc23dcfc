"""IAM and resource-based policy documents as values, with the little evaluation controls need.

Parsing is strict about shape but forgiving about AWS's many spellings (a string or a list, a
Statement that is one object, URL-encoded documents from IAM). A document that cannot be read raises
`PolicyParseError`; collectors keep that as a per-resource error, so a weird document never crashes
a sweep and is never mistaken for a compliant one.
"""

from __future__ import annotations

import fnmatch
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

PUBLIC = "*"


class PolicyParseError(ValueError):
    """A policy document is not valid JSON or not shaped like a policy."""


@dataclass(frozen=True, slots=True)
class Statement:
    effect: str  # "Allow" | "Deny"
    sid: str = ""
    principals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    principal_is_wildcard: bool = False  # "Principal": "*"
    has_not_principal: bool = False
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] | None = None
    # operator -> condition key (lower-cased) -> values
    conditions: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def allow(self) -> bool:
        return self.effect == "Allow"

    def all_principals(self) -> tuple[str, ...]:
        out: list[str] = []
        for values in self.principals.values():
            out.extend(values)
        return tuple(out)

    @property
    def is_public(self) -> bool:
        """Anyone may be the principal (before conditions are considered)."""
        if self.principal_is_wildcard or self.has_not_principal:
            return True
        return PUBLIC in self.principals.get("AWS", ())

    @property
    def service_principals(self) -> tuple[str, ...]:
        return self.principals.get("Service", ())

    @property
    def aws_principals(self) -> tuple[str, ...]:
        return self.principals.get("AWS", ())

    def condition_values(self, key: str) -> tuple[str, ...]:
        """Every value given for a condition key, whatever the operator (case-insensitive key)."""
        key = key.lower()
        out: list[str] = []
        for by_key in self.conditions.values():
            out.extend(by_key.get(key, ()))
        return tuple(out)

    def has_restricting_condition(self, keys: Iterable[str]) -> bool:
        """True when one of `keys` is constrained to something narrower than a bare wildcard.

        Only positive operators narrow who may use the statement: a negated operator (StringNot*,
        ArnNot*) admits everyone but one value, Null only tests presence, and ...IfExists is true
        for every caller that does not carry the key.
        """
        wanted = {k.lower() for k in keys}
        for operator, by_key in self.conditions.items():
            if not _narrowing_operator(operator):
                continue
            for key, values in by_key.items():
                if key in wanted and values and not all(v.strip() in ("*", "") for v in values):
                    return True
        return False

    def matches_action(self, action: str) -> bool:
        if self.not_actions is not None:
            return not any(action_matches(p, action) for p in self.not_actions)
        return any(action_matches(p, action) for p in self.actions)

    def matches_resource(self, resource: str) -> bool:
        if self.not_resources is not None:
            return not any(resource_matches(p, resource) for p in self.not_resources)
        return any(resource_matches(p, resource) for p in self.resources)


def _narrowing_operator(operator: str) -> bool:
    base = operator.split(":", 1)[-1]  # ForAnyValue:/ForAllValues: prefixes
    return not (base == "Null" or base.endswith("IfExists") or "Not" in base)


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    statements: tuple[Statement, ...]

    def allows(self, action: str, resource: str) -> bool:
        return allows([self], action, resource)


def _as_tuple(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
        return tuple(str(v) for v in value)
    if isinstance(value, int | float | bool):
        return (str(value),)
    raise PolicyParseError(f"{what} must be a string or a list of strings")


def _load_json(document: str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(document, Mapping):
        return document
    if not isinstance(document, str):
        raise PolicyParseError("policy document is neither JSON text nor an object")
    text = document.strip()
    if text.startswith("%7B") or text.startswith("%7b"):
        text = urllib.parse.unquote(text)
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyParseError(f"policy document is not valid JSON: {exc.msg}") from None
    if not isinstance(loaded, dict):
        raise PolicyParseError("policy document is not a JSON object")
    return loaded


def _parse_principal(raw: Any) -> tuple[dict[str, tuple[str, ...]], bool]:
    if raw is None:
        return {}, False
    if raw == PUBLIC:
        return {}, True
    if isinstance(raw, Mapping):
        out: dict[str, tuple[str, ...]] = {}
        for kind, values in raw.items():
            out[str(kind)] = _as_tuple(values, f"Principal.{kind}")
        return out, False
    raise PolicyParseError("Principal must be '*' or an object")


def _parse_conditions(raw: Any) -> dict[str, Mapping[str, tuple[str, ...]]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PolicyParseError("Condition must be an object")
    out: dict[str, Mapping[str, tuple[str, ...]]] = {}
    for operator, by_key in raw.items():
        if not isinstance(by_key, Mapping):
            raise PolicyParseError(f"Condition.{operator} must be an object")
        out[str(operator)] = MappingProxyType(
            {str(k).lower(): _as_tuple(v, f"Condition.{operator}.{k}") for k, v in by_key.items()}
        )
    return out


def parse_statement(raw: Any) -> Statement:
    if not isinstance(raw, Mapping):
        raise PolicyParseError("a Statement entry is not an object")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyParseError(f"Statement Effect must be Allow or Deny, not {effect!r}")
    principals, wildcard = _parse_principal(raw.get("Principal"))
    has_not_principal = raw.get("NotPrincipal") is not None
    not_actions = _as_tuple(raw["NotAction"], "NotAction") if "NotAction" in raw else None
    not_resources = _as_tuple(raw["NotResource"], "NotResource") if "NotResource" in raw else None
    return Statement(
        effect=effect,
        sid=str(raw.get("Sid", "")),
        principals=MappingProxyType(principals),
        principal_is_wildcard=wildcard,
        has_not_principal=has_not_principal,
        actions=_as_tuple(raw.get("Action"), "Action"),
        not_actions=not_actions,
        resources=_as_tuple(raw.get("Resource"), "Resource"),
        not_resources=not_resources,
        conditions=MappingProxyType(_parse_conditions(raw.get("Condition"))),
    )


def parse_policy(document: str | Mapping[str, Any]) -> PolicyDocument:
    """Parse a policy document (JSON text, URL-encoded JSON, or an already decoded object)."""
    loaded = _load_json(document)
    raw_statements = loaded.get("Statement")
    if raw_statements is None:
        raise PolicyParseError("policy document has no Statement")
    if isinstance(raw_statements, Mapping):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list):
        raise PolicyParseError("Statement must be an object or a list")
    return PolicyDocument(tuple(parse_statement(s) for s in raw_statements))


@lru_cache(maxsize=4096)
def _glob_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # IAM wildcards are * and ?; fnmatch would also treat [ ] specially, so escape those first.
    escaped = pattern.replace("[", "\x00").replace("]", "\x01")
    translated = fnmatch.translate(escaped).replace("\x00", r"\[").replace("\x01", r"\]")
    return re.compile(translated, re.IGNORECASE if ignore_case else 0)


def action_matches(pattern: str, action: str) -> bool:
    """IAM action match: case-insensitive, `*` and `?` wildcards."""
    return _glob_regex(pattern, True).match(action) is not None


def resource_matches(pattern: str, resource: str) -> bool:
    """IAM resource match: case-sensitive, `*` and `?` wildcards (policy variables unsupported)."""
    if pattern == "*":
        return True
    return _glob_regex(pattern, False).match(resource) is not None


def allows(documents: Iterable[PolicyDocument], action: str, resource: str) -> bool:
    """Identity-policy evaluation, simplified: some Allow matches and no Deny does.

    Conditions are not evaluated: a conditional Allow counts as an Allow and a conditional Deny is
    ignored. That is the generous reading, suited to "may this role do X at all".
    """
    allowed = False
    for doc in documents:
        for st in doc.statements:
            if not (st.matches_action(action) and st.matches_resource(resource)):
                continue
            if not st.allow and not st.conditions:
                return False
            if st.allow:
                allowed = True
    return allowed
