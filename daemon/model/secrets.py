"""Classify a configuration value as "looks like a secret" without keeping the value.

Collectors call `env_var` (or `classify_value`) where they read environment variables and keep
only the result (`EnvVar`), so secret values never travel further than the function that read them.
Lambda functions and ECS container definitions share this reduction.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

# Detector name -> pattern. Names are part of the policy vocabulary (control parameters).
_PATTERNS: dict[str, re.Pattern[str]] = {
    "aws_access_key_id": re.compile(
        r"(?<![A-Z0-9])(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])"
    ),
    "aws_secret_access_key": re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
    "private_key": re.compile(r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}"),
    "github_token": re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "stripe_key": re.compile(r"\b[sr]k_live_[A-Za-z0-9]{20,}"),
    "url_credentials": re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
}

HIGH_ENTROPY = "high_entropy"
DETECTORS: tuple[str, ...] = (*_PATTERNS, HIGH_ENTROPY)
PRECISE_DETECTORS: tuple[str, ...] = tuple(_PATTERNS)

_REFERENCE_PREFIXES = (
    "arn:aws:secretsmanager:",
    "arn:aws:ssm:",
    "arn:aws-us-gov:secretsmanager:",
    "arn:aws-cn:secretsmanager:",
    "{{resolve:",
    "/aws/reference/secretsmanager/",
)


def is_reference(value: str) -> bool:
    """The value names a secret store entry instead of holding the secret."""
    return value.strip().startswith(_REFERENCE_PREFIXES)


def shannon_entropy(value: str) -> float:
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _high_entropy(value: str) -> bool:
    v = value.strip()
    if (
        len(v) < 20
        or any(ch.isspace() for ch in v)
        or v.startswith(("arn:", "http://", "https://"))
    ):
        return False
    classes = sum(
        (
            any(c.islower() for c in v),
            any(c.isupper() for c in v),
            any(c.isdigit() for c in v),
            any(not c.isalnum() for c in v),
        )
    )
    return classes >= 3 and shannon_entropy(v) >= 4.2


def classify_value(value: str | None) -> frozenset[str]:
    """The detectors that match `value`. The caller must drop the value afterwards."""
    if not value or is_reference(value):
        return frozenset()
    kinds = {name for name, pattern in _PATTERNS.items() if pattern.search(value)}
    if "aws_secret_access_key" in kinds and not _high_entropy(value):
        # 40 base64 characters with little variety are more often hashes or ids than keys.
        kinds.discard("aws_secret_access_key")
    if _high_entropy(value):
        kinds.add(HIGH_ENTROPY)
    return frozenset(kinds)


@dataclass(frozen=True, slots=True)
class EnvVar:
    """An environment variable, reduced at the collector: its name and what its value looks like.

    The value itself is dropped where it is read and never stored.
    """

    name: str
    has_value: bool = True  # False for an empty string
    value_kinds: frozenset[str] = frozenset()  # detector names that matched the value
    is_reference: bool = False  # the value points at Secrets Manager / SSM rather than holding data


def env_var(name: object, value: object) -> EnvVar:
    """Reduce one variable to its name and value classes; the caller drops the value."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return EnvVar(
        name=str(name),
        has_value=bool(text),
        value_kinds=classify_value(text),
        is_reference=is_reference(text),
    )
