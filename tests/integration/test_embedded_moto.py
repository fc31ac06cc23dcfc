"""The embedded moto server: the keep-alive variant the scale benchmark runs against."""

from __future__ import annotations

import http.client
import json

import pytest

from daemon.demo.moto_server import EmbeddedMoto

SIGNED = {
    # moto reads the account, region and service from a SigV4 header; the signature is not checked
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/lambda/"
    "aws4_request, SignedHeaders=host, Signature=0",
    "Host": "lambda.us-east-1.amazonaws.com",
}


def _two_calls(server: EmbeddedMoto) -> list[tuple[int, str | None, int]]:
    """Two ListFunctions over one HTTPConnection: (status, Connection header, local port)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    seen = []
    try:
        for _ in range(2):
            conn.request("GET", "/2015-03-31/functions/", headers=SIGNED)
            response = conn.getresponse()
            body = json.loads(response.read())
            assert body["Functions"] == []
            port = conn.sock.getsockname()[1] if conn.sock is not None else -1
            seen.append((response.status, response.getheader("Connection"), port))
    finally:
        conn.close()
    return seen


@pytest.mark.parametrize("keep_alive", [False, True])
def test_keep_alive_reuses_the_connection_and_werkzeug_does_not(keep_alive: bool) -> None:
    server = EmbeddedMoto(keep_alive=keep_alive, threads=2)
    server.start()
    port = server.port
    try:
        (s1, c1, p1), (s2, c2, p2) = _two_calls(server)
    finally:
        server.stop()
    assert s1 == s2 == 200
    if keep_alive:
        assert c1 is None and c2 is None
        assert p1 == p2 != -1, "the second call went over the same socket"
    else:
        assert c1 == c2 == "close"  # werkzeug's development server closes every connection
    with pytest.raises(OSError):  # stopped means stopped: nothing listens any more
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
