"""What several services' controls share: condition keys, parameter models and small helpers.

Lambda functions, ECR repositories and ECS task definitions ask the same questions (is a resource
policy public? does an environment hold a secret?), so the vocabulary lives here once.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

from pydantic import AfterValidator, Field

from daemon.controls.registry import Outcome, Params, failed, passed
from daemon.model.awslambda import ConfigRecorder
from daemon.model.iampolicy import Statement
from daemon.model.secrets import DETECTORS, PRECISE_DETECTORS, EnvVar

# Condition keys that narrow who can use a statement with a public principal.
RESTRICTING_KEYS = (
    "aws:SourceArn",
    "aws:SourceAccount",
    "aws:SourceOwner",
    "aws:SourceOrgID",
    "aws:SourceOrgPaths",
    "aws:PrincipalOrgID",
    "aws:PrincipalOrgPaths",
    "aws:PrincipalAccount",
    "aws:PrincipalArn",
    "aws:SourceVpc",
    "aws:SourceVpce",
    "lambda:EventSourceToken",
)
# Condition keys that protect a service principal against the confused-deputy problem.
SOURCE_KEYS = ("aws:SourceArn", "aws:SourceAccount", "aws:SourceOrgID", "aws:SourceOrgPaths")
# Condition keys whose values name the accounts a (public-principal) statement is limited to.
ACCOUNT_KEYS = ("aws:PrincipalAccount", "aws:SourceAccount", "aws:SourceOwner")


def short(items: Sequence[str], limit: int = 3) -> str:
    """The first few items, and how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def glob_any(name: str, patterns: Iterable[str]) -> bool:
    """Case-sensitive shell-style match against any of the patterns."""
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def tags_match(wanted: Mapping[str, str], tags: Mapping[str, str]) -> bool:
    """Every wanted tag is present and its value matches the glob (an empty wanted set matches)."""
    return all(k in tags and fnmatch.fnmatchcase(tags[k], v) for k, v in wanted.items())


def account_of(principal: str) -> str | None:
    """The account of an AWS principal: a bare account id or an ARN; None for anything else."""
    if principal.isdigit() and len(principal) == 12:
        return principal
    parts = principal.split(":")
    if len(parts) >= 5 and parts[0] == "arn":
        return parts[4] or None
    return None


def foreign_accounts(st: Statement, own: str, allowed: Iterable[str]) -> list[str]:
    """Accounts other than `own` and `allowed` that an Allow statement grants access to.

    Counts AWS principals (account ids or ARNs) and, for a public principal narrowed by
    aws:PrincipalAccount / aws:SourceAccount, the accounts named in that condition.
    """
    ok = {own, *allowed}
    accounts = [account_of(p) for p in st.aws_principals if p != "*"]
    if st.is_public:
        accounts += [v for key in ACCOUNT_KEYS for v in st.condition_values(key)]
    return sorted({a for a in accounts if a is not None and a not in ok and a != "*"})


# --- secrets in environment variables -----------------------------------------------------------


def valid_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


def known_detector(name: str) -> str:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return name


Regex = Annotated[str, AfterValidator(valid_regex)]
Detector = Annotated[str, AfterValidator(known_detector)]


class EnvSecretsParams(Params):
    name_patterns: list[Regex] = Field(
        default=[
            r"(?i)pass(word|wd)?",
            r"(?i)secret",
            r"(?i)token",
            r"(?i)api[_-]?key",
            r"(?i)private[_-]?key",
            r"(?i)credential",
            r"(?i)(^|_)auth($|_)",
        ],
        description="Regular expressions for variable names that must not hold a literal value.",
    )
    ignore_name_suffixes: list[str] = Field(
        default=["_ARN", "_NAME", "_ID", "_PATH", "_PARAM", "_PARAMETER", "_REGION", "_TTL"],
        description="Names ending so refer to a secret rather than hold one.",
    )
    value_detectors: list[Detector] = Field(
        default=list(PRECISE_DETECTORS),
        description="Value detectors that count (add 'high_entropy' for a stricter scan).",
    )


def secret_hits(
    env: Iterable[EnvVar], p: EnvSecretsParams, forbidden_names: Iterable[str] = ()
) -> list[str]:
    """Variables that look like they hold a secret, each with the reason (never the value)."""
    detectors = set(p.value_detectors)
    patterns = [re.compile(pat) for pat in p.name_patterns]
    suffixes = tuple(s.upper() for s in p.ignore_name_suffixes)
    forbidden = {n.upper() for n in forbidden_names}
    hits: list[str] = []
    for var in env:
        if not var.has_value or var.is_reference:
            continue
        kinds = sorted(var.value_kinds & detectors)
        if kinds:
            hits.append(f"{var.name} (value looks like {'/'.join(kinds)})")
        elif var.name.upper() in forbidden:
            hits.append(f"{var.name} (must never hold a literal value)")
        elif any(pat.search(var.name) for pat in patterns) and not var.name.upper().endswith(
            suffixes
        ):
            hits.append(f"{var.name} (name suggests a secret)")
    return hits


def config_recording(recorders: Sequence[ConfigRecorder], resource_types: Sequence[str]) -> Outcome:
    """Whether the account-region's AWS Config recorders record every one of the resource types
    (the region-wide check of each service that needs a configuration history)."""
    if not recorders:
        return failed("no AWS Config recorder")
    missing = [t for t in resource_types if not any(r.records(t) for r in recorders)]
    if missing:
        states = ", ".join(
            f"{r.name} {'recording' if r.recording else 'stopped'}" for r in recorders
        )
        return failed(f"not recorded: {', '.join(missing)} ({states})")
    return passed(f"recording {', '.join(resource_types)}")
