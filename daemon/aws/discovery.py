"""Which accounts and regions to scan: the policy's static list, AWS Organizations, EC2 regions."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from daemon.aws.api import AwsGateway
from daemon.aws.clients import ROLE_PREFIX
from daemon.model.operations import Operation
from daemon.policy.models import OrganizationsScope

OPERATIONS = (
    Operation(
        "organizations", "ListAccounts", "organizations:ListAccounts", principal="organizations"
    ),
    # with `regions: all`, asked of each account with that account's (reader) credentials
    Operation("ec2", "DescribeRegions", "ec2:DescribeRegions"),
)


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str | None = None
    own: bool = False  # scanned with the daemon's own credentials


def _matches(account: Account, patterns: list[str]) -> bool:
    return any(
        account.id == p or (account.name is not None and fnmatch.fnmatchcase(account.name, p))
        for p in patterns
    )


async def organization_accounts(gateway: AwsGateway, scope: OrganizationsScope) -> list[Account]:
    """ACTIVE member accounts, filtered by include/exclude (ids or name globs)."""
    settings = gateway.settings
    if settings.organizations_role_arn:
        api = gateway.api(ROLE_PREFIX + settings.organizations_role_arn, settings.region)
    else:
        api = gateway.api(await gateway.own_account_id(), settings.region)
    raw = await api.all_items("organizations", "list_accounts", "Accounts")
    accounts = []
    for item in raw:
        state = item.get("State") or item.get("Status")
        if state != "ACTIVE":
            continue
        acct = Account(id=str(item["Id"]), name=item.get("Name"))
        if scope.include and not _matches(acct, scope.include):
            continue
        if scope.exclude and _matches(acct, scope.exclude):
            continue
        accounts.append(acct)
    return sorted(accounts, key=lambda a: a.id)


async def enabled_regions(gateway: AwsGateway, account_id: str) -> list[str]:
    """Regions enabled for the account (opted in, or not needing opt-in)."""
    api = gateway.api(account_id, gateway.settings.region)
    resp = await api.call("ec2", "describe_regions")
    return sorted(
        r["RegionName"]
        for r in resp.get("Regions", [])
        if r.get("OptInStatus", "opt-in-not-required") != "not-opted-in"
    )
