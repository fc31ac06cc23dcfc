"""The composition root: builds the daemon's parts and runs them until a signal stops them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import ClassVar

import structlog

from daemon import __version__
from daemon.aws.api import AwsGateway
from daemon.collectors.base import Collector
from daemon.collectors.registry import build_collectors, declared_operations
from daemon.config import Settings
from daemon.controls.registry import all_controls
from daemon.export import operations as export_operations
from daemon.export.exporter import Exporter
from daemon.metrics.collector import StateCollector
from daemon.metrics.exposition import Exposition, Registry
from daemon.metrics.health import HealthMetrics
from daemon.policy.compiled import Policy
from daemon.policy.watch import PolicyHolder
from daemon.reconciler import events
from daemon.reconciler.events import EventConsumer
from daemon.reconciler.reconciler import Clock, Outcome, Reconciler, utcnow
from daemon.server import Heartbeat, HttpServer, build_app
from daemon.state import StateStore
from daemon.webconfig import WebConfigHolder, load_web_config

log = structlog.get_logger("posture.daemon")
SWITCH_INTERVAL_SECONDS = 0.001
GC_THRESHOLDS = (50_000, 20, 10)


def warm_services(settings: Settings) -> set[str]:
    """The services whose models are loaded before the first sweep: every service a sweep may
    call, and an opt-in feature's own only when it is on (S3: the export, SQS: the event fast
    path; ~7 MB of models a daemon without them would keep for nothing). A service outside the
    set still works: its model is loaded on first use."""
    services = {op.service for op in declared_operations() if not op.optional}
    if settings.export.enabled:
        services |= {op.service for op in export_operations.DAEMON}
    if settings.events.enabled:
        services |= {op.service for op in events.OPERATIONS}
    return services


class Daemon:
    heap_settled: ClassVar[bool] = False  # settle_heap ran in this process

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        *,
        collectors: Mapping[str, Collector] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        # Everything the daemon exports; registry.collect() renders it all the slow, generic way
        # (tests, the CLI, the benchmark), /metrics through `exposition` (cached state text).
        self.registry = Registry()
        self.metrics = HealthMetrics(self.registry)
        self.store = StateStore()
        # service models cut down to the calls the daemon declares (daemon/aws/models.py)
        self.gateway = AwsGateway(settings.aws, self.metrics, declared_operations())
        self.policy = PolicyHolder(settings.policy_file, policy, self.metrics)
        self.exporter: Exporter | None = None
        if settings.export.enabled:
            self.exporter = Exporter(
                settings.export, self.gateway, self.metrics, settings.aws.region
            )
            self.metrics.zero_initialise_export()
        self.reconciler = Reconciler(
            settings,
            self.policy,
            self.gateway,
            self.store,
            self.metrics,
            collectors if collectors is not None else build_collectors(settings),
            clock=clock,
            exporter=self.exporter,
        )
        self.policy.on_change = self.reconciler.policy_changed
        state = StateCollector(self.store, settings.metrics, dict(all_controls()))
        self.registry.register(state)
        self.exposition = Exposition(self.registry, state)
        self.metrics.build_info.info({"version": __version__, "revision": settings.build_revision})
        ops = declared_operations()
        self.metrics.zero_initialise(
            policy.document.scope.services, [(op.service, op.operation) for op in ops]
        )
        self.heartbeat = Heartbeat()
        web_config_file = settings.http.web_config_file
        self.web_config = WebConfigHolder(
            load_web_config(web_config_file) if web_config_file is not None else None
        )
        self.http = HttpServer(
            settings.http,
            build_app(self.exposition, self.heartbeat, self.ready, self.web_config),
            self.web_config,
        )
        self.stop = asyncio.Event()
        self.events: EventConsumer | None = None
        self._signals = 0

    def ready(self) -> tuple[bool, str]:
        if not self.reconciler.discovered.is_set():
            return False, "discovering targets"
        pending = self.store.pending_first_sweep()
        if pending:
            return False, f"{pending} target(s) have not finished a first sweep"
        return True, f"ready: {len(self.reconciler.targets)} target(s)"

    def _on_stop_signal(self, signum: int) -> None:
        """First SIGTERM/SIGINT: stop gracefully (exit 0). Second: exit at once, 128 + signal
        number (143 for SIGTERM, 130 for SIGINT), as a shell reports a process killed by it."""
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop signal: exiting now", signal=signal.Signals(signum).name)
            logging.shutdown()  # flush the log handlers; nothing else runs
            os._exit(128 + signum)
        log.info("stop signal received", signal=signal.Signals(signum).name)
        self.stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_reload_signal(self) -> None:
        self.policy.reload("SIGHUP")
        self.web_config.reload("SIGHUP")

    async def run(self, *, signals: bool = True) -> None:
        """Serve HTTP and reconcile until `stop` is set (by a signal or by the caller)."""
        if signals:
            self.install_signal_handlers()
        await self.warm_up()
        await self.http.start()
        log.info(
            "posture-daemon started",
            version=__version__,
            http_port=self.http.port,
            tls=self.web_config.tls is not None,
            basic_auth=bool(self.web_config.config and self.web_config.config.auth_required),
            policy=self.policy.current.source,
            policy_digest=self.policy.current.digest,
            shard=self.settings.shard.resolved_index,
            shards=self.settings.shard.count,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.heartbeat.run(self.stop))
                tg.create_task(
                    self.policy.watch(self.settings.reconciler.policy_poll_seconds, self.stop)
                )
                tg.create_task(self.reconciler.run(self.stop))
                tg.create_task(self._settle_after_first_sweep())
                tg.create_task(
                    self.web_config.watch(self.settings.reconciler.policy_poll_seconds, self.stop)
                )
                if self.settings.events.enabled:
                    tg.create_task(self._events())
        finally:
            await self.http.stop()
            await self.gateway.close()
            log.info("posture-daemon stopped")

    async def warm_up(self) -> None:
        """Load what lives as long as the process (AWS service models, client classes), then
        freeze the heap: the garbage collector no longer walks those objects in its full passes,
        which otherwise paused the event loop -- and with it /metrics and /livez -- for hundreds
        of ms. Objects made later (results, caches, clients) are collected as before; the frozen
        ones are still freed by reference counting. Once per process (one daemon per process in
        production; tests start many)."""
        if gc.get_freeze_count():
            return
        services = warm_services(self.settings)
        await self.gateway.sessions.warm_up(services)
        gc.collect()
        gc.freeze()
        # /metrics is served from a thread of its own (daemon/server.py): while a sweep keeps
        # this thread busy, each of a request's steps waits for the GIL up to the switch interval
        # (5 ms by default), a dozen times per request; 1 ms keeps a scrape at a few ms. Only
        # threads that want the GIL are switched to, so an idle server costs nothing.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        # A full collection holds the GIL for its whole pass (~1 us per object: 300-400 ms at
        # 6,000 functions), stalling the sweep and the HTTP thread. With CPython's thresholds
        # (700, 10, 10) the youngest objects are examined every 700 allocations, so whatever a
        # target holds while it is reconciled (AWS answers, snapshots, findings) is promoted to
        # the old generation and, as results replace each other, starts a full pass every few
        # seconds (12 in a 25 s steady sweep of the benchmark). Examined every 50,000 allocations,
        # that data dies young; full passes still run, on the same rule, far less often.
        gc.set_threshold(*GC_THRESHOLDS)
        log.info(
            "warmed up",
            services=sorted(services),
            frozen_objects=gc.get_freeze_count(),
            gc_thresholds=gc.get_threshold(),
        )

    def settle_heap(self) -> None:
        """Once the first sweep is done: one full collection, then freeze the heap again, as
        `warm_up` does before the first sweep. What that sweep built to last (the detail cache,
        the results, the AWS clients: ~600,000 objects at 10,000 functions) would otherwise be
        walked by the collector's middle-generation pass that promotes it (~350-550 ms at 10,000
        functions, measured in the benchmark's steady sweep) and then by every full pass for as
        long as it lives. Here it is walked once, at a time the daemon chooses, and never again;
        the frozen objects are still freed by reference counting when a refresh replaces them,
        and the collection just before the freeze leaves no cyclic garbage to freeze. The bound:
        a frozen object that later becomes part of a garbage cycle (a client the pool closes
        when its account leaves the scope) is not collected -- at most what was frozen here,
        never growing with time. Once per process, like `warm_up`; the pause is logged."""
        if Daemon.heap_settled:
            return
        Daemon.heap_settled = True
        started = time.perf_counter()
        collected = gc.collect()
        gc.freeze()
        log.info(
            "heap settled after the first sweep",
            pause_ms=round((time.perf_counter() - started) * 1000, 1),
            collected=collected,
            frozen_objects=gc.get_freeze_count(),
        )

    async def _settle_after_first_sweep(self) -> None:
        """`settle_heap` once every assigned target has finished (or failed) a first reconcile."""
        while not self.stop.is_set():
            if (
                self.reconciler.discovered.is_set()
                and self.reconciler.targets
                and not self.store.pending_first_sweep()
            ):
                self.settle_heap()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=1.0)

    async def _events(self) -> None:
        """The event fast path: SQS, read with the daemon's own credentials."""
        settings = self.settings
        assert settings.events.queue_url is not None  # checked by EventsSettings
        while not self.stop.is_set():
            try:
                own = await self.gateway.own_account_id()
                break
            except Exception as exc:  # retried: the sweeps report credentials problems
                log.error("change events: own account unknown", error=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=10)
        else:
            return
        # a long poll must end before the socket read timeout
        wait = max(0, min(settings.events.wait_seconds, int(settings.aws.read_timeout_seconds) - 2))
        self.events = EventConsumer(
            self.gateway.api(own, settings.events.region or settings.aws.region),
            settings.events.queue_url,
            self.reconciler.changed,
            wait_seconds=wait,
        )
        log.info("change events enabled", wait_s=wait)
        await self.events.run(self.stop)

    async def check(self) -> list[Outcome]:
        """One sweep over every target, for `posture-daemon check`."""
        try:
            return await self.reconciler.sweep_once()
        finally:
            await self.gateway.close()
