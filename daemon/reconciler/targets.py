"""Target discovery: accounts (static, Organizations, own) x regions x services, for this shard.

A failed discovery never shrinks the target set by itself: Organizations failing keeps the accounts
it returned last time, and a failed region lookup keeps that account's last known regions. An
account whose credentials or regions cannot be obtained is reported down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from daemon.aws.api import AwsGateway
from daemon.aws.discovery import Account, enabled_regions, organization_accounts
from daemon.aws.errors import AwsError
from daemon.config import ShardSettings
from daemon.metrics.health import HealthMetrics
from daemon.model import Target
from daemon.policy.compiled import Policy
from daemon.reconciler.sharding import owns

log = structlog.get_logger("posture.discovery")


@dataclass(frozen=True, slots=True)
class Discovery:
    targets: frozenset[Target]
    account_names: dict[str, str] = field(default_factory=dict)
    account_up: dict[str, bool] = field(default_factory=dict)
    # what could not be discovered (Organizations, own account, an account's regions): the target
    # set may be missing accounts or regions, so a one-shot check must not report "all clear"
    problems: tuple[str, ...] = ()


class TargetSource:
    def __init__(self, gateway: AwsGateway, shard: ShardSettings, metrics: HealthMetrics) -> None:
        self.gateway = gateway
        self.shard_index = shard.resolved_index
        self.shard_count = shard.count
        self.metrics = metrics
        self._org_accounts: list[Account] | None = None
        self._regions: dict[str, list[str]] = {}

    async def accounts(self, policy: Policy) -> tuple[list[Account], bool]:
        """The accounts in scope (all shards), and whether the list is complete."""
        scope = policy.document.scope.accounts
        complete = True
        found: dict[str, Account] = {a.id: Account(a.id, a.name) for a in scope.static}
        if scope.organizations.enabled:
            try:
                self._org_accounts = await organization_accounts(self.gateway, scope.organizations)
            except AwsError as err:
                complete = False
                self.metrics.discovery_errors.labels("organizations").inc()
                log.error(
                    "organizations discovery failed; keeping the last known accounts",
                    error_code=err.code,
                    error_kind=err.kind.value,
                    known=len(self._org_accounts or []),
                )
            for acct in self._org_accounts or []:
                found.setdefault(acct.id, acct)
        if scope.own_account:
            try:
                own = await self.gateway.own_account_id()
                found[own] = Account(own, found.get(own, Account(own)).name, own=True)
            except AwsError as err:
                complete = False
                self.metrics.discovery_errors.labels("credentials").inc()
                log.error("cannot identify the daemon's own account", error_code=err.code)
        return sorted(found.values(), key=lambda a: a.id), complete

    async def regions_for(self, policy: Policy, account_id: str) -> list[str] | None:
        regions = policy.document.scope.regions
        if regions != "all":
            return list(regions)
        try:
            self._regions[account_id] = await enabled_regions(self.gateway, account_id)
        except AwsError as err:
            self.metrics.discovery_errors.labels("regions").inc()
            log.error(
                "region discovery failed",
                aws_account_id=account_id,
                error_code=err.code,
                error_kind=err.kind.value,
                known=len(self._regions.get(account_id, [])),
            )
            return None
        return self._regions[account_id]

    async def discover(self, policy: Policy) -> Discovery:
        accounts, complete = await self.accounts(policy)
        problems = [] if complete else ["account discovery incomplete (see logs)"]
        mine = [a for a in accounts if owns(a.id, self.shard_index, self.shard_count)]
        services = policy.document.scope.services
        targets: set[Target] = set()
        names: dict[str, str] = {}
        up: dict[str, bool] = {}
        for acct in mine:
            if acct.name:
                names[acct.id] = acct.name
            regions = await self.regions_for(policy, acct.id)
            up[acct.id] = regions is not None
            if regions is None:
                problems.append(f"regions of account {acct.id} unknown")
                regions = self._regions.get(acct.id, [])
            targets.update(Target(acct.id, r, s) for r in regions for s in services)
        return Discovery(frozenset(targets), names, up, tuple(problems))
