"""The policy file: the desired state, as pydantic models.

Shape (YAML):

    version: 1
    scope:
      accounts:
        static: [{id: "111111111111", name: prod}]
        organizations: {enabled: true, include: [], exclude: []}
        own_account: false
      regions: [us-east-1, eu-west-1]   # or: all
      services: [lambda]
    controls:
      lambda-timeout-memory-bounds:
        enabled: true
        severity: medium
        params: {max_timeout_seconds: 120}
        overrides:
          - match: {accounts: ["111111111111"], tags: {env: dev}}
            params: {max_timeout_seconds: 900}
    exemptions:
      - controls: [lambda-url-auth]
        resources: ["arn:aws:lambda:*:111111111111:function:public-*"]
        reason: public webhook, reviewed in SEC-123
        expires: 2027-03-31
    reference:
      lambda_runtimes: {python3.10: 2026-06-30}
    concurrency:
      lookback_minutes: 15
      period_seconds: 60
      top_functions: 10
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from daemon.model import Severity
from daemon.model.awslambda import ConcurrencyWindow


def _account_id_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            "quote account ids ('012345678901'): YAML reads unquoted digits as a number "
            "and drops leading zeros"
        )
    return value


AccountId = Annotated[
    str, BeforeValidator(_account_id_text), StringConstraints(pattern=r"^\d{12}$")
]
RegionName = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")]
# Services with a collector and controls. New services are added here with their collector.
ServiceName = Literal["lambda", "ecr", "ecs", "rds"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticAccount(Strict):
    id: AccountId
    name: str | None = None


class OrganizationsScope(Strict):
    enabled: bool = False
    include: list[str] = Field(
        default=[],
        description="Account ids or name globs to scan; empty means all ACTIVE accounts.",
    )
    exclude: list[str] = Field(default=[], description="Account ids or name globs to skip.")
    refresh_seconds: int = Field(default=600, ge=30)


class AccountsScope(Strict):
    static: list[StaticAccount] = []
    organizations: OrganizationsScope = OrganizationsScope()
    own_account: bool = Field(
        default=False,
        description="Also scan the account whose credentials the daemon runs with (no AssumeRole).",
    )

    @model_validator(mode="after")
    def _something_to_scan(self) -> AccountsScope:
        if not self.static and not self.organizations.enabled and not self.own_account:
            raise ValueError(
                "no accounts to scan: list static accounts, enable organizations or set own_account"
            )
        ids = [a.id for a in self.static]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"account listed twice: {', '.join(dupes)}")
        return self


class Scope(Strict):
    accounts: AccountsScope
    regions: list[RegionName] | Literal["all"] = Field(
        description="Regions to scan, or 'all' for the regions enabled in each account."
    )
    services: list[ServiceName] = ["lambda"]

    @field_validator("regions")
    @classmethod
    def _non_empty(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and not v:
            raise ValueError("list at least one region, or use 'all'")
        return v


class OverrideMatch(Strict):
    accounts: list[AccountId] = []
    regions: list[RegionName] = []
    tags: dict[str, str] = Field(
        default={}, description="All of these tags must match (value may be a glob)."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> OverrideMatch:
        if not (self.accounts or self.regions or self.tags):
            raise ValueError("an override must match on accounts, regions or tags")
        return self


class ControlOverride(Strict):
    match: OverrideMatch
    enabled: bool | None = None
    severity: Severity | None = None
    params: dict[str, Any] = {}


class ControlSettings(Strict):
    enabled: bool = True
    severity: Severity | None = None
    params: dict[str, Any] = {}
    overrides: list[ControlOverride] = []


class Exemption(Strict):
    id: str | None = Field(default=None, description="Optional identifier, e.g. a ticket.")
    controls: list[str] = Field(min_length=1, description="Control ids, or '*' for every control.")
    resources: list[str] = Field(default=[], description="Resource ARN globs.")
    accounts: list[AccountId] = []
    tags: dict[str, str] = {}
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3)]
    expires: dt.date

    @model_validator(mode="after")
    def _scoped(self) -> Exemption:
        if not (self.resources or self.tags or self.accounts):
            raise ValueError("an exemption must name resources, tags or accounts")
        return self


class ReferenceData(Strict):
    lambda_runtimes: dict[str, dt.date] = {}

    @field_validator("lambda_runtimes")
    @classmethod
    def _runtime_names(cls, v: dict[str, dt.date]) -> dict[str, dt.date]:
        for name in v:
            if not re.fullmatch(r"[a-z][a-z0-9.\-]*", name):
                raise ValueError(f"{name!r} is not a runtime identifier")
        return v


class ConcurrencyMeasurement(Strict):
    """How Lambda concurrency is measured: the CloudWatch window behind every peak and throttle
    count, and so behind the thresholds of the concurrency controls."""

    lookback_minutes: int = Field(
        default=15,
        ge=1,
        le=1440,
        description="Window for peaks (Maximum) and throttles (Sum), ending at the sweep.",
    )
    period_seconds: int = Field(
        default=60,
        ge=60,
        le=3600,
        description="CloudWatch period; Lambda publishes 1-minute metrics (a multiple of 60).",
    )
    top_functions: int = Field(
        default=10,
        ge=0,
        le=100,
        description="Functions with the largest reserved concurrency whose throttles are queried.",
    )

    @model_validator(mode="after")
    def _period(self) -> ConcurrencyMeasurement:
        if self.period_seconds % 60:
            raise ValueError("period_seconds must be a multiple of 60")
        if self.period_seconds > self.lookback_minutes * 60:
            raise ValueError("period_seconds is longer than the lookback window")
        return self

    def window(self) -> ConcurrencyWindow:
        return ConcurrencyWindow(
            self.lookback_minutes * 60, self.period_seconds, self.top_functions
        )


class PolicyDocument(Strict):
    version: Literal[1]
    scope: Scope
    controls: dict[str, ControlSettings] = {}
    exemptions: list[Exemption] = []
    reference: ReferenceData = ReferenceData()
    concurrency: ConcurrencyMeasurement = ConcurrencyMeasurement()
