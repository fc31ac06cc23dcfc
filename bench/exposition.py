"""/metrics render time: the cached fast path (daemon/metrics/exposition.py) vs the collector.

    .venv/bin/python bench/exposition.py                      # the default benchmark's size
    .venv/bin/python bench/exposition.py --accounts 4         # smaller

Builds, without AWS, a state store the size of bench/scale.py's default estate: 20 accounts x 3
regions x 4 services = 240 targets, 100 Lambda functions per region (6,000), each Lambda target
with every Lambda control evaluated, about two violations per function (so the default cap of
10,000 per-resource series cuts), some exemptions and evaluation errors, a backup timestamp per
function and the concurrency measures; ECR/ECS/RDS targets with their controls and
a few resources. The registry is the daemon's (HealthMetrics, process collector, state).

Prints the time to render /metrics, in the Prometheus text format and in OpenMetrics (Prometheus
3's Accept header), for:
  old      StateCollector through prometheus_client's encoder (what /metrics did before);
  cold     the fast path's first scrape after every target published (renders all 240 targets);
  warm     nothing changed since the last scrape (joins cached text);
  steady   every target re-published with equal numbers (a sweep that found nothing new);
  1 target one Lambda target re-published with other numbers since the last scrape;
  busy     warm, while another thread burns CPU (as the event loop does during a sweep; the GIL
           is shared, so this is the wall time a scrape sees then).
and the body size, series count, and how long gzip takes on it (at /metrics' level and at 6).
Each figure is the median of --repeat runs (cold: a fresh cache each run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.exposition import choose_encoder  # noqa: E402

from daemon.config import MetricsSettings  # noqa: E402
from daemon.controls.registry import all_controls  # noqa: E402
from daemon.measures import Sample, sample  # noqa: E402
from daemon.metrics import names as n  # noqa: E402
from daemon.metrics.collector import StateCollector  # noqa: E402
from daemon.metrics.compress import GzipSegments  # noqa: E402
from daemon.metrics.exposition import Exposition, Registry  # noqa: E402
from daemon.metrics.health import HealthMetrics  # noqa: E402
from daemon.model import Finding, Status, Target  # noqa: E402
from daemon.server import GZIP_LEVEL  # noqa: E402
from daemon.state import StateStore, TargetResult  # noqa: E402

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
SERVICES = ("lambda", "ecr", "ecs", "rds")
BUCKETS = (
    "lambda-get-function",
    "lambda-get-policy",
    "lambda-control",
    "ecr",
    "ecs",
    "rds",
    "cloudwatch",
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
FORMATS = {"text": "", "openmetrics": PROMETHEUS_3}
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RESOURCE_TYPES = {"lambda": "lambda-function", "ecr": "ecr-repository", "ecs": "ecs-service"}


def target_result(t: Target, functions: int, seed: int) -> TargetResult:
    controls = [(c.id, c.severity) for c in all_controls().values() if c.service == t.service]
    resources = functions if t.service == "lambda" else 5
    kind = RESOURCE_TYPES.get(t.service, "rds-db-instance")
    findings: list[Finding] = []
    samples: list[Sample] = []
    for i in range(resources):
        arn = f"arn:aws:{t.service}:{t.region}:{t.account_id}:{kind}:res-{i:04d}"
        for j, (control, severity) in enumerate(controls):
            k = (i * 7 + j * 13 + seed) % 31
            if k < 2:  # ~2 violations per resource
                status = Status.FAIL
            elif k == 2:
                status = Status.ERROR
            else:
                status = Status.PASS
            findings.append(
                Finding(
                    resource=arn,
                    resource_type=kind,
                    account_id=t.account_id,
                    region=t.region,
                    service=t.service,
                    control=control,
                    severity=severity,
                    status=status,
                    evidence="",
                    exempted=status is Status.FAIL and (i + j) % 17 == 0,
                )
            )
        if t.service == "lambda":
            samples.append(
                sample(n.BACKUP_LAST_TIMESTAMP.name, 1.767e9 + i, resource=arn, kind="version")
            )
    if t.service == "lambda":
        samples += [
            sample(n.LAMBDA_CONCURRENCY_LIMIT.name, 1000),
            sample(n.LAMBDA_UNRESERVED.name, 900),
            sample(n.LAMBDA_RESERVED.name, 100),
            sample(n.LAMBDA_CONCURRENT_PEAK.name, 120 + seed),
            sample(n.LAMBDA_HEADROOM.name, 880 - seed),
            sample(n.LAMBDA_THROTTLES.name, 0),
            *(
                sample(n.LAMBDA_DATAPOINTS.name, 1440, metric=m)
                for m in ("ConcurrentExecutions", "UnreservedConcurrentExecutions", "Throttles")
            ),
        ]
    return TargetResult.build(t, NOW, findings, controls, {kind: resources}, samples)


def build(accounts: int, functions: int) -> tuple[StateStore, Registry, StateCollector]:
    store = StateStore()
    ids = [f"{700000000000 + i * 1001:012d}" for i in range(accounts)]
    targets = [Target(a, r, s) for a in ids for r in REGIONS for s in SERVICES]
    store.set_targets(targets)
    store.set_accounts({a: f"account-{a[-4:]}" for a in ids}, dict.fromkeys(ids, True))
    store.set_policy_samples([sample(n.LAMBDA_LOOKBACK.name, 86400)])
    for i, t in enumerate(targets):
        store.publish(target_result(t, functions, 0), at=1.767e9 + i)
    registry = Registry()
    metrics = HealthMetrics(registry)
    metrics.zero_initialise(SERVICES, [("lambda", f"Operation{i}") for i in range(40)])
    # the daemon's own series at this size: a pacing rate per account, region and quota bucket,
    # the histograms of every service (~900 samples at 20 accounts, as /metrics has then)
    for a in ids:
        metrics.rate_limit.labels(a, "global", "iam").set(10)
        for r in REGIONS:
            for bucket in BUCKETS:
                metrics.rate_limit.labels(a, r, bucket).set(7.5)
    for service in (*SERVICES, "iam", "cloudwatch", "sts", "organizations"):
        metrics.api_duration.labels(service).observe(0.02)
        metrics.data_age.labels(service).observe(300)
        metrics.reconcile_duration.labels(service).observe(2)
    state = StateCollector(store, MetricsSettings(), dict(all_controls()))
    registry.register(state)
    return store, registry, state


def stable(body: bytes) -> list[bytes]:
    """The lines of an exposition but the process collector's (CPU time moves between calls)."""
    return [line for line in body.split(b"\n") if b"process_" not in line]


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1000


def median_ms(runs: list[float]) -> float:
    return statistics.median(runs) * 1000


class Bench:
    def __init__(self, accounts: int, functions: int, repeat: int) -> None:
        start = time.perf_counter()
        self.store, self.registry, self.state = build(accounts, functions)
        self.functions = functions
        self.repeat = repeat
        self.seed = 0
        results = self.store.view().results
        print(f"store built in {time.perf_counter() - start:.1f}s: {len(results)} targets")
        print(f"state series: {sum(len(f.samples) for f in self.state.collect())}")
        self.lambda_target = next(t for t in sorted(results) if t.service == "lambda")

    def after(self, change: Callable[[], object], e: Exposition, accept: str, repeat: int) -> float:
        """The render time after `change`, median of `repeat` runs."""
        runs = []
        for _ in range(repeat):
            change()
            start = time.perf_counter()
            e.render(accept)
            runs.append(time.perf_counter() - start)
        return median_ms(runs)

    def steady(self) -> None:
        """Every target re-published with equal numbers (new objects)."""
        for r in list(self.store.view().results.values()):
            self.store.publish(replace(r), at=1.9e9)

    def one_target(self) -> None:
        """One Lambda target re-published with other numbers."""
        self.seed += 1
        result = target_result(self.lambda_target, self.functions, self.seed)
        self.store.publish(result, at=1.8e9 + self.seed)

    def busy(self, e: Exposition, accept: str) -> float:
        """Warm render time while another thread burns CPU (holding the GIL half the time)."""
        stop = threading.Event()

        def burn() -> None:
            while not stop.is_set():
                sum(i * i for i in range(1000))

        burner = threading.Thread(target=burn)
        burner.start()
        try:
            return timed(lambda: e.render(accept), self.repeat)
        finally:
            stop.set()
            burner.join()

    def row(self, accept: str) -> tuple[float, ...]:
        registry, state, repeat = self.registry, self.state, self.repeat
        encoder, _ = choose_encoder(accept)
        old = timed(lambda: encoder(registry), max(1, repeat // 2))
        cold = timed(lambda: Exposition(registry, state).render(accept), repeat)
        e = Exposition(registry, state)
        body, _ = e.render(accept)
        assert stable(body) == stable(encoder(registry)), "fast path differs from the collector"
        warm = timed(lambda: e.render(accept), repeat)
        steady = self.after(self.steady, e, accept, max(1, repeat // 2))
        one = self.after(self.one_target, e, accept, repeat)
        return old, cold, warm, steady, one, self.busy(e, accept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--functions", type=int, default=100, help="Lambda functions per region")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bench = Bench(args.accounts, args.functions, args.repeat)
    cols = ("old", "cold", "warm", "steady", "1 target", "busy")
    print(f"{'format':<12}" + "".join(f"{c:>10}" for c in cols) + "  (ms)")
    for fmt, accept in FORMATS.items():
        print(f"{fmt:<12}" + "".join(f"{v:10.1f}" for v in bench.row(accept)), flush=True)
    e = Exposition(bench.registry, bench.state)
    pieces, _ = e.render_pieces(PROMETHEUS_3)
    body = b"".join(pieces)
    for level in (GZIP_LEVEL, 6):
        gzip_ms = timed(lambda: gzip.compress(body, level, mtime=0), args.repeat)  # noqa: B023
        size = len(gzip.compress(body, level, mtime=0)) / 1e6
        print(f"body {len(body) / 1e6:.1f} MB; gzip level {level}: {gzip_ms:.1f} ms, {size:.2f} MB")
    # what /metrics does (daemon/metrics/compress.py): segments of unchanged pieces are reused
    segments = GzipSegments(GZIP_LEVEL)
    first = timed(lambda: GzipSegments(GZIP_LEVEL).compress(pieces), args.repeat)
    size = len(segments.compress(pieces)) / 1e6
    warm = timed(lambda: segments.compress(e.render_pieces(PROMETHEUS_3)[0]), args.repeat)
    runs = []
    for _ in range(args.repeat):
        bench.one_target()
        fresh, _ = e.render_pieces(PROMETHEUS_3)
        start = time.perf_counter()
        segments.compress(fresh)
        runs.append(time.perf_counter() - start)
    print(
        f"segmented gzip level {GZIP_LEVEL}: {size:.2f} MB; first {first:.1f} ms, "
        f"warm {warm:.1f} ms (render included), 1 target {median_ms(runs):.1f} ms"
    )


if __name__ == "__main__":
    main()
