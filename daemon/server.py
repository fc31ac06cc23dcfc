"""HTTP endpoints: /metrics, /livez, /readyz.

/metrics is rendered in a worker thread from immutable state, so a large scrape never stalls the
event loop, and mostly from text cached per target result (daemon/metrics/exposition.py), so it
stays fast while a sweep keeps the event loop busy. /livez is answered by the event loop itself
and also checks that a heartbeat task has run recently, so a starved or blocked loop fails the
probe.

Bad clients cannot hurt the loop: request lines and headers are capped by aiohttp (8 KiB each,
128 headers: 400/431 beyond), bodies by `client_max_size`, unknown paths and methods get 404/405,
idle keep-alive connections are closed after `KEEPALIVE_SECONDS`, and a client that trickles its
request only holds its own connection. TLS and basic auth come from the web config
(daemon/webconfig.py): basic auth guards /metrics and the index, not the probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from daemon.config import HttpSettings
from daemon.metrics.exposition import Exposition
from daemon.webconfig import AUTH_REALM, WebConfigHolder

HEARTBEAT_SECONDS = 1.0
LIVENESS_LAG_SECONDS = 10.0
KEEPALIVE_SECONDS = 75.0  # longer than Prometheus' idle keep-alive, shorter than forever
OPEN_PATHS = frozenset({"/livez", "/readyz"})  # probes: no basic auth (kubelet sends none)


class Heartbeat:
    def __init__(self) -> None:
        self.last = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.last = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HEARTBEAT_SECONDS)

    @property
    def lag(self) -> float:
        return time.monotonic() - self.last


ReadyCheck = Callable[[], tuple[bool, str]]


def build_app(
    exposition: Exposition,
    heartbeat: Heartbeat,
    ready: ReadyCheck,
    web_config: WebConfigHolder | None = None,
) -> web.Application:
    holder = web_config or WebConfigHolder(None)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        cfg = holder.config
        if (
            cfg is not None
            and cfg.auth_required
            and request.path not in OPEN_PATHS
            and not await holder.auth.check(request.headers.get("Authorization"))
        ):
            response: web.StreamResponse = web.Response(
                status=401, text="unauthorized\n", headers={"WWW-Authenticate": AUTH_REALM}
            )
        else:
            response = await handler(request)
        if cfg is not None:
            response.headers.update(cfg.headers)
        return response

    async def metrics(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(None, exposition.render, accept)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        # gzip/deflate when the client accepts it (Prometheus does): ~40x smaller; aiohttp
        # compresses large bodies in the executor, and zlib releases the GIL meanwhile
        response.enable_compression()
        return response

    async def livez(_request: web.Request) -> web.Response:
        lag = heartbeat.lag
        if lag > LIVENESS_LAG_SECONDS:
            return web.Response(status=503, text=f"event loop stalled for {lag:.1f}s\n")
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        ok, detail = ready()
        return web.Response(status=200 if ok else 503, text=detail + "\n")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text="posture-daemon: /metrics /livez /readyz\n")

    app = web.Application(client_max_size=1024, middlewares=[guard])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    return app


class HttpServer:
    def __init__(
        self,
        settings: HttpSettings,
        app: web.Application,
        web_config: WebConfigHolder | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.web_config = web_config or WebConfigHolder(None)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=KEEPALIVE_SECONDS,
            max_line_size=8190,
            max_field_size=8190,
            max_headers=128,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.settings.host,
            self.settings.port,
            ssl_context=self.web_config.tls,
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
