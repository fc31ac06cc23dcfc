"""Scale benchmark: pacing, steady-state efficiency and sharding on a large estate in moto server.

    .venv/bin/python bench/scale.py                                  # 20 accounts x 3 regions x 100
    .venv/bin/python bench/scale.py --accounts 4 --functions 50      # a quicker look
    make bench                                                       # the default, JSON in bench/

moto runs in a process of its own (its CPU and memory are not the daemon's), served by waitress
with HTTP/1.1 keep-alive as AWS endpoints are (--connection-close: werkzeug's development server,
which opens a TCP connection per call, as the tests' moto does); the estate is seeded,
probed for moto's throughput and changed by 1% in other child processes (their AWS clients and
full service models are not the daemon's memory); the daemon runs in this process (so its CPU
seconds and peak RSS are this process's), against moto over HTTP, with Lambda's real quotas and
the default 50% share unless --quota-multiplier / --share say otherwise.

Each sweep reconciles every target once and keeps, as the long-running daemon does, no result
beyond the store's (`sweep_once(keep_results=False)`). Sweeps run on a virtual clock: the cold
sweep at T, the steady-state sweep at T + interval, the 1% changed sweep at T + 2 x interval (the
interval is the daemon's default, 60 s). So the steady-state sweep includes exactly one
interval's share of the rolling refresh (the details and lookups due within max_data_age, the
CloudWatch reads due within cloudwatch_interval_seconds), as a real daemon's would.

Reported per sweep: wall time, AWS calls (total, by operation, per resource), calls per function
(every call the Lambda targets make: list pages, IAM, CloudWatch, ...) and from Lambda's shared
15/s bucket, CPU seconds per 1,000 resources, peak RSS, failed targets and throttles; the moto
server's measured throughput; the minimum possible sweep time = max(quota-bound time: per
account-region, the busiest bucket's calls / its allowed rate; moto-bound time: the larger of
calls / moto's probed throughput and moto's busy time, its CPU seconds during the sweep divided
by the CPUs it may run on) and achieved / minimum (and, as earlier rounds computed it, achieved /
the minimum from the probed throughput alone); the CPU bare aiobotocore spends on the same
number of calls, and the CPU of the same calls made the least costly way Python can (`RawHttp`:
signed GETs on kept-alive sockets, JSON parsed, nothing else), their per-call costs measured
beside moto's throughput; garbage collections by generation (count, longest, cyclic garbage
collected), and the one full pass with which the daemon settles its heap
after the first sweep (`heap_settle_pause_ms`, between the cold and the steady sweep);
/metrics latency while the cold and steady sweeps run, scraped once a second by a child process
with Prometheus' headers. With 2+ CPUs the sweeps run with the daemon on the first CPU and moto
and the probe on the others (--no-pinning: shared), as the daemon shares no CPU with AWS or
Prometheus in production; seeding uses every CPU. Then the sharding demonstration (Lambda, first
region): 2 replicas vs 1, and the accounts when the shard count changes from 2 to 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
PROMETHEUS_ACCEPT = (  # Prometheus 3's scrape Accept header
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
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
ROLES_PER_ACCOUNT = 10
# Lambda calls made per function (the rest are list pages and account-region lookups)
PER_FUNCTION_OPERATIONS = frozenset(
    {
        "GetFunction",
        "GetPolicy",
        "GetFunctionUrlConfig",
        "GetFunctionEventInvokeConfig",
        "ListAliases",
        "ListProvisionedConcurrencyConfigs",
    }
)


def accounts_of(n: int) -> list[str]:
    return [f"{700000000000 + i * 1001:012d}" for i in range(n)]


def zip_bytes(body: str = "def handler(event, context):\n    return 1\n") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", body)
    return buf.getvalue()


# --- child processes: moto and the seeder ------------------------------------------------------


def run_moto(keep_alive: bool) -> None:
    """Child: moto server with the demo shim; prints its URL, runs until stdin closes."""
    from daemon.demo.moto_server import EmbeddedMoto

    server = EmbeddedMoto(keep_alive=keep_alive)
    print(server.start(), flush=True)
    sys.stdin.read()
    server.stop()


async def _client(session: Any, service: str, account: str, region: str, config: Any = None) -> Any:
    async with session.create_client("sts", region_name="us-east-1") as sts:
        c = (
            await sts.assume_role(
                RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
                RoleSessionName="bench-seed",
            )
        )["Credentials"]
    return session.create_client(
        service,
        region_name=region,
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
        config=config,
    )


async def seed_account_region(
    session: Any, account: str, region: str, functions: int, sem: asyncio.Semaphore
) -> None:
    code = zip_bytes()
    async with await _client(session, "lambda", account, region) as lam:
        layer_arns = []
        for v in range(2):
            resp = await lam.publish_layer_version(
                LayerName="bench-layer",
                Content={"ZipFile": zip_bytes(f"# layer {v}\n")},
                CompatibleRuntimes=["python3.12"],
            )
            layer_arns.append(resp["LayerVersionArn"])

        async def one(i: int) -> None:
            name = f"fn-{i:04d}"
            async with sem:
                params: dict[str, Any] = {
                    "FunctionName": name,
                    "Runtime": "python3.12",
                    "Role": f"arn:aws:iam::{account}:role/bench-role-{i % ROLES_PER_ACCOUNT}",
                    "Handler": "app.handler",
                    "Code": {"ZipFile": code},
                    "Timeout": 30,
                    "MemorySize": 256,
                    "Tags": {"team": f"team-{i % 7}", "bench": "scale"},
                    "TracingConfig": {"Mode": "Active" if i % 2 else "PassThrough"},
                    "Publish": i % 5 == 0,  # 20% with a published version
                }
                if i % 3 == 0:
                    params["Layers"] = [layer_arns[-1]]
                await lam.create_function(**params)
                if i % 10 == 0:
                    await lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
                if i % 5 == 1:
                    await lam.add_permission(
                        FunctionName=name,
                        StatementId="events",
                        Action="lambda:InvokeFunction",
                        Principal="events.amazonaws.com",
                        SourceArn=f"arn:aws:events:{region}:{account}:rule/bench",
                    )
                if i % 20 == 2:
                    await lam.put_function_concurrency(
                        FunctionName=name, ReservedConcurrentExecutions=5
                    )

        await asyncio.gather(*(one(i) for i in range(functions)))
    async with await _client(session, "ecr", account, region) as ecr:
        for r in range(5):
            await ecr.create_repository(repositoryName=f"bench-repo-{r}")
            if r < 2:
                await ecr.put_lifecycle_policy(
                    repositoryName=f"bench-repo-{r}",
                    lifecyclePolicyText=json.dumps(
                        {
                            "rules": [
                                {
                                    "rulePriority": 1,
                                    "selection": {
                                        "tagStatus": "untagged",
                                        "countType": "sinceImagePushed",
                                        "countUnit": "days",
                                        "countNumber": 14,
                                    },
                                    "action": {"type": "expire"},
                                }
                            ]
                        }
                    ),
                )
    async with await _client(session, "ecs", account, region) as ecs:
        await ecs.create_cluster(clusterName="bench")
        for f in range(3):
            await ecs.register_task_definition(
                family=f"bench-task-{f}",
                containerDefinitions=[
                    {
                        "name": "app",
                        "image": f"{account}.dkr.ecr.{region}.amazonaws.com/bench-repo-{f}:v1",
                        "memory": 256,
                        "essential": True,
                    }
                ],
            )
        await ecs.create_service(
            cluster="bench", serviceName="bench-svc", taskDefinition="bench-task-0", desiredCount=1
        )
    async with await _client(session, "rds", account, region) as rds:
        for d in range(2):
            await rds.create_db_instance(
                DBInstanceIdentifier=f"bench-db-{d}",
                DBInstanceClass="db.t3.micro",
                Engine="postgres",
                MasterUsername="bench",
                MasterUserPassword="bench-password-1",
                AllocatedStorage=20,
                StorageEncrypted=bool(d),
            )
        await rds.create_db_snapshot(
            DBInstanceIdentifier="bench-db-0", DBSnapshotIdentifier="bench-snap-0"
        )


async def seed(accounts: list[str], regions: list[str], functions: int) -> None:
    from aiobotocore.session import get_session

    session = get_session()
    sem = asyncio.Semaphore(32)
    for account in accounts:
        async with await _client(session, "iam", account, "us-east-1") as iam:
            for k in range(ROLES_PER_ACCOUNT):
                await iam.create_role(RoleName=f"bench-role-{k}", AssumeRolePolicyDocument=TRUST)
                await iam.put_role_policy(
                    RoleName=f"bench-role-{k}",
                    PolicyName="logs",
                    PolicyDocument=json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                                    "Resource": "*",
                                }
                            ],
                        }
                    ),
                )
    await asyncio.gather(
        *(seed_account_region(session, a, r, functions, sem) for a in accounts for r in regions)
    )


async def change(accounts: list[str], regions: list[str], functions: int, fraction: float) -> int:
    """New code for `fraction` of the functions (spread over every account-region)."""
    from aiobotocore.session import get_session

    session = get_session()
    step = max(1, round(1 / fraction)) if fraction > 0 else 0
    changed = 0
    if not step:
        return 0
    for account in accounts:
        for region in regions:
            async with await _client(session, "lambda", account, region) as lam:
                for i in range(0, functions, step):
                    await lam.update_function_code(
                        FunctionName=f"fn-{i:04d}", ZipFile=zip_bytes(f"# v2 {i}\n")
                    )
                    changed += 1
    return changed


# a function's detail reads, as a sweep makes them (87% of a cold sweep's calls)
DETAIL_READS = (
    "get_function",
    "get_policy",
    "get_function_url_config",
    "get_function_event_invoke_config",
)


def _detail_read(i: int) -> tuple[int, str]:
    """The i-th call of a probe cycling `DETAIL_READS` over ten seeded functions: (the read's
    index in DETAIL_READS, the function's name)."""
    return i % len(DETAIL_READS), f"fn-{i // len(DETAIL_READS) % 10:04d}"


class RawHttp:
    """The least a Python client can do per AWS call, to measure it: HTTP/1.1 GETs on kept-alive
    asyncio streams, nothing else -- no proxies, TLS, retries, timeouts, chunked bodies or error
    mapping. Not the daemon's transport; the benchmark's yardstick for it."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"RawHttp measures plain HTTP only, not {url}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.netloc = parts.netloc
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        reader, writer = (
            self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        )
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.netloc}\r\n{lines}\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        fields = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
        if "content-length" not in fields:
            raise RuntimeError(f"no Content-Length in the answer to {path}: {head!r}")
        body = await reader.readexactly(int(fields["content-length"]))
        if fields.get("connection", "").strip() == "close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return status, body

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def moto_throughput(
    account: str, region: str, seconds: float = 4.0, concurrency: int = 16, rounds: int = 3
) -> tuple[float, float, float]:
    """Requests per second moto answers (a function's detail reads on seeded functions), the
    CPU ms this process spent per call meanwhile -- the floor of any botocore-based client: the
    calls made by bare aiobotocore with nothing of the daemon around them -- and the CPU ms per
    call of the same reads made the least costly way Python can (`RawHttp`, SigV4-signed with the
    daemon's signer, JSON bodies parsed): the floor of any Python client. The best of `rounds`
    rounds for the throughput (moto's capacity; a round can be slowed by anything else on the
    machine) and their median for each CPU per call."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    session = get_session()
    config = AioConfig(max_pool_connections=concurrency)
    rates: list[float] = []
    costs: list[float] = []
    async with await _client(session, "lambda", account, region, config) as lam:
        # the estate's functions mostly have no policy, URL or invoke config: moto answers 404s
        calls = tuple(getattr(lam, method) for method in DETAIL_READS)

        async def worker(k: int, stop: float) -> int:
            done, i = 0, k
            while time.monotonic() < stop:
                read, name = _detail_read(i)
                with contextlib.suppress(lam.exceptions.ResourceNotFoundException):
                    await calls[read](FunctionName=name)
                done += 1
                i += 1
            return done

        for _ in range(rounds):
            started, cpu0 = time.monotonic(), cpu_seconds()
            stop = started + seconds
            done = sum(await asyncio.gather(*(worker(k, stop) for k in range(concurrency))))
            rates.append(done / (time.monotonic() - started))
            costs.append((cpu_seconds() - cpu0) / max(1, done) * 1000)
        credentials = await lam._request_signer._credentials.get_frozen_credentials()
        # each read's path, as botocore's model of the operation gives it
        paths = tuple(
            lam.meta.service_model.operation_model(lam.meta.method_to_api_mapping[method]).http[
                "requestUri"
            ]
            for method in DETAIL_READS
        )
        raw_costs = await _raw_rounds(
            lam.meta.endpoint_url, paths, credentials, region, seconds, concurrency, rounds
        )
    return max(rates), statistics.median(costs), statistics.median(raw_costs)


async def _raw_rounds(
    url: str,
    paths: tuple[str, ...],
    credentials: Any,
    region: str,
    seconds: float,
    concurrency: int,
    rounds: int,
) -> list[float]:
    """CPU ms per call of `DETAIL_READS` through `RawHttp`, one figure per round (`paths`: each
    read's request URI, `{FunctionName}` in it)."""
    from daemon.aws.direct import TIMESTAMP, SigV4

    http, signer = RawHttp(url), SigV4()
    host = http.netloc

    async def one(i: int) -> int:
        read, name = _detail_read(i)
        path = paths[read].replace("{FunctionName}", name)
        headers: dict[str, str] = {}
        stamp = time.strftime(TIMESTAMP, time.gmtime())
        signer.sign("GET", url + path, headers, credentials, region, "lambda", host, stamp)
        status, body = await http.get(path, headers)
        answer = json.loads(body) if body else {}
        if status != 200 and not (status == 404 and read):
            raise RuntimeError(f"RawHttp: {status} for {path}: {body[:200]!r}")
        if status == 200 and read == 0 and "Configuration" not in answer:
            raise RuntimeError(f"RawHttp: GetFunction without a Configuration: {body[:200]!r}")
        return status

    async def worker(k: int, stop: float) -> int:
        done, i = 0, k
        while time.monotonic() < stop:
            await one(i)
            done += 1
            i += 1
        return done

    costs: list[float] = []
    try:
        for _ in range(rounds):
            started, cpu0 = time.monotonic(), cpu_seconds()
            done = sum(
                await asyncio.gather(*(worker(k, started + seconds) for k in range(concurrency)))
            )
            costs.append((cpu_seconds() - cpu0) / max(1, done) * 1000)
    finally:
        await http.close()
    return costs


# --- the daemon, measured ----------------------------------------------------------------------


def policy_file(accounts: list[str], regions: list[str], services: list[str], tmp: Path) -> Path:
    from daemon.demo.runner import demo_policy_text

    doc = yaml.safe_load(demo_policy_text())
    doc["scope"]["accounts"] = {"static": [{"id": a, "name": f"bench-{a[-4:]}"} for a in accounts]}
    doc["scope"]["regions"] = regions
    doc["scope"]["services"] = services
    path = tmp / f"policy-{len(services)}-{len(regions)}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class VirtualClock:
    """Sweep k starts at T0 + k x interval however long the sweeps before it took in real time;
    within a sweep, time runs as real time does."""

    def __init__(self, interval: float) -> None:
        import datetime as dt

        self.interval = interval
        self.t0 = dt.datetime.now(dt.UTC)
        self.base = self.t0
        self.real0 = time.monotonic()

    def start_sweep(self, k: int) -> None:
        import datetime as dt

        self.base = self.t0 + dt.timedelta(seconds=k * self.interval)
        self.real0 = time.monotonic()

    def __call__(self) -> Any:
        import datetime as dt

        return self.base + dt.timedelta(seconds=time.monotonic() - self.real0)


def api_calls(registry: Any) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for family in registry.collect():
        if family.name != "posture_aws_api_requests":
            continue
        for s in family.samples:
            if s.name.endswith("_total"):
                out[(s.labels["aws_service"], s.labels["operation"])] += int(s.value)
    return out


def api_errors(registry: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for family in registry.collect():
        if family.name == "posture_aws_api_errors":
            for s in family.samples:
                if s.name.endswith("_total") and s.value:
                    out[s.labels["error_code"]] += int(s.value)
    return out


def lambda_operations() -> set[tuple[str, str]]:
    """Operations the Lambda targets make (declared by the Lambda collector and by no other)."""
    from daemon.collectors import awslambda, ecr, ecs, rds

    others = {(op.service, op.operation) for m in (ecr, ecs, rds) for op in m.OPERATIONS}
    mine = {(op.service, op.operation) for op in awslambda.OPERATIONS}
    # region posture (Config, CloudTrail) is read by Lambda and by RDS targets: counted here
    return {k for k in mine if k not in others or k[0] in ("config", "cloudtrail")}


def breakdown(
    calls: Counter[tuple[str, str]], lambda_calls: int, functions: int
) -> dict[str, float]:
    """Where the Lambda targets' calls go, per function: list pages, per-function details (cold:
    every function; steady: the rolling refresh's share and the changed ones) and the
    account-region lookups (Config, CloudTrail, concurrency, layers, code signing, logs, IAM)."""
    listing = calls[("lambda", "ListFunctions")]
    details = sum(
        v for (svc, op), v in calls.items() if svc == "lambda" and op in PER_FUNCTION_OPERATIONS
    )
    per = max(1, functions)
    return {
        "list_pages": round(listing / per, 3),
        "function_details": round(details / per, 3),
        "account_region_lookups": round((lambda_calls - listing - details) / per, 3),
    }


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# CPUs of what stands for the world outside the daemon (moto as AWS, the probe as Prometheus)
# once `pin_cpus` split the machine; empty: not pinned.
OUTSIDE_CPUS: set[int] = set()
# moto's process id, once started: its CPU seconds during a sweep are moto's busy time
MOTO_PID: list[int] = []


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid`, all its threads (Linux /proc); None if
    unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def moto_cpus() -> int:
    """The CPUs moto's process may run on: its CPU seconds during a sweep, divided by them, bound
    the sweep's time from below (k CPUs do at most k seconds of work a second). Pinned on a
    2-core machine that is one CPU, shared with the probe only, and the bound is moto's busy
    time itself; with more, the bound is looser (moto is one Python process, so its threads
    overlap only where they release the interpreter, in socket I/O)."""
    try:
        return len(os.sched_getaffinity(MOTO_PID[0])) if MOTO_PID else os.cpu_count() or 1
    except OSError:
        return os.cpu_count() or 1


def pin_cpus(moto_pid: int) -> dict[str, list[int]] | None:
    """In production the daemon shares no CPU with AWS or with Prometheus; on one machine moto
    and the daemon would otherwise compete for the same cores, and a sweep's figures (its wall
    time, /metrics latency) would measure moto's load as much as the daemon's. With 2+ CPUs: the
    daemon (this process) gets the first, moto and the probe the others. None: not pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    daemon, outside = {cpus[0]}, set(cpus[1:])
    os.sched_setaffinity(moto_pid, outside)
    # every thread of this process, not only the calling one; threads started later inherit it
    for task in Path("/proc/self/task").iterdir():
        os.sched_setaffinity(int(task.name), daemon)
    OUTSIDE_CPUS.update(outside)
    return {"daemon": sorted(daemon), "moto_and_probe": sorted(outside)}


class ScrapeProbe:
    """Scrapes /metrics once a second from a child process (`run_probe`) while the block runs;
    yields the list the latencies (s) are put in when the block ends. No port: no probe."""

    def __init__(self, port: int | None) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.child: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> list[float]:
        if self.port is not None:
            self.child = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "_probe",
                f"http://127.0.0.1:{self.port}/metrics",
                "1.0",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            if OUTSIDE_CPUS:  # the scraper plays Prometheus: not on the daemon's CPU
                os.sched_setaffinity(self.child.pid, OUTSIDE_CPUS)
        return self.latencies

    async def __aexit__(self, *exc: object) -> None:
        if self.child is None:
            return
        assert self.child.stdin is not None
        self.child.stdin.close()
        out, _ = await self.child.communicate()
        if self.child.returncode != 0:
            raise SystemExit(f"the /metrics probe failed ({self.child.returncode})")
        self.latencies.extend(float(line) / 1000 for line in out.decode().split())


class GcPauses:
    """Records how long each garbage collection takes while the block runs, by generation: a
    pass holds the GIL throughout, so it stalls every thread, the HTTP server's included (the
    young generation's passes too: tens of ms each when calls left cyclic garbage behind)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        # unreachable objects found (cyclic garbage: freed by the collector, not by refcounts)
        self.collected: dict[int, int] = {0: 0, 1: 0, 2: 0}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)
            self.collected[info["generation"]] += info["collected"]

    async def __aenter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    async def __aexit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def gc_summary(gcs: GcPauses) -> dict[str, dict[str, float]]:
    return {
        f"gen{g}": {
            "count": len(p),
            "max_ms": round(max(p, default=0) * 1000, 1),
            "total_ms": round(sum(p) * 1000, 1),
            "collected": gcs.collected[g],
        }
        for g, p in sorted(gcs.pauses.items())
    }


async def measure_sweep(
    daemon: Any, label: str, moto_rps: float, floor_ms: float, raw_ms: float, probe: bool
) -> dict[str, Any]:
    from daemon.aws.pacing import bucket_for

    pacer = daemon.gateway.pacer
    registry = daemon.registry
    calls_before = api_calls(registry)
    errors_before = api_errors(registry)
    granted_before = {k: b.granted for k, b in pacer.buckets().items()}
    async with ScrapeProbe(daemon.http.port if probe else None) as latencies, GcPauses() as pauses:
        moto0 = process_cpu_seconds(MOTO_PID[0]) if MOTO_PID else None
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        outcomes = await daemon.reconciler.sweep_once(keep_results=False)
        wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
        moto1 = process_cpu_seconds(MOTO_PID[0]) if MOTO_PID else None
    moto_cpu = moto1 - moto0 if moto0 is not None and moto1 is not None else None

    calls = api_calls(registry) - calls_before
    errors = api_errors(registry) - errors_before
    view = daemon.store.view()
    resources: Counter[str] = Counter()
    for result in view.results.values():
        resources.update(result.resources)
    functions = resources.get("lambda-function", 0)
    total_resources = sum(resources.values())
    lam_ops = lambda_operations()
    lambda_calls = sum(v for k, v in calls.items() if k in lam_ops)
    shared = sum(
        v
        for (service, op), v in calls.items()
        if service == "lambda" and bucket_for("lambda", op) == "lambda-control"
    )
    # the minimum possible time: quota-bound per account-region, or moto-bound
    quota_bound = 0.0
    busiest = ""
    for key, bucket in pacer.buckets().items():
        used = bucket.granted - granted_before.get(key, 0)
        t = max(0.0, used - bucket.capacity) / bucket.ceiling
        if t > quota_bound:
            quota_bound, busiest = t, "/".join(key)
    total = sum(calls.values())
    # moto-bound, two ways: the calls at the probe's rate (detail reads, mostly 404s: the cheapest
    # calls a sweep makes), and moto's busy time, its CPU seconds while the sweep ran over the
    # CPUs it may use (the sweep's own mix: a ListFunctions page of 50 functions with their
    # versions, ECR, ECS and RDS descriptions cost moto several times a detail read). The larger
    # is the moto-bound time.
    probe_bound = total / moto_rps if moto_rps else 0.0
    cpus = moto_cpus()
    busy_bound = moto_cpu / cpus if moto_cpu is not None else 0.0
    moto_bound = max(probe_bound, busy_bound)
    minimum = max(quota_bound, moto_bound)
    probe_minimum = max(quota_bound, probe_bound)  # the yardstick of earlier rounds
    by_resource = {
        f"{service}:{op}": round(v / max(1, functions if service in ("lambda", "iam") else 1), 4)
        for (service, op), v in sorted(calls.items())
        if v
    }
    failed = [o for o in outcomes if o.error is not None]
    out = {
        "sweep": label,
        "targets": len(outcomes),
        "failed_targets": len(failed),
        "failed_errors": dict(Counter(o.error for o in failed if o.error)),
        "wall_seconds": round(wall, 2),
        "resources": dict(resources),
        "functions": functions,
        "aws_calls_total": total,
        "aws_calls_by_operation": {f"{s}:{o}": v for (s, o), v in sorted(calls.items()) if v},
        "calls_per_function_by_operation_lambda_iam": by_resource,
        "lambda_target_calls_per_function": round(lambda_calls / max(1, functions), 3),
        "shared_bucket_calls_per_function": round(shared / max(1, functions), 3),
        "lambda_calls_per_function_breakdown": breakdown(calls, lambda_calls, functions),
        "throttles": sum(v for code, v in errors.items() if "hrottl" in code or "TooMany" in code),
        "error_codes": dict(errors),
        "cpu_seconds": round(cpu, 2),
        "cpu_seconds_per_1000_resources": round(cpu / max(1, total_resources) * 1000, 3),
        "cpu_seconds_per_1000_functions": round(cpu / max(1, functions) * 1000, 3),
        # what the same calls cost bare aiobotocore: the floor for any botocore-based daemon
        "client_floor_cpu_seconds_per_1000_functions": round(
            total * floor_ms / max(1, functions), 3
        ),
        # what they cost written and read the least costly way (RawHttp): any Python client's
        "raw_http_floor_cpu_seconds_per_1000_functions": round(
            total * raw_ms / max(1, functions), 3
        ),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "gc_pauses": gc_summary(pauses),
        "quota_bound_seconds": round(quota_bound, 2),
        "quota_bound_bucket": busiest,
        "moto_bound_seconds": round(moto_bound, 2),
        "moto_bound_by_probe_rate_seconds": round(probe_bound, 2),
        "moto_cpu_seconds": round(moto_cpu, 2) if moto_cpu is not None else None,
        "moto_cpus": cpus,
        "minimum_seconds": round(minimum, 2),
        "achieved_over_minimum": round(wall / minimum, 2) if minimum else None,
        "achieved_over_probe_minimum": round(wall / probe_minimum, 2) if probe_minimum else None,
    }
    if latencies:
        ordered = sorted(latencies)
        out["metrics_scrape_ms"] = {
            "count": len(latencies),
            "p50": round(statistics.median(ordered) * 1000, 1),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
            "max": round(ordered[-1] * 1000, 1),
        }
    return out


def _default_cloudwatch_interval() -> float:
    from daemon.config import ReconcilerSettings

    return ReconcilerSettings().cloudwatch_interval_seconds


def settings_for(policy: Path, args: argparse.Namespace, **shard: Any) -> Any:
    from daemon.config import load_settings

    return load_settings(
        policy_file=policy,
        http={"host": "127.0.0.1", "port": 0},
        log={"level": "warning", "format": "json"},
        reconciler={
            "interval_seconds": args.interval,
            "max_data_age_seconds": args.max_data_age,
            "cloudwatch_interval_seconds": _default_cloudwatch_interval(),
            "workers": args.workers,
            "per_target_concurrency": args.per_target_concurrency,
            "target_timeout_seconds": 3600,
        },
        aws={
            "pacing": {"share": args.share, "quota_multiplier": args.quota_multiplier},
            "max_inflight_per_account": args.max_inflight,
            **({"max_open_clients": args.max_open_clients} if args.max_open_clients else {}),
        },
        shard=shard or {},
    )


def state_series(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Compliance series (from the state store), timestamps left out (they differ per replica)."""
    from daemon.metrics import names

    state = {d.name for d in names.ALL if d.source == "state"}
    out = {}
    for family in registry.collect():
        if family.name not in state or family.name.endswith("timestamp_seconds"):
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def sharding_demo(
    accounts: list[str], region: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    from daemon.app import Daemon
    from daemon.policy import load_policy

    policy = policy_file(accounts, [region], ["lambda"], tmp)

    def daemon(**shard: Any) -> Daemon:
        # every resource series, so the comparison is not cut by the per-replica series cap
        settings = settings_for(policy, args, **shard)
        settings = settings.model_copy(
            update={"metrics": settings.metrics.model_copy(update={"resource_series_limit": 10**7})}
        )
        return Daemon(settings, load_policy(policy))

    one = daemon(count=1, index=0)
    halves = [daemon(count=2, index=i) for i in range(2)]
    thirds = [daemon(count=3, index=i) for i in range(3)]

    async def settle(d: Daemon) -> int:
        """Sweep until every target has succeeded once (a failed one -- moto overloaded by three
        replicas' cold sweeps at once, a call past its deadline -- is retried, as the daemon's
        backoff would); the failed reconciles along the way."""
        failed = 0
        for _ in range(5):
            outcomes = await d.reconciler.sweep_once(keep_results=False)
            failed += sum(1 for o in outcomes if o.error is not None)
            if all(t in d.store.view().results for t in d.reconciler.targets):
                break
        return failed

    retried = await asyncio.gather(settle(one), *(settle(h) for h in halves))
    for t in thirds:
        await t.reconciler.refresh_targets()  # discovery only: who owns which account

    def owned(d: Daemon) -> set[str]:
        return {t.account_id for t in d.reconciler.targets}

    single = state_series(one.registry)
    union: dict[Any, float] = {}
    overlap = 0
    for h in halves:
        series = state_series(h.registry)
        overlap += len(union.keys() & series.keys())
        union.update(series)
    two = [owned(h) for h in halves]
    three = [owned(t) for t in thirds]
    moved = sum(
        1
        for a in accounts
        if next(i for i, s in enumerate(two) if a in s)
        != next(i for i, s in enumerate(three) if a in s)
    )
    for d in (one, *halves, *thirds):
        await d.gateway.close()
    return {
        "accounts": len(accounts),
        "replicas_of_2_accounts": [len(s) for s in two],
        "replicas_of_3_accounts": [len(s) for s in three],
        "union_of_2_equals_1": union == single,
        "failed_reconciles_retried": retried,
        "series_one_replica": len(single),
        "series_union_of_2": len(union),
        "series_in_both_replicas": overlap,
        "accounts_lost_2": len(set(accounts) - set().union(*two)),
        "accounts_doubled_2": sum(len(s) for s in two) - len(set().union(*two)),
        "accounts_lost_3": len(set(accounts) - set().union(*three)),
        "accounts_doubled_3": sum(len(s) for s in three) - len(set().union(*three)),
        "accounts_moved_2_to_3": moved,
    }


async def three_sweeps(
    accounts: list[str],
    regions: list[str],
    args: argparse.Namespace,
    tmp: Path,
    report: dict[str, Any],
) -> None:
    """Cold, steady (no change) and 1% changed sweeps, one interval apart on the virtual clock."""
    from daemon.app import Daemon
    from daemon.policy import load_policy

    policy = policy_file(accounts, regions, ["lambda", "ecr", "ecs", "rds"], tmp)
    clock = VirtualClock(args.interval)
    daemon = Daemon(settings_for(policy, args), load_policy(policy), clock=clock)
    await daemon.warm_up()  # as Daemon.run() does before it serves
    await daemon.http.start()
    rps = report["moto_requests_per_second"]
    floor, raw = report["client_cpu_ms_per_call"], report["raw_http_cpu_ms_per_call"]
    sweeps = []
    try:
        clock.start_sweep(0)
        sweeps.append(await measure_sweep(daemon, "cold", rps, floor, raw, True))
        print(table(sweeps), flush=True)
        # as the running daemon does once every target finished a first sweep (daemon/app.py)
        started = time.perf_counter()
        daemon.settle_heap()
        report["heap_settle_pause_ms"] = round((time.perf_counter() - started) * 1000, 1)
        report["frozen_objects_after_settle"] = gc.get_freeze_count()
        clock.start_sweep(1)
        sweeps.append(await measure_sweep(daemon, "steady", rps, floor, raw, True))
        report["changed_functions"] = int(
            await child("_change", len(accounts), len(regions), args.functions, args.changed)
        )
        clock.start_sweep(2)
        sweeps.append(
            await measure_sweep(daemon, f"changed-{args.changed:.0%}", rps, floor, raw, False)
        )
    finally:
        await daemon.http.stop()
        await daemon.gateway.close()
    report["sweeps"] = sweeps
    # every call of the Lambda targets in the steady sweep (listings, lookups and one interval's
    # share of the rolling refresh), per function
    report["steady_calls_per_unchanged_function"] = sweeps[1]["lambda_target_calls_per_function"]
    # the definition: list pages plus the rolling refresh's share, per function
    parts = sweeps[1]["lambda_calls_per_function_breakdown"]
    report["steady_list_and_refresh_per_unchanged_function"] = round(
        parts["list_pages"] + parts["function_details"], 3
    )
    print(table(sweeps), flush=True)


def table(rows: Iterable[dict[str, Any]]) -> str:
    cols = [
        ("sweep", "sweep"),
        ("wall_seconds", "wall s"),
        ("minimum_seconds", "min s"),
        ("achieved_over_minimum", "ach/min"),
        ("moto_cpu_seconds", "moto cpu s"),
        ("achieved_over_probe_minimum", "ach/probe-min"),
        ("aws_calls_total", "calls"),
        ("lambda_target_calls_per_function", "calls/fn"),
        ("shared_bucket_calls_per_function", "shared/fn"),
        ("cpu_seconds_per_1000_functions", "cpu s/1k fn"),
        ("client_floor_cpu_seconds_per_1000_functions", "aiobotocore floor"),
        ("raw_http_floor_cpu_seconds_per_1000_functions", "raw floor"),
        ("peak_rss_mb", "RSS MB"),
        ("gc_max_ms", "GC max ms"),
        ("failed_targets", "failed"),
        ("throttles", "throttles"),
    ]
    lines = [" | ".join(h for _, h in cols)]
    lines.append(" | ".join("-" * len(h) for _, h in cols))
    for row in rows:
        r = {**row, "gc_max_ms": max(g["max_ms"] for g in row["gc_pauses"].values())}
        lines.append(" | ".join(str(r.get(k, "")) for k, _ in cols))
    return "\n".join(lines)


def _environment() -> None:
    """Simulated AWS only: fake credentials, no POSTURE_* overrides, quiet logs."""
    for key in [k for k in os.environ if k.startswith("POSTURE_")]:
        os.environ.pop(key)
    from daemon.logging import setup_logging

    setup_logging("warning", "json")
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"] = "us-east-1"
    os.environ.pop("AWS_PROFILE", None)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    _environment()
    accounts = accounts_of(args.accounts)
    regions = list(REGIONS[: args.regions])
    moto = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "_moto",
        "close" if args.connection_close else "keep-alive",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert moto.stdout is not None and moto.stdin is not None
    url = (await moto.stdout.readline()).decode().strip()
    os.environ["AWS_ENDPOINT_URL"] = url
    MOTO_PID.append(moto.pid)
    report: dict[str, Any] = {
        "sizes": {
            "accounts": args.accounts,
            "regions": len(regions),
            "functions_per_region": args.functions,
            "changed_fraction": args.changed,
        },
        "settings": {
            "share": args.share,
            "quota_multiplier": args.quota_multiplier,
            "interval_seconds": args.interval,
            "max_data_age_seconds": args.max_data_age,
            "cloudwatch_interval_seconds": _default_cloudwatch_interval(),
            "workers": args.workers,
            "per_target_concurrency": args.per_target_concurrency,
            "max_inflight_per_account": args.max_inflight,
            "max_open_clients": args.max_open_clients or "default",
            "moto_connections": "close" if args.connection_close else "keep-alive",
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    try:
        started = time.monotonic()
        await child("_seed", args.accounts, len(regions), args.functions)
        report["seed_seconds"] = round(time.monotonic() - started, 1)
        print(f"seeded in {report['seed_seconds']} s", flush=True)
        if not args.no_pinning:
            report["machine"]["cpu_affinity"] = pin_cpus(moto.pid)
        rps, floor_ms, raw_ms = (float(v) for v in (await child("_throughput")).split())
        report["moto_requests_per_second"] = round(rps, 1)
        report["client_cpu_ms_per_call"] = round(floor_ms, 3)
        report["raw_http_cpu_ms_per_call"] = round(raw_ms, 3)
        print(
            f"moto: {rps:.1f} requests/s; CPU ms per call: bare aiobotocore {floor_ms:.2f}, "
            f"raw HTTP/1.1 {raw_ms:.2f}",
            flush=True,
        )

        tmp = Path(tempfile.mkdtemp(prefix="posture-bench-"))
        await three_sweeps(accounts, regions, args, tmp, report)
        if not args.skip_sharding:
            report["sharding"] = await sharding_demo(accounts, regions[0], args, tmp)
            print(json.dumps(report["sharding"], indent=1), flush=True)
    finally:
        moto.stdin.close()
        await asyncio.wait_for(moto.wait(), timeout=30)
    return report


def run_probe(url: str, every: float) -> None:
    """Child: scrapes `url` every `every` s as Prometheus does (one keep-alive connection, its
    Accept and Accept-Encoding headers) and prints each scrape's latency in ms, until stdin
    closes. A process of its own, as Prometheus is: a probe on the daemon's event loop (or in its
    process, behind its GIL) would time the daemon's stalls as its own."""
    import http.client
    import select
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    while True:
        started = time.perf_counter()
        conn.request("GET", parts.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        elapsed = (time.perf_counter() - started) * 1000
        if resp.status != 200 or not body:
            raise SystemExit(f"probe: HTTP {resp.status}")
        print(f"{elapsed:.2f}", flush=True)
        if select.select([sys.stdin], [], [], every)[0]:
            return  # stdin closed (or written to): stop


async def child(command: str, *argv: object) -> str:
    """Run this file's `command` in a child process (same environment, same CPU affinity as this
    process); its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        command,
        *(str(a) for a in argv),
        env=os.environ.copy(),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"bench child {command} failed ({proc.returncode})")
    return out.decode()


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_moto":
        run_moto(keep_alive=sys.argv[2] == "keep-alive")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_probe":
        run_probe(sys.argv[2], float(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        n_accounts, n_regions, n_functions = (int(v) for v in sys.argv[2:5])
        asyncio.run(seed(accounts_of(n_accounts), list(REGIONS[:n_regions]), n_functions))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_throughput":
        print(*asyncio.run(moto_throughput(accounts_of(1)[0], REGIONS[0])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_change":
        n_accounts, n_regions, n_functions = (int(v) for v in sys.argv[2:5])
        accounts, regions = accounts_of(n_accounts), list(REGIONS[:n_regions])
        print(asyncio.run(change(accounts, regions, n_functions, float(sys.argv[5]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--regions", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--functions", type=int, default=100, help="per account-region")
    parser.add_argument("--changed", type=float, default=0.01, help="fraction changed")
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--quota-multiplier", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--max-data-age", type=float, default=3600.0)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--per-target-concurrency", type=int, default=8)
    parser.add_argument("--max-inflight", type=int, default=20)
    parser.add_argument(
        "--max-open-clients", type=int, default=0, help="AWS clients kept open (0: the default)"
    )
    parser.add_argument("--skip-sharding", action="store_true")
    parser.add_argument(
        "--no-pinning",
        action="store_true",
        help="let the daemon, moto and the probe share every CPU",
    )
    parser.add_argument(
        "--connection-close",
        action="store_true",
        help="moto on werkzeug's development server: a new TCP connection per call",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "scale-results.json")
    args = parser.parse_args()
    report = asyncio.run(main(args))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    cli()
