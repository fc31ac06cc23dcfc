"""A fault-injecting HTTP reverse proxy in front of the moto server.

The moto shim (daemon/demo/moto_server.py) can answer a request instead of moto, but it cannot do
what real networks and real AWS do to a client: reset a connection, never answer, cut a body
short. This proxy can. It runs an asyncio server on 127.0.0.1:0 in a background thread (its own
event loop, so a hung answer never blocks the test's loop), forwards every request to moto, and
applies the first matching `Rule`:

- rules match on the caller's account (from the SigV4 access key, resolved by moto in-process),
  the region and signing service (SigV4 credential scope) and the operation (query protocols:
  `Action`; JSON protocols: `X-Amz-Target`; REST protocols such as Lambda: method + path matched
  against botocore's `http.requestUri` templates);
- faults: latency, throttling (400/429), 500/503, connection reset (RST), hang (never answer),
  truncated body (Content-Length declared, connection closed early), malformed body with 200,
  ExpiredToken, AccessDenied, and rewriting a real JSON answer (missing fields, odd values), each
  in the error shape of the service's protocol;
- a rule fires with a probability (seeded RNG), at most `count` times, for `duration` seconds.

It also records what went through (`records`) and every credential it saw or saw issued by
AssumeRole (`credentials`), so tests can assert on call patterns and scan outputs for secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

_CREDENTIAL = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
# botocore service names the daemon and the demo use, to map a signing name to a service model
_SERVICES = (
    "lambda",
    "logs",
    "ec2",
    "apigateway",
    "iam",
    "sts",
    "config",
    "cloudtrail",
    "organizations",
    "account",
    "kms",
    "sqs",
    "wafv2",
)


# --- what a rule sees ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    access_key: str
    region: str
    service: str  # SigV4 signing name (lambda, logs, iam, sts, ...)
    operation: str  # wire name (ListFunctions, GetPolicy, AssumeRole, ...)
    account: str
    protocol: str  # rest-json, json, query, ec2

    def form(self) -> dict[str, str]:
        params = urllib.parse.parse_qs(self.query)
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params |= urllib.parse.parse_qs(self.body.decode(errors="replace"))
        return {k: v[0] for k, v in params.items()}


@dataclass(frozen=True)
class Record:
    at: float  # time.monotonic()
    account: str
    region: str
    service: str
    operation: str
    outcome: str  # "forwarded" or the fault's name
    status: int | None = None
    detail: str = ""  # AssumeRole: the role ARN


# --- operation names -----------------------------------------------------------------------------


class _Operations:
    """Operation names from botocore's service models (cached per signing name)."""

    def __init__(self) -> None:
        import botocore.session

        self._session = botocore.session.get_session()
        self._by_signing: dict[str, Any] = {}
        self._rest: dict[str, list[tuple[str, re.Pattern[str], dict[str, str], int, str]]] = {}
        self._lock = threading.Lock()

    def model(self, signing_name: str) -> Any:
        with self._lock:
            if signing_name not in self._by_signing:
                found = None
                for name in _SERVICES:
                    m = self._session.get_service_model(name)
                    if m.metadata.get("signingName", m.endpoint_prefix) == signing_name:
                        found = m
                        break
                self._by_signing[signing_name] = found
            return self._by_signing[signing_name]

    def protocol(self, signing_name: str) -> str:
        m = self.model(signing_name)
        return str(m.protocol) if m is not None else "json"

    def rest_operation(self, signing_name: str, method: str, path: str, query: str) -> str:
        with self._lock:
            table = self._rest.get(signing_name)
        if table is None:
            table = []
            m = self.model(signing_name)
            for op_name in m.operation_names if m is not None else ():
                http = m.operation_model(op_name).http
                uri, _, fixed = str(http.get("requestUri", "/")).partition("?")
                # constant query parameters tell operations on one path apart
                # (GET /layers is ListLayers, GET /layers?find=LayerVersion GetLayerVersionByArn)
                constants = {
                    k: v[0] for k, v in urllib.parse.parse_qs(fixed, keep_blank_values=True).items()
                }
                literal = len(re.sub(r"\{[^}]+\}", "", uri)) + 100 * len(constants)
                pattern = re.sub(
                    r"\\\{([^}]+?)(\\\+)?\\\}",
                    lambda g: ".+" if g.group(2) else "[^/]+",
                    re.escape(uri.rstrip("/")),
                )
                verb = str(http.get("method", "GET"))
                table.append((verb, re.compile(pattern + "/?"), constants, literal, op_name))
            table.sort(key=lambda row: -row[3])  # the most specific template first
            with self._lock:
                self._rest[signing_name] = table
        params = {k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        for verb, pattern, constants, _, op_name in table:
            if (
                verb == method
                and pattern.fullmatch(path)
                and all(params.get(k) == v for k, v in constants.items())
            ):
                return op_name
        return ""


@functools.cache
def _operations() -> _Operations:
    return _Operations()


@functools.lru_cache(maxsize=4096)
def _account_of(access_key: str) -> str:
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(access_key)) if access_key else ""


# --- faults --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def error_response(call: Call, status: int, code: str, message: str) -> Response:
    """An AWS error in the shape of the call's protocol."""
    rid = "00000000-0000-0000-0000-000000000000"
    if call.protocol == "ec2":
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            f"</Errors><RequestID>{rid}</RequestID></Response>"
        )
        return Response(status, {"Content-Type": "text/xml"}, body.encode())
    if call.protocol in ("query", "rest-xml"):
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{rid}</RequestId></ErrorResponse>"
        )
        return Response(status, {"Content-Type": "text/xml"}, body.encode())
    payload = json.dumps({"__type": code, "message": message}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
    if call.protocol == "rest-json":
        headers["Content-Type"] = "application/json"
    return Response(status, headers, payload)


class Fault:
    """What to do with a matched request. Subclasses override `apply`."""

    name = "fault"
    forwards = False  # True: the real answer is fetched first and handed to `transform`

    def response(self, call: Call) -> Response | None:
        """An answer instead of moto's (None: the connection-level behaviour below applies)."""
        return None

    def transform(self, call: Call, real: Response) -> Response:
        return real


class Latency(Fault):
    name = "latency"
    forwards = True

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Throttle(Fault):
    """400 ThrottlingException (Throttling for query protocols) or 429 TooManyRequestsException."""

    name = "throttle"

    def __init__(self, status: int = 400) -> None:
        self.status = status

    def response(self, call: Call) -> Response:
        if self.status == 429:
            return error_response(call, 429, "TooManyRequestsException", "Rate exceeded")
        code = {"query": "Throttling", "ec2": "RequestLimitExceeded"}.get(
            call.protocol, "ThrottlingException"
        )
        return error_response(call, 400, code, "Rate exceeded")


class ServerError(Fault):
    name = "server_error"

    def __init__(self, status: int = 500) -> None:
        self.status = status

    def response(self, call: Call) -> Response:
        if self.status == 503:
            code = (
                "ServiceUnavailable"
                if call.protocol in ("query", "ec2")
                else ("ServiceUnavailableException")
            )
            return error_response(call, 503, code, "Service unavailable")
        code = "InternalError" if call.protocol in ("query", "ec2") else "InternalFailure"
        return error_response(call, self.status, code, "internal failure")


class Reset(Fault):
    """The connection is reset (TCP RST) after the request was read."""

    name = "reset"


class Hang(Fault):
    """No answer, ever: the client's read timeout or deadline must fire."""

    name = "hang"


class Truncate(Fault):
    """The real answer's headers with its full Content-Length, half its body, then close."""

    name = "truncate"
    forwards = True


class Malformed(Fault):
    """HTTP 200 with a body that does not parse (JSON or XML as the protocol expects)."""

    name = "malformed"

    def response(self, call: Call) -> Response:
        if call.protocol in ("json", "rest-json"):
            return Response(200, {"Content-Type": "application/json"}, b'{"Functions": [{"Fun')
        return Response(200, {"Content-Type": "text/xml"}, b"<ListRolesResponse><Roles><mem")


class ExpiredToken(Fault):
    name = "expired_token"

    def response(self, call: Call) -> Response:
        code = "ExpiredToken" if call.protocol in ("query", "ec2") else "ExpiredTokenException"
        return error_response(
            call, 400, code, "The security token included in the request is expired"
        )


class AccessDenied(Fault):
    name = "access_denied"

    def response(self, call: Call) -> Response:
        code = "AccessDenied" if call.protocol in ("query", "ec2") else "AccessDeniedException"
        return error_response(call, 403, code, f"not authorized to perform {call.operation}")


class Choice(Fault):
    """One of several faults, picked with the proxy's seeded RNG each time the rule fires."""

    name = "choice"

    def __init__(self, *faults: Fault) -> None:
        self.faults = faults


class ExpireCredentials(Fault):
    """The caller's account's credentials expire now: this and every later request signed with
    an access key seen so far for the account is answered ExpiredToken (as AWS does), until the
    caller assumes the role again and signs with new keys."""

    name = "expire_credentials"


class Rewrite(Fault):
    """Change a real JSON answer: `fn(call, document)` edits the parsed body in place."""

    name = "rewrite"
    forwards = True

    def __init__(self, fn: Callable[[Call, Any], None]) -> None:
        self.fn = fn

    def transform(self, call: Call, real: Response) -> Response:
        if real.status >= 300 or not real.body:
            return real
        document = json.loads(real.body)
        self.fn(call, document)
        return Response(real.status, real.headers, json.dumps(document).encode())


# --- rules ---------------------------------------------------------------------------------------


def _one_of(value: str | Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset({value} if isinstance(value, str) else value)


@dataclass
class Rule:
    fault: Fault
    account: str | Iterable[str] | None = None
    region: str | Iterable[str] | None = None
    service: str | Iterable[str] | None = None
    operation: str | Iterable[str] | None = None
    when: Callable[[Call], bool] | None = None
    probability: float = 1.0
    count: int | None = None  # fire at most this many times
    duration: float | None = None  # seconds from installation
    hits: int = 0
    installed_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._accounts = _one_of(self.account)
        self._regions = _one_of(self.region)
        self._services = _one_of(self.service)
        self._operations = _one_of(self.operation)

    def matches(self, call: Call) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.duration is not None and time.monotonic() - self.installed_at > self.duration:
            return False
        if self._accounts is not None and call.account not in self._accounts:
            return False
        if self._regions is not None and call.region not in self._regions:
            return False
        if self._services is not None and call.service not in self._services:
            return False
        if self._operations is not None and call.operation not in self._operations:
            return False
        return self.when is None or self.when(call)


# --- the proxy -----------------------------------------------------------------------------------


class FaultProxy:
    def __init__(self, upstream: str, seed: int = 1234) -> None:
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.rules: list[Rule] = []
        self.records: deque[Record] = deque(maxlen=200_000)
        self.credentials: set[str] = set()  # access keys, secret keys, session tokens seen
        self._expired_keys: set[str] = set()
        self._keys_by_account: dict[str, set[str]] = {}
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    # --- control, from any thread --------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, fault: Fault, **match: Any) -> Rule:
        rule = Rule(fault, **match)
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self.rules:
                self.rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self._expired_keys.clear()

    def seed(self, seed: int) -> None:
        with self._lock:
            self.rng.seed(seed)

    def expire_credentials(self, account: str) -> int:
        """From now on, every access key seen so far for the account is answered ExpiredToken."""
        with self._lock:
            keys = set(self._keys_by_account.get(account, ()))
            self._expired_keys |= keys
            return len(keys)

    def calls(self, **match: str) -> list[Record]:
        with self._lock:
            records = list(self.records)
        return [r for r in records if all(getattr(r, k) == v for k, v in match.items())]

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                self._stopping = asyncio.Event()
                self._session = aiohttp.ClientSession(
                    auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120)
                )
                self._server = await asyncio.start_server(
                    self._handle, "127.0.0.1", 0, limit=1 << 20
                )
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                await self._stopping.wait()
                self._server.close()
                await self._session.close()

            loop.run_until_complete(serve())
            loop.run_until_complete(loop.shutdown_asyncgens())
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    # --- serving --------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                keep_open = await self._serve(request, reader, writer)
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _read_request(
        reader: asyncio.StreamReader,
    ) -> tuple[str, str, dict[str, str], list[tuple[str, str]], bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        raw_headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                raw_headers.append((name.strip(), value.strip()))
        headers = {k.lower(): v for k, v in raw_headers}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await reader.readexactly(int(headers.get("content-length") or 0))
        return method, target, headers, raw_headers, body

    def _call(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Call:
        path, _, query = target.partition("?")
        m = _CREDENTIAL.search(headers.get("authorization", ""))
        key, region, service = (m.group(1), m.group(2), m.group(3)) if m else ("", "", "")
        ops = _operations()
        protocol = ops.protocol(service) if service else ""
        operation = ""
        if "x-amz-target" in headers:
            operation = headers["x-amz-target"].rsplit(".", 1)[-1]
        elif protocol in ("query", "ec2"):
            params = urllib.parse.parse_qs(query) | urllib.parse.parse_qs(
                body.decode(errors="replace")
            )
            operation = (params.get("Action") or [""])[0]
        elif service:
            operation = ops.rest_operation(service, method, path, query)
        account = _account_of(key) if key else ""
        return Call(
            method, path, query, headers, body, key, region, service, operation, account, protocol
        )

    def _decide(self, call: Call) -> tuple[Fault | None, Rule | None]:
        with self._lock:
            if call.access_key:
                self.credentials.add(call.access_key)
                if call.access_key in self._expired_keys:
                    return ExpiredToken(), None
                self._keys_by_account.setdefault(call.account, set()).add(call.access_key)
            token = call.headers.get("x-amz-security-token")
            if token:
                self.credentials.add(token)
            for rule in self.rules:
                if rule.matches(call) and (
                    rule.probability >= 1 or self.rng.random() < rule.probability
                ):
                    rule.hits += 1
                    fault = rule.fault
                    if isinstance(fault, Choice):
                        fault = self.rng.choice(fault.faults)
                    if isinstance(fault, ExpireCredentials):
                        self._expired_keys |= self._keys_by_account.get(call.account, set())
                        return ExpiredToken(), rule
                    return fault, rule
        return None, None

    def _record(self, call: Call, outcome: str, status: int | None) -> None:
        detail = call.form().get("RoleArn", "") if call.operation == "AssumeRole" else ""
        with self._lock:
            self.records.append(
                Record(
                    time.monotonic(),
                    call.account,
                    call.region,
                    call.service,
                    call.operation,
                    outcome,
                    status,
                    detail,
                )
            )

    async def _serve(
        self,
        request: tuple[str, str, dict[str, str], list[tuple[str, str]], bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        method, target, headers, raw_headers, body = request
        call = self._call(method, target, headers, body)
        fault, _rule = self._decide(call)
        keep_open = headers.get("connection", "").lower() != "close"

        if fault is None:
            response = await self._forward(method, target, raw_headers, body)
            self._record(call, "forwarded", response.status)
            self._learn(call, response)
            await self._write(writer, response)
            return keep_open

        self._record(call, fault.name, None)
        if isinstance(fault, Hang):
            # never answer; wait until the client gives up (EOF) or the proxy stops
            with contextlib.suppress(Exception):
                await reader.read()
            return False
        if isinstance(fault, Reset):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if isinstance(fault, Latency):
            await asyncio.sleep(fault.seconds)
        answer = fault.response(call)
        if answer is None and fault.forwards:
            answer = await self._forward(method, target, raw_headers, body)
            self._learn(call, answer)
            answer = fault.transform(call, answer)
        if answer is None:
            answer = error_response(call, 500, "InternalFailure", "fault without an answer")
        if isinstance(fault, Truncate):
            await self._write(writer, answer, cut=True)
            return False
        await self._write(writer, answer)
        return keep_open

    async def _forward(
        self, method: str, target: str, raw_headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        assert self._session is not None
        headers = [(k, v) for k, v in raw_headers if k.lower() not in _HOP_BY_HOP]
        async with self._session.request(
            method,
            self.upstream + target,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
            return Response(resp.status, out, data)

    def _learn(self, call: Call, response: Response) -> None:
        """Remember credentials that AssumeRole hands out (to scan outputs for them later)."""
        if call.operation != "AssumeRole" or response.status != 200:
            return
        text = response.body.decode(errors="replace")
        with self._lock:
            for tag in ("AccessKeyId", "SecretAccessKey", "SessionToken"):
                for value in re.findall(rf"<{tag}>([^<]+)</{tag}>", text):
                    self.credentials.add(value)

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, cut: bool = False) -> None:
        reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests"}
        head = [f"HTTP/1.1 {response.status} {reason.get(response.status, 'Status')}"]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        head.append(f"Content-Length: {len(response.body)}")
        if cut:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        body = response.body[: max(1, len(response.body) // 2)] if cut else response.body
        writer.write(data + body)
        await writer.drain()
        if cut:
            writer.close()
