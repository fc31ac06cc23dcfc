"""`posture-daemon demo`: embedded moto server + seeded estate + the daemon, on loopback."""

from __future__ import annotations

import asyncio
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import TextIO

# Simulated AWS needs no real credentials; never let the demo touch a real account.
_DEMO_ENV = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_SESSION_TOKEN": "",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
DEMO_ACCOUNTS = ("prod", "staging", "sandbox")
DEMO_HOST = "127.0.0.1"  # the demo serves on loopback only
EXPORT_BUCKET = "posture-demo-exports"  # in the management account, with `demo --export`


def demo_policy_text() -> str:
    return resources.files("daemon.demo").joinpath("policy.yaml").read_text()


async def create_export_bucket() -> str:
    """The demo's snapshot bucket and the KMS key for environment values (management account)."""
    from aiobotocore.session import get_session

    session = get_session()
    async with session.create_client("s3", region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket=EXPORT_BUCKET)
    async with session.create_client("kms", region_name="us-east-1") as kms:
        key = await kms.create_key(Description="posture-daemon demo: exported env values")
    return str(key["KeyMetadata"]["Arn"])


def run_demo(
    http_port: int = 9717, interval: float = 30.0, out: TextIO | None = None, export: bool = False
) -> int:
    from daemon.server import check_listen

    # before the ~20 s of starting moto and seeding the estate: a port already taken (another demo
    # running) fails at once, with one line (ListenError, reported by the CLI)
    check_listen(DEMO_HOST, http_port)
    for key, value in _DEMO_ENV.items():
        if value:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    os.environ.pop("AWS_PROFILE", None)

    from daemon.demo.moto_server import EmbeddedMoto

    moto = EmbeddedMoto()
    endpoint = moto.start()
    os.environ["AWS_ENDPOINT_URL"] = endpoint

    from daemon.app import Daemon
    from daemon.config import load_settings
    from daemon.demo.estate import create_organization, seed_estate, simulate_load
    from daemon.logging import setup_logging
    from daemon.policy import load_policy

    workdir = Path(tempfile.mkdtemp(prefix="posture-demo-"))
    policy_file = workdir / "policy.yaml"
    policy_file.write_text(demo_policy_text())
    overrides: dict[str, object] = {}
    if export:
        key_arn = asyncio.run(create_export_bucket())
        overrides["export"] = {
            "enabled": True,
            "bucket": EXPORT_BUCKET,
            "include_env_values": True,
            "kms_key_id": key_arn,
        }
    # The simulated AWS is one local moto process: the demo paces against raised quotas (x20) so a
    # sweep is not slowed to Lambda's real 15/s; POSTURE_AWS__PACING__QUOTA_MULTIPLIER wins.
    aws: dict[str, object] = {}
    if not os.environ.get("POSTURE_AWS__PACING__QUOTA_MULTIPLIER"):
        aws["pacing"] = {"quota_multiplier": 20}
    settings = load_settings(
        policy_file=policy_file,
        aws=aws,
        http={"host": DEMO_HOST, "port": http_port},
        reconciler={
            "interval_seconds": interval,
            "discovery_interval_seconds": max(60.0, interval),
        },
        **overrides,
    )
    setup_logging(settings.log.level, settings.log.format)
    import structlog

    log = structlog.get_logger("posture.demo")

    async def main() -> None:
        log.info("seeding the demo estate", endpoint=endpoint, accounts=list(DEMO_ACCOUNTS))
        accounts = await create_organization(DEMO_ACCOUNTS)
        await seed_estate(accounts.values())
        log.info(
            "demo estate ready",
            accounts=accounts,
            policy=str(policy_file),
            metrics=f"http://{DEMO_HOST}:{http_port}/metrics",
            aws_endpoint=endpoint,
            export_bucket=EXPORT_BUCKET if export else None,
        )
        daemon = Daemon(settings, load_policy(policy_file))
        load = asyncio.create_task(simulate_load(accounts.values()), name="simulated-load")
        try:
            await daemon.run()
        finally:
            load.cancel()

    try:
        asyncio.run(main())
    finally:
        moto.stop()
    return 0
