"""HTTP endpoints: /metrics, /livez, /readyz.

The server runs in a thread of its own, with its own event loop (`HttpServer`): a scrape never
waits behind the reconciler's callbacks, and a scrape never stalls a sweep. /metrics is rendered
from immutable state, mostly from text cached per target result (daemon/metrics/exposition.py),
so it stays fast while a sweep keeps the daemon busy. While a scrape renders, the daemon's event
loop is held (`ScrapePriority`): the two threads share one GIL, and a scrape that had to take turns
with a busy sweep took two to four times its CPU time. /livez checks that the daemon's own event
loop has run its heartbeat task recently, so a starved or blocked reconciler loop fails the probe
even though the HTTP thread still answers.

Bad clients cannot hurt the loop: request lines and headers are capped by aiohttp (8 KiB each,
128 headers: 400/431 beyond), bodies by `client_max_size`, unknown paths and methods get 404/405,
idle keep-alive connections are closed after `KEEPALIVE_SECONDS`, and a client that trickles its
request only holds its own connection. TLS and basic auth come from the web config
(daemon/webconfig.py): basic auth guards /metrics and the index, not the probes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import structlog
from aiohttp import web

from daemon.config import HttpSettings, ListenError
from daemon.metrics.compress import GzipSegments
from daemon.metrics.exposition import Exposition
from daemon.webconfig import AUTH_REALM, WebConfigHolder

log = structlog.get_logger("posture.http")

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

# The longest a scrape holds the daemon's event loop: a render takes milliseconds (a cold one, every
# target just published at 30,000 series, about 130 ms); beyond this the sweep goes on beside it.
PRIORITY_HOLD_SECONDS = 0.25
# The most of the time scrapes may hold the loop: after a hold of t seconds, scrapes in the next
# t x (1 - share) / share seconds take turns with it, so a client that scrapes in a tight loop
# cannot starve the sweep.
PRIORITY_MAX_SHARE = 0.2


class ScrapePriority:
    """Gives a scrape the GIL to itself: the daemon's event loop waits while /metrics renders.

    The HTTP server has its own thread, but the reconciler's loop and it share one GIL. While a
    sweep keeps the loop busy, a scrape's render and gzip (20 to 60 ms of CPU at 30,000 series)
    ran in turns with it (the interpreter switches threads every switch interval, 1 ms here) and
    waited again after every socket operation: 100 to 400 ms in the benchmark, on a core of its
    own.

    `held()` (on the HTTP thread) puts a callback on the daemon's loop that blocks it -- on a
    `threading.Event`, which releases the GIL -- until the last overlapping scrape has rendered,
    or for `cap` seconds at most. The loop reaches that callback after the step it is running
    (an AWS answer parsed, one control evaluated: usually milliseconds; a garbage collection pass
    runs to its end first, tens of ms) and the callbacks ready before it. The sweep only pauses: AWS
    calls in flight go on, their answers wait in the socket buffers, and a pause is far shorter
    than any timeout. Holds take at most `share` of the time (PRIORITY_MAX_SHARE), so scrapes in
    a tight loop cannot starve the sweep. Unbound (no loop to hold: tests that serve
    without a daemon), it does nothing.

    While any scrape renders, automatic garbage collection is off (`gc.disable`), bound or not:
    a pass runs in whichever thread's allocation starts it and holds the GIL to its end, and the
    render's own allocations started young passes of 50-100 ms inside scrapes at 10,000
    functions (the slowest scrapes of the benchmark). The pass runs when the last overlapping
    scrape has rendered, at the next allocation that finds the young generation over its
    threshold, usually on the daemon's loop. A pass already running when a scrape comes still
    runs to its end first. Collection is turned back on only if it was on before (the held()
    that turned it off remembers).
    """

    def __init__(
        self, cap: float = PRIORITY_HOLD_SECONDS, share: float = PRIORITY_MAX_SHARE
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.cap = cap
        self.share = share
        self._next = -math.inf  # monotonic time before which a scrape does not hold the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._active = 0
        self._released = threading.Event()
        self._released.set()
        self._collecting = False  # whether automatic collection was on when the scrapes began
        self.holds = 0  # times the loop was actually held (tests, benchmark)

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The loop to hold (the daemon's); None: unbind."""
        self._loop = loop

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        loop = self._loop
        with self._lock:
            self._active += 1
            if self._active == 1:
                self._collecting = gc.isenabled()
                gc.disable()
                self._released.clear()
                if loop is not None and time.monotonic() >= self._next:
                    with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to hold
                        loop.call_soon_threadsafe(self._hold)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    if self._collecting:
                        gc.enable()
                    self._released.set()

    def _hold(self) -> None:
        """On the daemon's loop: wait for the scrapes to finish rendering (a callback that ran
        after they did returns at once)."""
        if not self._released.is_set():
            self.holds += 1
            started = time.monotonic()
            self._released.wait(self.cap)
            ended = time.monotonic()
            self._next = ended + (ended - started) * (1 - self.share) / self.share


# How often the server renders, between scrapes, the text of results published since the last
# scrape or render (`warm_exposition`); a scrape renders whatever is left itself.
WARM_SECONDS = 0.5


async def warm_exposition(exposition: Exposition, scraped: asyncio.Event) -> None:
    """On the server's loop, for as long as it runs: once anything has scraped /metrics, render
    the text of newly published results a target at a time (`StateText.warm`), yielding to the
    loop between targets so that a scrape that comes meanwhile waits for one target at most.
    Nothing is rendered for a daemon nobody scrapes. Should rendering fail, it stops here (each
    scrape still renders what it serves)."""
    text = exposition.text
    if text is None:
        return
    await scraped.wait()
    while True:
        for target in text.stale():
            try:
                text.warm(target)
            except Exception as exc:  # a scrape renders (and reports) it; stop rendering ahead
                log.error("rendering /metrics ahead of scrapes failed", problem=repr(exc))
                return
            await asyncio.sleep(0)
        await asyncio.sleep(WARM_SECONDS)


# /metrics is gzipped for clients that accept it (Prometheus does): at 30,000 series 5.8 MB become
# 0.17 MB for ~12 ms of zlib, which releases the GIL (level 6: 0.15 MB, 29 ms). Segments whose
# pieces did not change since the last scrape are not compressed again (daemon/metrics/compress.py).
GZIP_LEVEL = 3
GZIP_MIN_BYTES = 1024
_GZIP_FORMATS_KEPT = 16  # content types whose compressed segments are kept (from Accept headers)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (RFC 9110: `*` stands for it, q=0 refuses)."""
    quality: dict[str, float] = {}
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[coding.strip().lower()] = q
    q = quality.get("gzip", quality.get("x-gzip", quality.get("*", 0.0)))
    return q > 0


PRIORITY: web.AppKey[ScrapePriority] = web.AppKey("scrape_priority", ScrapePriority)
GZIPPERS: web.AppKey[dict[str, GzipSegments]] = web.AppKey("gzippers", dict)


def build_app(
    exposition: Exposition,
    heartbeat: Heartbeat,
    ready: ReadyCheck,
    web_config: WebConfigHolder | None = None,
) -> web.Application:
    holder = web_config or WebConfigHolder(None)
    priority = ScrapePriority()
    scraped = asyncio.Event()  # set by the first scrape, on the server's loop
    gzippers: dict[str, GzipSegments] = {}  # per content type: each has its own pieces

    def gzipper(content_type: str) -> GzipSegments:
        found = gzippers.get(content_type)
        if found is None:
            if len(gzippers) >= _GZIP_FORMATS_KEPT:
                gzippers.clear()
            found = gzippers[content_type] = GzipSegments(GZIP_LEVEL)
        return found

    async def warming(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(warm_exposition(exposition, scraped))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

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
        gzipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))

        scraped.set()
        # Rendered on the HTTP thread's own loop, inline: a hand-off to a worker thread and back
        # would cost two more waits for the GIL while a sweep is busy. A cold render (a target
        # just published) takes milliseconds per thousand series; the daemon's loop waits.
        with priority.held():
            pieces, content_type = exposition.render_pieces(accept)
            compressed = gzipped and sum(map(len, pieces)) >= GZIP_MIN_BYTES
            body = gzipper(content_type).compress(pieces) if compressed else b"".join(pieces)
        headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
        if compressed:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

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
    app[PRIORITY] = priority
    app[GZIPPERS] = gzippers
    app.cleanup_ctx.append(warming)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    return app


def check_listen(host: str, port: int) -> None:
    """Raise ListenError if the server could not listen on (host, port) now: bind a socket the way
    aiohttp does (SO_REUSEADDR, so a port in TIME_WAIT is free) and close it. For a start that
    has slow work to do first (the demo seeds its estate). Port 0 is always free."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(host, port, exc) from exc
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server: IPv6 only
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ListenError(host, port, exc) from exc


class HttpServer:
    """Serves `app` from a thread of its own, with its own event loop.

    The daemon's event loop is busy while a sweep runs: thousands of AWS responses to parse,
    controls to evaluate, results to publish. A server on that loop answered scrapes only between
    those callbacks (p99 above a second in the benchmark). Here the handlers only read immutable
    state (the store's view, cached exposition text, the heartbeat's timestamp), so they are safe
    to run on another thread. `start` returns once the socket listens (or raises ListenError);
    `stop` closes the server and joins the thread.
    """

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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Serve from a thread of its own; a scrape holds the loop this is called on (the
        daemon's: `ScrapePriority`)."""
        if PRIORITY in self.app:
            self.app[PRIORITY].bind(asyncio.get_running_loop())
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name="posture-http", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(started)
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    def _serve(self, started: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                started.set_exception(exc)
                return
            self._loop = loop
            self.web_config.on_server_thread = functools.partial(self._on_thread, loop)
            started.set_result(None)
            loop.run_forever()  # until stop() stops it
            self.web_config.on_server_thread = None
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
                self._runner = None
            # what cleanup left (handlers of connections it closed): cancelled and awaited, as
            # asyncio.run() does, rather than destroyed pending with the loop
            rest = asyncio.all_tasks(loop)
            for task in rest:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            self._loop = None
            asyncio.set_event_loop(None)
            loop.close()

    @staticmethod
    def _on_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
        """Run `fn` on the server's thread (a certificate reload: the TLS context is used there)."""

        def guarded() -> None:
            try:
                fn()
            except Exception as exc:  # the files were valid a moment ago; keep serving
                log.error("TLS certificate reload failed; serving the old one", problem=str(exc))

        loop.call_soon_threadsafe(guarded)

    async def _listen(self) -> None:
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
        try:
            await site.start()
        except BaseException as exc:
            await self._runner.cleanup()
            self._runner = None
            if isinstance(exc, OSError):
                raise ListenError(self.settings.host, self.settings.port, exc) from exc
            raise
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port

    async def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
        self._thread = None
        if PRIORITY in self.app:
            self.app[PRIORITY].bind(None)
