"""Values shared by every layer: targets, findings and the resource snapshots collectors produce.

Everything here is immutable. Collectors build snapshots; controls read them; the state store keeps
them. No I/O and no clock in this module.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Higher is more severe."""
        return _SEVERITY_RANK[self]

    def at_least(self, other: Severity) -> bool:
        return self.rank >= other.rank


_SEVERITY_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"  # the control could not be evaluated; never folded into pass


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """One unit of reconcile work: a service in one region of one account."""

    account_id: str
    region: str
    service: str

    @property
    def key(self) -> str:
        return f"{self.account_id}/{self.region}/{self.service}"

    def __str__(self) -> str:
        return self.key


class Resource(Protocol):
    """What every snapshot item offers to the evaluation engine."""

    @property
    def arn(self) -> str: ...

    @property
    def resource_type(self) -> str: ...

    @property
    def tags(self) -> Mapping[str, str]: ...

    @property
    def errors(self) -> Mapping[str, str]: ...


class Snapshot(Protocol):
    """The actual state of one target, as a collector saw it."""

    @property
    def target(self) -> Target: ...

    @property
    def collected_at(self) -> datetime: ...

    def resources(self, resource_type: str) -> Sequence[Resource]: ...

    def resource_counts(self) -> Mapping[str, int]: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of one control on one resource."""

    resource: str
    resource_type: str
    account_id: str
    region: str
    service: str
    control: str
    severity: Severity
    status: Status
    evidence: str
    exempted: bool = False
    exemption_reason: str | None = None
    exemption_expired: bool = False  # an exemption matched but has expired: it does not apply

    @property
    def violating(self) -> bool:
        """A failure that no active exemption covers."""
        return self.status is Status.FAIL and not self.exempted

    def as_dict(self) -> dict[str, object]:
        return {
            "resource": self.resource,
            "resource_type": self.resource_type,
            "aws_account_id": self.account_id,
            "aws_region": self.region,
            "aws_service": self.service,
            "control": self.control,
            "severity": self.severity.value,
            "status": self.status.value,
            "exempted": self.exempted,
            "exemption_reason": self.exemption_reason,
            "exemption_expired": self.exemption_expired,
            "evidence": self.evidence,
        }


def frozen_tags(tags: Mapping[str, str] | None) -> Mapping[str, str]:
    if not tags:
        return EMPTY_TAGS
    return MappingProxyType({str(k): str(v) for k, v in tags.items()})


def frozen_errors(errors: Mapping[str, str] | None) -> Mapping[str, str]:
    if not errors:
        return EMPTY_TAGS
    return MappingProxyType(dict(errors))


@dataclass(frozen=True, slots=True)
class ArnParts:
    partition: str
    service: str
    region: str
    account_id: str
    resource: str


def parse_arn(arn: str) -> ArnParts | None:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    return ArnParts(parts[1], parts[2], parts[3], parts[4], parts[5])


@dataclass(frozen=True, slots=True)
class CollectionIssue:
    """A problem with the data of one resource that did not stop the sweep (logged once)."""

    resource: str
    aspect: str
    message: str


@dataclass(frozen=True, slots=True)
class RegionResource:
    """The account-region itself, for region-wide controls (AWS Config, CloudTrail)."""

    arn: str
    account_id: str
    region: str
    resource_type: str = "account-region"
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)


def region_resource_id(account_id: str, region: str) -> str:
    """A stable identifier for an account-region (there is no AWS ARN for one)."""
    return f"arn:aws::{region}:{account_id}:account-region"
