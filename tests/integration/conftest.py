"""A moto server (with the demo shim) for the whole session, and a seeded read-only estate.

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

from daemon.demo.estate import DEMO_REGIONS, seed_estate
from daemon.demo.moto_server import EmbeddedMoto
from daemon.demo.runner import demo_policy_text

from .faultproxy import FaultProxy

ESTATE_ACCOUNTS = ("111111111111", "222222222222", "333333333333")


@pytest.fixture(scope="session")
def moto() -> Iterator[EmbeddedMoto]:
    server = EmbeddedMoto()
    url = server.start()
    os.environ["AWS_ENDPOINT_URL"] = url
    yield server
    os.environ.pop("AWS_ENDPOINT_URL", None)
    server.stop()


@pytest.fixture(scope="session")
def estate(moto: EmbeddedMoto) -> tuple[str, ...]:
    asyncio.run(seed_estate(ESTATE_ACCOUNTS, DEMO_REGIONS))
    return ESTATE_ACCOUNTS


def policy_for(accounts: tuple[str, ...] | list[str], tmp: Path, **scope: object) -> Path:
    """The demo policy with a static account list instead of Organizations discovery."""
    doc = yaml.safe_load(demo_policy_text())
    doc["scope"]["accounts"] = {"static": [{"id": a, "name": f"acct-{a[:3]}"} for a in accounts]}
    doc["scope"].update(scope)
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


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
