"""The daemon's own health metrics: ordinary instrumented metrics on the daemon's registry."""

from __future__ import annotations

from collections.abc import Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from daemon.metrics import names as n

# Created-timestamp series double the counter series and nothing here reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

_RECONCILE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_AGE_BUCKETS = (1, 60, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 14400)
_API_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _counter(d: n.MetricDef, registry: CollectorRegistry) -> Counter:
    return Counter(d.name, d.help, d.labels, registry=registry)


def _gauge(d: n.MetricDef, registry: CollectorRegistry) -> Gauge:
    return Gauge(d.name, d.help, d.labels, registry=registry)


class HealthMetrics:
    """Created once per daemon with its registry; passed to the parts that report."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reconcile_duration = Histogram(
            n.RECONCILE_DURATION.name,
            n.RECONCILE_DURATION.help,
            n.RECONCILE_DURATION.labels,
            buckets=_RECONCILE_BUCKETS,
            registry=registry,
        )
        self.reconcile_interval = _gauge(n.RECONCILE_INTERVAL, registry)
        self.reconciles = _counter(n.RECONCILES, registry)
        self.api_requests = _counter(n.API_REQUESTS, registry)
        self.api_errors = _counter(n.API_ERRORS, registry)
        self.api_throttles = _counter(n.API_THROTTLES, registry)
        self.api_duration = Histogram(
            n.API_DURATION.name,
            n.API_DURATION.help,
            n.API_DURATION.labels,
            buckets=_API_BUCKETS,
            registry=registry,
        )
        self.data_age = Histogram(
            n.DATA_AGE.name,
            n.DATA_AGE.help,
            n.DATA_AGE.labels,
            buckets=_AGE_BUCKETS,
            registry=registry,
        )
        self.rate_limit = _gauge(n.RATE_LIMIT, registry)
        self.workers_active = _gauge(n.WORKERS_ACTIVE, registry)
        self.workers_max = _gauge(n.WORKERS_MAX, registry)
        self.queue_depth = _gauge(n.QUEUE_DEPTH, registry)
        self.queue_longest_wait = _gauge(n.QUEUE_LONGEST_WAIT, registry)
        self.targets = _gauge(n.TARGETS, registry)
        self.policy_reloads = _counter(n.POLICY_RELOADS, registry)
        self.policy_reload_failures = _counter(n.POLICY_RELOAD_FAILURES, registry)
        self.policy_reload_ok = _gauge(n.POLICY_RELOAD_OK, registry)
        self.policy_last_reload = _gauge(n.POLICY_LAST_RELOAD, registry)
        self.policy_info = Info(n.POLICY_INFO.name, n.POLICY_INFO.help, registry=registry)
        self.discovery_errors = _counter(n.DISCOVERY_ERRORS, registry)
        self.build_info = Info(n.BUILD_INFO.name, n.BUILD_INFO.help, registry=registry)
        self.export_snapshots = _counter(n.EXPORT_SNAPSHOTS, registry)
        self.export_failures = _counter(n.EXPORT_FAILURES, registry)
        self.export_bytes = _counter(n.EXPORT_BYTES, registry)
        self.export_pruned = _counter(n.EXPORT_PRUNED, registry)
        self.shard_ordinal = _gauge(n.SHARD_ORDINAL, registry)
        self.total_shards = _gauge(n.TOTAL_SHARDS, registry)
        # process_* (start time, CPU, memory, file descriptors): alert rules use the start time
        ProcessCollector(registry=registry)

    def zero_initialise(
        self, services: Iterable[str], operations: Iterable[tuple[str, str]]
    ) -> None:
        """Create the series known to exist up front, so rate() and absent() behave from start."""
        for service in services:
            self.reconcile_duration.labels(service)
            self.targets.labels(service)
            for result in ("success", "failure"):
                self.reconciles.labels(service, result)
        for service, operation in operations:
            self.api_requests.labels(service, operation)
        for stage in ("organizations", "regions", "credentials"):
            self.discovery_errors.labels(stage)

    def zero_initialise_export(self) -> None:
        """The export's series, created when the export is enabled."""
        for result in ("written", "concurrent", "failed"):
            self.export_snapshots.labels(result)
        for stage in ("index", "read", "encrypt", "code", "write", "retention", "internal"):
            self.export_failures.labels(stage)
        for kind in ("snapshot", "partial", "orphans", "claim"):
            self.export_pruned.labels(kind)
