"""What the demo estate's modules share: its regions and how specs say where they live."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, Protocol

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
