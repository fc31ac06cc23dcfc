"""End to end: a real Prometheus (Debian's binary) scrapes a /metrics body gzipped in many
segments (daemon/metrics/compress.py), before and after a target's text changed, and stores every
sample the body holds.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from daemon.server import GZIPPERS
from tests.e2e.test_alerting import free_port, get_json, process
from tests.unit.test_exposition import LARGE_ESTATE, lambda_result, large_estate_served

TIMEOUT = 60.0


async def eventually(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


async def test_prometheus_reads_every_sample_of_a_body_gzipped_in_segments(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is required (Debian package prometheus; make system-deps)")
    store, app, server = await large_estate_served()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "posture",
                        "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                    }
                ],
            }
        )
    )
    prom = f"http://127.0.0.1:{port}"
    try:
        async with (
            process(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                tmp_path / "prometheus.log",
            ),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        ):

            async def value(query: str) -> float | None:
                try:
                    found = await get_json(http, f"{prom}/api/v1/query", query=query)
                except (aiohttp.ClientError, ValueError):
                    return None  # not up yet
                result = found.get("data", {}).get("result", [])
                return float(result[0]["value"][1]) if result else None

            async def plain() -> str:
                async with http.get(
                    f"http://127.0.0.1:{server.port}/metrics",
                    headers={"Accept-Encoding": "identity"},
                ) as resp:
                    return await resp.text()

            async def reads(query: str, expected: float) -> bool:
                return await value(query) == expected

            def samples(text: str, name: str) -> int:
                return sum(1 for line in text.splitlines() if line.startswith(name + "{"))

            text = await plain()
            resources = samples(text, "posture_resource_violation")
            assert resources > 1000
            query = 'count(posture_resource_violation{job="posture"})'
            await eventually("a scrape", lambda: reads(query, resources))
            (gzipper,) = app[GZIPPERS].values()  # Prometheus asked for gzip
            assert gzipper.compressed >= 5  # the body came in many segments

            # one target's text changes: its segments are compressed again, the rest reused
            changed = LARGE_ESTATE[3]
            store.publish(lambda_result(changed, 300, seed=99), at=1_800_000_000.0)
            reused = gzipper.reused
            limit = (
                f'posture_lambda_concurrency_limit{{job="posture",'
                f'aws_account_id="{changed.account_id}"}}'
            )
            await eventually("the changed value", lambda: reads(limit, 1099))
            assert gzipper.reused > reused
            resources = samples(await plain(), "posture_resource_violation")
            await eventually("every sample after", lambda: reads(query, resources))
            assert await value('up{job="posture"}') == 1
    finally:
        await server.stop()
