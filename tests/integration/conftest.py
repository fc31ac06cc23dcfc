"""A seeded read-only estate in the session's moto server (the `moto` fixture, tests/conftest.py),
and the fault proxy in front of it.

Tests that change AWS state use accounts of their own (moto isolates accounts), so the shared
estate stays as seeded and no test pays for a reset.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aiobotocore.session import get_session

from daemon.demo.estate import DEMO_REGIONS, PRIMARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto
from daemon.demo.runner import demo_policy_text

from .faultproxy import FaultProxy

ESTATE_ACCOUNTS = ("111111111111", "222222222222", "333333333333")
ALL_SERVICES = ["lambda", "ecr", "ecs", "rds"]


@pytest.fixture(scope="session")
def estate(moto: EmbeddedMoto) -> tuple[str, ...]:
    asyncio.run(seed_estate(ESTATE_ACCOUNTS, DEMO_REGIONS))
    return ESTATE_ACCOUNTS


def policy_for(accounts: tuple[str, ...] | list[str], tmp: Path, **scope: object) -> Path:
    """The demo policy with a static account list instead of Organizations discovery; `scope`
    entries (regions, services) replace the demo's.

    It scans Lambda only unless `services` is given: most tests are about the daemon's machinery
    (reconcile, reload, CLI, credentials), where fewer targets keep them fast and "the target" of
    an account-region unambiguous. The estate and the container/database tests ask for more.
    """
    doc = yaml.safe_load(demo_policy_text())
    doc["scope"]["accounts"] = {"static": [{"id": a, "name": f"acct-{a[:3]}"} for a in accounts]}
    doc["scope"]["services"] = ["lambda"]
    doc["scope"].update(scope)
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def organization() -> dict[str, str]:
    """The organization of moto's default (management) account: three empty member accounts,
    created once per session; returns {name: account id} (the management account is "master")."""
    async with get_session().create_client("organizations", region_name=PRIMARY) as org:
        try:
            await org.describe_organization()
        except org.exceptions.AWSOrganizationsNotInUseException:
            await org.create_organization(FeatureSet="ALL")
            for name in ("alpha", "beta", "gamma"):
                await org.create_account(Email=f"{name}@example.com", AccountName=name)
        accounts = (await org.list_accounts())["Accounts"]
    return {a["Name"]: a["Id"] for a in accounts}


@pytest.fixture(scope="session")
def proxy_server(moto: EmbeddedMoto) -> Iterator[FaultProxy]:
    """The fault proxy in front of moto (started once; rules are cleared by `proxy`)."""
    server = FaultProxy(moto.url)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def proxy(proxy_server: FaultProxy, moto: EmbeddedMoto) -> Iterator[FaultProxy]:
    """Route every AWS client created during the test through the fault proxy.

    AWS_ENDPOINT_URL is process-wide: it is restored to moto when the test ends, and the rules the
    test installed are removed.
    """
    proxy_server.clear()
    proxy_server.seed(1234)
    os.environ["AWS_ENDPOINT_URL"] = proxy_server.url
    try:
        yield proxy_server
    finally:
        os.environ["AWS_ENDPOINT_URL"] = moto.url
        proxy_server.clear()
