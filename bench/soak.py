"""Soak: the daemon, as a real process, sweeping the demo estate hundreds of times with churn.

    .venv/bin/python bench/soak.py --sweeps 500            # the full soak (tens of minutes)
    .venv/bin/python bench/soak.py --sweeps 30 --accounts 1  # a quick look
    .venv/bin/python -m pytest -m slow tests/soak            # the same, as a test

moto runs in a process of its own (its memory grows with what it stores, and must not be counted
as the daemon's); the daemon runs as `python -m daemon run` with a 1 s interval. After every sweep
(every target reconciled after the last change), each account-region gets new functions, each
with a new execution role, and loses the ones created the sweep before ("churn", as deployments
do).

Reported: the daemon's RSS after the warm-up sweeps and at the end, the number of exposed series
after every sweep, and whether any series names a function that no longer exists. Exit status 1
when RSS grew more than --max-rss-growth-mb after warm-up, when the series count at the end
differs from the one after warm-up (the live resources are the same), or when a deleted resource
still has a series.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.demo.estate import DEMO_REGIONS, seed_estate  # noqa: E402
from daemon.demo.runner import demo_policy_text  # noqa: E402
from daemon.metrics import names  # noqa: E402

# compliance series (rendered from the latest result of each target): these must follow the live
# resources exactly; the daemon's own counters may gain a series for a new error code
STATE_NAMES = {d.exposed for d in names.ALL if d.source == "state"}

ACCOUNTS = ("111111111111", "222222222222", "333333333333")
SERIES = re.compile(r"^([a-z_]+)(\{.*\})? ", re.MULTILINE)
RESOURCE = re.compile(r'resource="([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


LAST_SUCCESS = re.compile(r"^posture_target_last_success_timestamp_seconds\{.*\} (\S+)$", re.M)


def last_successes(text: str) -> list[float]:
    return [float(v) for v in LAST_SUCCESS.findall(text)]


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return 1\n")
    return buf.getvalue()


class Churn:
    """Creates and deletes functions (each with its own role) in every account-region."""

    TRUST = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )

    def __init__(
        self, accounts: tuple[str, ...], regions: tuple[str, ...], per_target: int
    ) -> None:
        self.accounts = accounts
        self.regions = regions
        self.per_target = per_target
        self.live: dict[tuple[str, str], list[str]] = {}
        self.deleted: list[set[str]] = []  # ARNs deleted, per churn step
        self._creds: dict[str, dict[str, str]] = {}
        self._zip = zip_bytes()

    async def _credentials(self, session: Any, account: str) -> dict[str, str]:
        if account not in self._creds:
            async with session.create_client("sts", region_name="us-east-1") as sts:
                c = (
                    await sts.assume_role(
                        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
                        RoleSessionName="soak-churn",
                    )
                )["Credentials"]
            self._creds[account] = {
                "aws_access_key_id": c["AccessKeyId"],
                "aws_secret_access_key": c["SecretAccessKey"],
                "aws_session_token": c["SessionToken"],
            }
        return self._creds[account]

    async def step(self, sweep: int) -> None:
        from aiobotocore.session import get_session

        session = get_session()
        deleted: set[str] = set()
        self.deleted.append(deleted)
        for account in self.accounts:
            creds = await self._credentials(session, account)
            async with session.create_client("iam", region_name="us-east-1", **creds) as iam:
                for region in self.regions:
                    async with session.create_client("lambda", region_name=region, **creds) as lam:
                        for name in self.live.pop((account, region), []):
                            await lam.delete_function(FunctionName=name)
                            await iam.delete_role(RoleName=f"{name}-role")
                            deleted.add(f"arn:aws:lambda:{region}:{account}:function:{name}")
                        names = []
                        for i in range(self.per_target):
                            name = f"churn-{sweep}-{region}-{i}"
                            role = await iam.create_role(
                                RoleName=f"{name}-role", AssumeRolePolicyDocument=self.TRUST
                            )
                            await lam.create_function(
                                FunctionName=name,
                                Runtime="python3.12",
                                Role=role["Role"]["Arn"],
                                Handler="app.handler",
                                Code={"ZipFile": self._zip},
                                Timeout=30,
                                MemorySize=256,
                            )
                            names.append(name)
                        self.live[(account, region)] = names


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signum)


def main() -> int:  # noqa: PLR0915 (one linear script)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up moto and the daemon on SIGTERM
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=10, help="sweeps before the baselines")
    parser.add_argument("--accounts", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--churn", type=int, default=2, help="functions per target per sweep")
    parser.add_argument("--max-rss-growth-mb", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    accounts = ACCOUNTS[: args.accounts]
    regions = DEMO_REGIONS
    targets = len(accounts) * len(regions)  # Lambda account-regions, each churned

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "soak",
        "AWS_SECRET_ACCESS_KEY": "soak",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    for key in [k for k in env if k.startswith("POSTURE_")] + ["AWS_PROFILE", "AWS_SESSION_TOKEN"]:
        env.pop(key, None)
    work = Path(tempfile.mkdtemp(prefix="posture-soak-"))
    moto = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from daemon.demo.moto_server import EmbeddedMoto\n"
            "m = EmbeddedMoto(); print(m.start(), flush=True)\n"
            "time.sleep(10**9)\n",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    daemon: subprocess.Popen[bytes] | None = None
    try:
        assert moto.stdout is not None
        endpoint = moto.stdout.readline().strip()
        env["AWS_ENDPOINT_URL"] = endpoint
        os.environ.update(
            {
                k: env[k]
                for k in (
                    "AWS_ENDPOINT_URL",
                    "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY",
                    "AWS_DEFAULT_REGION",
                )
            }
        )
        started = time.monotonic()
        asyncio.run(seed_estate(accounts, regions))
        print(
            f"seeded {len(accounts)} account(s) x {len(regions)} regions "
            f"in {time.monotonic() - started:.0f}s",
            flush=True,
        )

        doc = yaml.safe_load(demo_policy_text())
        doc["scope"]["accounts"] = {"static": [{"id": a} for a in accounts]}
        # every service of the demo policy is swept: (account, region, service) targets
        swept = targets * len(doc["scope"]["services"])
        policy = work / "policy.yaml"
        policy.write_text(yaml.safe_dump(doc))
        port = free_port()
        daemon_env = {
            **env,
            "POSTURE_POLICY_FILE": str(policy),
            "POSTURE_HTTP__HOST": "127.0.0.1",
            "POSTURE_HTTP__PORT": str(port),
            "POSTURE_LOG__LEVEL": "warning",
            "POSTURE_LOG__FORMAT": "json",
            "POSTURE_RECONCILER__INTERVAL_SECONDS": "1",
            "POSTURE_RECONCILER__JITTER_FRACTION": "0",
        }
        log = (work / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run"],
            env=daemon_env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        churn = Churn(accounts, regions, args.churn)
        series: list[int] = []  # compliance series
        all_series: list[int] = []
        rss: list[float] = []
        baseline_rss = baseline_series = 0.0
        baseline_names: Counter[str] = Counter()
        stale: set[str] = set()
        t0 = time.monotonic()
        changed_at = time.time()
        for sweep in range(1, args.sweeps + 1):
            # every target must have run a whole reconcile after the last change: one that
            # finished after it may have started before it, so wait for the one after that
            deadline = time.monotonic() + 300
            seen: list[float] | None = None
            while True:
                try:
                    text = scrape(url)
                except OSError:
                    text = ""
                times = last_successes(text)
                if len(times) == swept and min(times) > changed_at:
                    if seen is None:
                        seen = times
                    elif all(t > s for t, s in zip(times, seen, strict=True)):
                        break
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sweep {sweep} did not complete (see {work}/daemon.log)")
                time.sleep(0.2)
            found = SERIES.findall(text)
            series.append(sum(1 for name, _ in found if name in STATE_NAMES))
            all_series.append(len(found))
            rss.append(rss_mb(daemon.pid))
            # every target was swept after the last churn step: no deleted resource may remain
            stale |= set(RESOURCE.findall(text)) & set().union(*churn.deleted)
            by_name = Counter(name for name, _ in found if name in STATE_NAMES)
            if sweep == args.warmup:
                baseline_rss, baseline_series = rss[-1], series[-1]
                baseline_names = by_name
            elif sweep > args.warmup and by_name != baseline_names:
                changed = {
                    n: (baseline_names[n], by_name[n])
                    for n in by_name | baseline_names
                    if by_name[n] != baseline_names[n]
                }
                print(f"sweep {sweep}: compliance series changed: {changed}", flush=True)
            if sweep % 25 == 0 or sweep == args.sweeps:
                print(
                    f"sweep {sweep:4d}: rss {rss[-1]:6.1f} MB, compliance series {series[-1]}, "
                    f"all series {all_series[-1]}, {time.monotonic() - t0:.0f}s",
                    flush=True,
                )
            asyncio.run(churn.step(sweep))
            changed_at = time.time()
        elapsed = time.monotonic() - t0
        report = {
            "sweeps": args.sweeps,
            "targets": targets,
            "churned_functions": args.sweeps * targets * args.churn,
            "seconds": round(elapsed),
            "rss_mb_start": round(rss[0], 1),
            "rss_mb_after_warmup": round(baseline_rss, 1),
            "rss_mb_end": round(rss[-1], 1),
            "rss_mb_max": round(max(rss), 1),
            "series_after_warmup": int(baseline_series),
            "series_end": series[-1],
            "series_min": min(series[args.warmup - 1 :]),
            "series_max": max(series[args.warmup - 1 :]),
            "all_series_after_warmup": all_series[args.warmup - 1],
            "all_series_end": all_series[-1],
            "stale_resource_series": sorted(stale)[:10],
        }
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        ok = (
            report["rss_mb_end"] - baseline_rss <= args.max_rss_growth_mb
            and report["series_min"] == report["series_max"] == baseline_series
            and not stale
        )
        print("soak: OK" if ok else "soak: FAILED")
        return 0 if ok else 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        moto.kill()
        moto.wait()


if __name__ == "__main__":
    sys.exit(main())
