"""Helpers to run the real daemon against the moto server and read what it serves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from daemon.app import Daemon
from daemon.config import Settings, load_settings
from daemon.policy import load_policy

Sample = tuple[str, dict[str, str], float]


def settings_for(policy: Path, **overrides: Any) -> Settings:
    reconciler = {
        "interval_seconds": 2,
        "jitter_fraction": 0,
        "backoff_base_seconds": 0.5,
        "backoff_max_seconds": 2,
        "policy_poll_seconds": 0.2,
        "shutdown_grace_seconds": 5,
        **overrides.pop("reconciler", {}),
    }
    http = {"host": "127.0.0.1", "port": 0, **overrides.pop("http", {})}
    return load_settings(
        policy_file=policy,
        http=http,
        reconciler=reconciler,
        **overrides,
    )


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 60, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_daemon(settings: Settings, ready: bool = True) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings, load_policy(settings.policy_file))
    task = asyncio.create_task(daemon.run(signals=False))
    try:
        await wait_for(lambda: daemon.http.port is not None or task.done(), 10, "HTTP server")
        if task.done():
            task.result()
        if ready:
            await wait_for(lambda: daemon.ready()[0], 120, "readiness")
        yield daemon
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, timeout=30)


async def get(daemon: Daemon, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.http.port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def scrape(daemon: Daemon) -> list[Sample]:
    status, text = await get(daemon, "/metrics")
    assert status == 200
    return parse_exposition(text)


def parse_exposition(text: str) -> list[Sample]:
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, dict(s.labels), s.value))
    return out


def select(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = select(samples, name, **labels)
    assert len(found) == 1, f"expected one {name}{labels}, found {len(found)}"
    return found[0][2]


async def wait_for_sweeps(daemon: Daemon, n: int = 1, timeout: float = 60) -> None:
    """Wait until every target has had `n` more successful reconciles than now."""
    start = {t: h.last_success for t, h in daemon.store.view().health.items()}

    def done() -> bool:
        health = daemon.store.view().health
        return all(health[t].last_success > start.get(t, 0) for t in health)

    for _ in range(n):
        await wait_for(done, timeout, "a sweep of every target")
        start = {t: h.last_success for t, h in daemon.store.view().health.items()}


_LOADER: dict[str, Any] = {}


def _session() -> Any:
    """A new session sharing one botocore loader, so service models are parsed once per run."""
    from aiobotocore.session import get_session

    session = get_session()
    if "loader" not in _LOADER:
        _LOADER["loader"] = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _LOADER["loader"])
    return session


@asynccontextmanager
async def aws_client(service: str, account: str, region: str = "us-east-1") -> AsyncIterator[Any]:
    """A client acting in `account` (through AssumeRole, as an operator of that account would)."""
    session = _session()
    async with session.create_client("sts", region_name=region) as sts:
        creds = (
            await sts.assume_role(
                RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
                RoleSessionName="test-operator",
            )
        )["Credentials"]
    async with session.create_client(
        service,
        region_name=region,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    ) as client:
        yield client
