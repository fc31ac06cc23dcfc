"""The reconciler: discover targets, queue them, and reconcile each on its interval.

reconcile(target) = collect (I/O) -> evaluate (pure) -> publish (atomic swap in the state store).
Level-triggered: every reconcile compares the full desired state with the full actual state.
Success requeues the target after its jittered interval; failure keeps the last published result,
marks the target down and requeues it with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import structlog

from daemon.aws.api import AwsGateway
from daemon.aws.errors import AwsError, ErrorKind
from daemon.collectors.base import CollectContext, Collector
from daemon.config import Settings
from daemon.controls.engine import Evaluation, evaluate_steps, step
from daemon.export.exporter import Exporter
from daemon.measures import measure_policy, measure_target, sample
from daemon.metrics import names as n
from daemon.metrics.health import HealthMetrics
from daemon.model import Snapshot, Target
from daemon.model.awslambda import LambdaSnapshot
from daemon.policy.compiled import Policy
from daemon.policy.watch import PolicyHolder
from daemon.reconciler.events import Change
from daemon.reconciler.queue import Backoff, WorkQueue
from daemon.reconciler.targets import Discovery, TargetSource
from daemon.state import StateStore, TargetResult

log = structlog.get_logger("posture.reconciler")

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _evaluate(
    snapshot: Snapshot, policy: Policy, now: dt.datetime, turn: asyncio.Lock | None = None
) -> Evaluation:
    """The target's evaluation, one control per step of the event loop: a Lambda target's
    controls take tens of ms together, and a scrape waits for the loop to reach its hold
    (daemon/server.py, ScrapePriority) behind whatever step is running.

    With `turn`, one target is evaluated at a time: evaluation is CPU only, so taking turns
    costs no time, and the findings of dozens of half-evaluated targets are not held at once."""
    async with turn or contextlib.nullcontext():
        steps = evaluate_steps(snapshot, policy, now)
        while True:
            evaluation = step(steps)
            if evaluation is not None:
                return evaluation
            await asyncio.sleep(0)  # let the loop run (a scrape's hold) between controls


@dataclass(frozen=True, slots=True)
class Outcome:
    target: Target
    result: TargetResult | None
    error: str | None = None


class _SeenOnce:
    """Remembers recent messages so repeated data problems are logged once, not every sweep."""

    def __init__(self, size: int = 10000) -> None:
        self._seen: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._size = size

    def first_time(self, key: tuple[str, ...]) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


TARGET_TIMEOUT = "TargetTimeout"


class TargetDeadlineError(Exception):
    """One reconcile took longer than POSTURE_RECONCILER__TARGET_TIMEOUT_SECONDS."""


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(error code, kind) for logs and health: AWS codes, timeouts and bugs alike."""
    if isinstance(exc, AwsError):
        return exc.code, exc.kind.value
    if isinstance(exc, TargetDeadlineError):
        return TARGET_TIMEOUT, ErrorKind.TRANSIENT.value
    if isinstance(exc, TimeoutError):
        return "Timeout", ErrorKind.TRANSIENT.value
    return type(exc).__name__, "internal"


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        policy: PolicyHolder,
        gateway: AwsGateway,
        store: StateStore,
        metrics: HealthMetrics,
        collectors: Mapping[str, Collector],
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        exporter: Exporter | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.gateway = gateway
        self.store = store
        self.metrics = metrics
        self.collectors = dict(collectors)
        self.exporter = exporter  # None: the configuration export is off (no write call at all)
        self.clock = clock
        self.rng = rng or random.Random()
        rs = settings.reconciler
        self.queue: WorkQueue[Target] = WorkQueue(
            Backoff(rs.backoff_base_seconds, rs.backoff_max_seconds, rng=self.rng)
        )
        self.source = TargetSource(gateway, settings.shard, metrics)
        self.targets: frozenset[Target] = frozenset()
        self.discovery_problems: tuple[str, ...] = ("not discovered yet",)
        self.discovered = asyncio.Event()
        self._rediscover = asyncio.Event()
        self._active = 0
        self._seen = _SeenOnce()
        self._evaluating = asyncio.Lock()  # one target's evaluation at a time (_evaluate)
        self._account_up: dict[str, bool] = {}
        self._account_names: dict[str, str] = {}
        store.set_policy_samples(measure_policy(policy.current))
        metrics.workers_max.set(rs.workers)
        metrics.reconcile_interval.set(rs.interval_seconds)
        metrics.shard_ordinal.set(settings.shard.resolved_index)
        metrics.total_shards.set(settings.shard.count)

    # --- targets ----------------------------------------------------------------------------------
    def policy_changed(self, old: Policy, new: Policy) -> None:
        """A new policy applies from the next reconcile; a new scope means a new discovery."""
        self.store.set_policy_samples(measure_policy(new))
        if old.document.scope != new.document.scope:
            self._rediscover.set()

    def apply_discovery(self, found: Discovery) -> None:
        added = found.targets - self.targets
        removed = self.targets - found.targets
        self.targets = found.targets
        self.discovery_problems = found.problems
        self.store.set_targets(found.targets)
        for target in removed:
            self.queue.remove(target)
        for target in sorted(added):
            self.queue.add(target)
        self._account_names = dict(found.account_names)
        self._account_up = {
            a: self._account_up.get(a, True) and ok for a, ok in found.account_up.items()
        }
        self._publish_accounts()
        for service in self.policy.current.document.scope.services:
            self.metrics.targets.labels(service).set(
                sum(1 for t in found.targets if t.service == service)
            )
        if added or removed:
            log.info(
                "targets changed",
                targets=len(found.targets),
                added=len(added),
                removed=len(removed),
            )
        self.discovered.set()

    def _publish_accounts(self) -> None:
        self.store.set_accounts(self._account_names, self._account_up)

    async def refresh_targets(self) -> None:
        try:
            found = await self.source.discover(self.policy.current)
        except Exception as exc:  # discovery must not kill the daemon
            code, kind = describe_error(exc)
            log.error(
                "target discovery failed",
                error_code=code,
                error_kind=kind,
                exc_info=kind == "internal",
            )
            return
        self.apply_discovery(found)

    async def _discovery_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.reconciler.discovery_interval_seconds
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rediscover.wait(), timeout=interval)
            self._rediscover.clear()
            if not stop.is_set():
                await self.refresh_targets()

    def changed(self, change: Change) -> bool:
        """A change event (daemon/reconciler/events.py): forget the resource's cached details and
        reconcile its target now. False when the target is not this replica's."""
        target = Target(change.account_id, change.region, change.service)
        if target not in self.targets:
            return False
        invalidate = getattr(self.collectors.get(change.service), "invalidate", None)
        if invalidate is not None:
            invalidate(change.account_id, change.region, change.resource)
        self.queue.add(target)
        return True

    # --- one target -------------------------------------------------------------------------------
    async def reconcile(self, target: Target) -> TargetResult:
        """Collect, evaluate and publish one target. Raises on failure (nothing is published)."""
        collector = self.collectors[target.service]
        policy = self.policy.current
        now = self.clock()
        settings = self.settings
        ctx = CollectContext(
            target=target,
            enabled_controls=frozenset(cc.control.id for cc in policy.controls_for(target.service)),
            api=self.gateway.api(target.account_id, target.region),
            global_api=self.gateway.api(target.account_id, settings.aws.region),
            now=now,
            concurrency=settings.reconciler.per_target_concurrency,
            concurrency_window=policy.document.concurrency.window(),
            export=self.exporter is not None,
        )
        deadline = asyncio.timeout(settings.reconciler.target_timeout_seconds)
        try:
            async with deadline:
                snapshot = await collector.collect(ctx)
                if self.exporter is not None and isinstance(snapshot, LambdaSnapshot):
                    snapshot = await self.exporter.export(ctx, snapshot)
        except TimeoutError:
            if deadline.expired():
                raise TargetDeadlineError(target.key) from None
            raise
        evaluation = await _evaluate(snapshot, policy, now, self._evaluating)
        for issue in ctx.issues:
            if self._seen.first_time(("issue", issue.resource, issue.aspect, issue.message)):
                log.warning(
                    "odd data from AWS",
                    resource=issue.resource,
                    aspect=issue.aspect,
                    problem=issue.message,
                )
        for problem in evaluation.problems:
            if self._seen.first_time(("problem", problem)):
                log.error("control raised an exception", problem=problem)
        samples = measure_target(snapshot, policy, now)
        if ctx.fetched_at:
            stamp = now.timestamp()
            ages = self.metrics.data_age.labels(target.service)
            for fetched_at in ctx.fetched_at:
                ages.observe(max(0.0, stamp - fetched_at))
            samples = (*samples, sample(n.DATA_OLDEST_FETCH.name, min(ctx.fetched_at)))
        result = TargetResult.build(
            target,
            now,
            evaluation.findings,
            evaluation.controls,
            snapshot.resource_counts(),
            samples,
        )
        self.store.publish(result, time.time())
        return result

    async def _reconcile_tracked(self, target: Target) -> Outcome:
        service = target.service
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(
            target=target.key,
            aws_account_id=target.account_id,
            aws_region=target.region,
            aws_service=target.service,
        ):
            try:
                result = await self.reconcile(target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                code, kind = describe_error(exc)
                health = self.store.record_failure(target, code, time.time())
                self.metrics.reconciles.labels(service, "failure").inc()
                if isinstance(exc, AwsError) and exc.operation == "AssumeRole":
                    self._account_up[target.account_id] = False
                    self._publish_accounts()
                log.error(
                    "reconcile failed; keeping the last known state",
                    error_code=code,
                    error_kind=kind,
                    operation=getattr(exc, "operation", None),
                    consecutive_failures=health.consecutive_failures,
                    exc_info=kind == "internal",
                )
                return Outcome(target, None, code)
            finally:
                self.metrics.reconcile_duration.labels(service).observe(time.monotonic() - started)
            self.metrics.reconciles.labels(service, "success").inc()
            if not self._account_up.get(target.account_id, True):
                self._account_up[target.account_id] = True
                self._publish_accounts()
            violations = sum(result.violations.values())
            log.info(
                "reconciled",
                resources=sum(result.resources.values()),
                findings=len(result.findings),
                violations=violations,
                duration_s=round(time.monotonic() - started, 3),
            )
            return Outcome(target, result)

    # --- the long-running loop ------------------------------------------------------------------
    def _next_interval(self) -> float:
        rs = self.settings.reconciler
        return rs.interval_seconds * (1 + self.rng.uniform(-rs.jitter_fraction, rs.jitter_fraction))

    async def _worker(self) -> None:
        while True:
            target = await self.queue.get()
            if target is None:
                return
            self._active += 1
            self.metrics.workers_active.set(self._active)
            try:
                if target not in self.targets:
                    continue  # unassigned while it waited
                outcome = await self._reconcile_tracked(target)
                if target not in self.targets:
                    continue
                if outcome.error is None:
                    self.queue.forget(target)
                    self.queue.add_after(target, self._next_interval())
                else:
                    delay = self.queue.add_rate_limited(target)
                    log.info("backing off", target=target.key, retry_in_s=round(delay, 1))
            finally:
                self._active -= 1
                self.metrics.workers_active.set(self._active)
                self.queue.done(target)

    async def _gauges(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.metrics.queue_depth.set(self.queue.depth)
            self.metrics.queue_longest_wait.set(self.queue.longest_wait())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until stop is set; then finish in-flight reconciles within the grace period."""
        await self.refresh_targets()
        workers = [
            asyncio.create_task(self._worker(), name=f"worker-{i}")
            for i in range(self.settings.reconciler.workers)
        ]
        helpers = [
            asyncio.create_task(self._discovery_loop(stop), name="discovery"),
            asyncio.create_task(self._gauges(stop), name="queue-gauges"),
        ]
        await stop.wait()
        self.queue.shutdown()
        grace = self.settings.reconciler.shutdown_grace_seconds
        busy = self._active
        log.info("stopping", in_flight=busy, grace_s=grace)
        _, pending = await asyncio.wait(workers, timeout=grace)
        for task in (*pending, *helpers):
            task.cancel()
        await asyncio.gather(*workers, *helpers, return_exceptions=True)
        if pending:
            log.warning(
                "cancelled reconciles still running after the grace period", cancelled=len(pending)
            )

    # --- one sweep (posture-daemon check) -------------------------------------------------
    async def sweep_once(self, keep_results: bool = True) -> list[Outcome]:
        """Discover, reconcile every target once (bounded concurrency), and return the outcomes.

        `keep_results=False`: the outcomes come without their results (the store has each, as
        it keeps them), so the sweep holds no more than the long-running loop does -- which
        drops a reconcile's full result, passes included, once it is published. The benchmark
        sweeps so: the full results of every target, held until the last one finishes, would be
        counted as the daemon's memory."""
        await self.refresh_targets()
        sem = asyncio.Semaphore(self.settings.reconciler.workers)

        async def one(target: Target) -> Outcome:
            async with sem:
                outcome = await self._reconcile_tracked(target)
                return outcome if keep_results else replace(outcome, result=None)

        return list(await asyncio.gather(*(one(t) for t in sorted(self.targets))))
