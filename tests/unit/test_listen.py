"""The HTTP server's address cannot be used: one clear error (ListenError), nothing left behind."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import pytest

from daemon.config import HttpSettings, ListenError, MetricsSettings
from daemon.controls.registry import all_controls
from daemon.metrics.collector import StateCollector
from daemon.metrics.exposition import Exposition, Registry
from daemon.server import Heartbeat, HttpServer, build_app, check_listen
from daemon.state import StateStore


@contextmanager
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 another socket listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def _server(port: int) -> HttpServer:
    registry = Registry()
    state = StateCollector(StateStore(), MetricsSettings(), dict(all_controls()))
    registry.register(state)
    app = build_app(Exposition(registry, state), Heartbeat(), lambda: (True, "ok"))
    return HttpServer(HttpSettings(host="127.0.0.1", port=port), app)


def _http_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "posture-http"]


async def test_a_taken_port_is_one_listen_error_and_the_port_serves_once_it_is_free() -> None:
    with taken_port() as port:
        server = _server(port)
        with pytest.raises(ListenError) as caught:
            await server.start()
        # the system's reason, not asyncio's sentence around it
        assert str(caught.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
        assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)
        assert isinstance(caught.value.__cause__, OSError)
        assert server.port is None and not _http_threads()  # the server's thread has ended
    # once the port is free, a server starts on it (an aiohttp app serves one loop only: a new one)
    server = _server(port)
    await server.start()
    try:
        assert server.port == port
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/livez") as resp,
        ):
            assert resp.status == 200
    finally:
        await server.stop()
    assert not _http_threads()


def test_check_listen_refuses_a_taken_port_and_an_address_not_on_this_machine() -> None:
    with (
        taken_port() as port,
        pytest.raises(ListenError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: Address"),
    ):
        check_listen("127.0.0.1", port)
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is no address of this machine
    with pytest.raises(ListenError, match=r"^cannot listen on 192\.0\.2\.1:9717: Cannot assign"):
        check_listen("192.0.2.1", 9717)


def test_check_listen_passes_a_free_port_and_leaves_it_free() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    check_listen("127.0.0.1", port)
    check_listen("127.0.0.1", 0)  # any free port
    with socket.socket() as again:  # check_listen closed its socket
        again.bind(("127.0.0.1", port))
        again.listen()
