"""What the demo estate's modules share: its regions and how specs say where they live."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from typing import Any, Literal, Protocol

import aiohttp

PRIMARY = "us-east-1"
SECONDARY = "eu-west-1"
DEMO_REGIONS = (PRIMARY, SECONDARY)

Regions = Literal["all", "primary", "secondary"]


class RegionClients(Protocol):
    """Creates clients acting in one account and region (estate.RegionSeeder)."""

    account: str
    region: str

    def client(self, service: str) -> Any: ...


def violates(*controls: str) -> frozenset[str]:
    return frozenset(controls)


def in_region(regions: Regions, region: str) -> bool:
    return regions == "all" or (regions == "primary") == (region == PRIMARY)


def selected(name: str, only: Iterable[str] | None) -> bool:
    """Whether a resource is seeded when tests ask for `only` some names (None: everything)."""
    return only is None or name in set(only)


# --- demo state moto has no API for (the shims in moto_server.py, backup_shim.py) ---


async def shim(path: str, body: dict[str, Any]) -> None:
    """POST to the embedded moto server's shim (demo state moto has no API for)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        raise RuntimeError("the demo estate is seeded into the embedded moto server only")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{endpoint}{path}", json=body) as resp,
    ):
        resp.raise_for_status()


async def backdate_function(
    account: str, region: str, name: str, qualifier: str, age: dt.timedelta
) -> None:
    """Make $LATEST (or a version) look last modified `age` ago (moto stamps "now")."""
    when = dt.datetime.now(dt.UTC) - age
    await shim(
        "/posture-shim/backdate",
        {
            "Service": "lambda",
            "AccountId": account,
            "Region": region,
            "FunctionName": name,
            "Qualifier": qualifier,
            "Time": when.timestamp(),
        },
    )


async def backdate_rds(account: str, region: str, age: dt.timedelta, **identifier: str) -> None:
    """Make an RDS snapshot or database look created `age` ago (moto stamps "now");
    `identifier` is one of DBSnapshotIdentifier, DBClusterSnapshotIdentifier,
    DBInstanceIdentifier, DBClusterIdentifier."""
    when = dt.datetime.now(dt.UTC) - age
    body: dict[str, Any] = {"Service": "rds", "AccountId": account, "Region": region}
    await shim("/posture-shim/backdate", {**body, **identifier, "Time": when.timestamp()})


async def register_recovery_point(
    account: str, region: str, arn: str, resource_type: str, age: dt.timedelta
) -> None:
    """Tell the shim AWS Backup holds a recovery point of the resource, `age` old."""
    when = dt.datetime.now(dt.UTC) - age
    await shim(
        "/posture-shim/backup/protected-resource",
        {
            "AccountId": account,
            "Region": region,
            "ResourceArn": arn,
            "ResourceType": resource_type,
            "LastBackupTime": when.timestamp(),
        },
    )
