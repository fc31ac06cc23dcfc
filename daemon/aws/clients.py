"""Sessions, credentials and clients.

- One base session with the daemon's own credentials (the default provider chain, so environment,
  web identity for IRSA, ECS task roles and instance profiles all work).
- One session per member account with refreshable AssumeRole credentials (refreshed by botocore
  before they expire; invalidated on an ExpiredToken answer).
- Retries use botocore's *standard* mode (exponential backoff with jitter, a retry quota), not
  *adaptive*: adaptive mode adds a client-side rate limiter of its own, per client, which would pace
  a second time against the same quota and hide the rate from `posture_aws_rate_limit`. The
  daemon's token buckets (daemon/aws/pacing.py) own the rate; botocore only retries.
- Clients are opened per (account, region, service) and reused; idle ones beyond a cap are closed
  least-recently-used first. All sessions share one botocore loader, so service models are parsed
  once.
- One TLS context for every client (`SharedTlsHTTPSession`): aiobotocore builds one per client,
  loading the CA bundle each time (~20-30 ms of CPU), which a daemon with hundreds of
  (account, region, service) clients would pay again and again.
- One client class per service (`share_client_classes`): botocore builds a fresh class for every
  client, with a method and a docstring object per operation (EC2 has ~750): ~190 KB and ~12 ms
  of CPU per client that are the same for every (account, region) of a service.
- One response parser per protocol for the process (`SharedParserFactory`): botocore makes a
  new parser for every response, and each holds bound methods of itself (reference cycles), so
  every call left garbage only the cyclic collector frees -- a young-generation pass every few
  seconds of a sweep, tens of ms each with the GIL held. Parsers keep no state between parses.
- Event hooks shared, not copied (daemon/aws/hooks.py): botocore copies the session's whole
  handler trie into every client (~75 KB, ~0.6 ms of CPU); a client here keeps only its own
  handlers over a frozen snapshot of the session's.
- One paginator per (client, operation) (`ClientPool.paginator`): `get_paginator` builds a new
  class, with a docstring object, on every call.
- Every request says `posture-daemon/<version> botocore/<version>` as its User-Agent, so the
  daemon's calls are told apart in CloudTrail (`userAgent`) and in throttling reports. Setting the
  whole string also skips botocore's default builder, which re-sanitises ~40 components character
  by character twice per request (~0.25 ms of CPU per call, a sixth of a call's cost).
- Endpoints are never set here: botocore resolves AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>
  itself, exactly as for any other AWS tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import ssl
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiobotocore.client import AioClientCreator
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.parsers import AioResponseParserFactory
from aiobotocore.session import AioSession

from daemon import __version__
from daemon.aws.errors import AwsError, ErrorKind, to_aws_error
from daemon.aws.hooks import new_session
from daemon.aws.models import operations_by_service, trimmed_loader
from daemon.config import AwsSettings
from daemon.model.operations import Operation

SESSION_NAME = "posture-daemon"
USER_AGENT = f"posture-daemon/{__version__}"  # aiobotocore's session appends botocore/<version>

# Made with the daemon's own credentials. GetCallerIdentity needs no permission (AWS allows it
# even when denied); it is listed so the hub policy names every call the hub makes.
OPERATIONS = (
    Operation("sts", "GetCallerIdentity", "sts:GetCallerIdentity", principal="hub"),
    Operation("sts", "AssumeRole", "sts:AssumeRole", principal="hub"),
)
ROLE_PREFIX = "role:"  # a session principal that names a role instead of an account

# A client is an aiobotocore client; its type is generated at runtime.
Client = Any
ClientHook = Callable[[Client, str, str, str], None]  # (client, account, region, service)


class SharedTlsHTTPSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session with one TLS context per verify setting for the process.

    Only the plain case is shared (no client certificate, no proxy): those build their own, as
    aiobotocore does. An `SSLContext` is safe to share between connections.
    """

    _contexts: dict[object, ssl.SSLContext] = {}
    _lock = threading.Lock()  # aiobotocore builds contexts in a worker thread

    def _build_ssl_contexts(self, proxy_url: str | None) -> tuple[Any, Any]:
        if proxy_url or self._cert_file:
            built: tuple[Any, Any] = super()._build_ssl_contexts(proxy_url)
            return built
        with self._lock:
            context = self._contexts.get(self._verify)
            if context is None:
                context = self._contexts[self._verify] = self._build_verify_context()
        return context, None


class SharedParserFactory(AioResponseParserFactory):  # type: ignore[misc]
    """Hands out one parser per protocol instead of a new one per response.

    botocore's parsers keep nothing between calls (their attributes are set in `__init__`: the
    timestamp and blob parsers, the event stream parser), so concurrent parses may share one.
    A new one per response cost CPU and, as each refers to itself through bound methods, left
    cyclic garbage (two parsers, bound methods, dicts) behind every AWS call.
    """

    def __init__(self) -> None:
        super().__init__()
        self._parsers: dict[str, Any] = {}

    def set_parser_defaults(self, **kwargs: Any) -> None:
        super().set_parser_defaults(**kwargs)
        self._parsers.clear()  # parsers made from the old defaults

    def create_parser(self, protocol_name: str) -> Any:
        parser = self._parsers.get(protocol_name)
        if parser is None:
            parser = self._parsers[protocol_name] = super().create_parser(protocol_name)
        return parser


PARSERS = SharedParserFactory()


def use_shared_parsers(session: AioSession) -> AioSession:
    """Make `session`'s clients use the process's parsers (`SharedParserFactory`)."""
    session.register_component("response_parser_factory", PARSERS)
    return session


_CLASSES: dict[tuple[str, str, tuple[str, ...]], type] = {}
# loader -> (service, API version) -> model; a loader (one per gateway) and its models go together
_MODELS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str | None], Any]] = (
    weakref.WeakKeyDictionary()
)


def share_client_classes() -> None:
    """Make aiobotocore build each service's client class and service model once per process.

    The class holds only the service's API methods (`_api_call` closures that look the operation
    up on the instance) and is decided by the service model and the `creating-client-class`
    handlers; every session the daemon makes is a default session with the same handlers, so the
    class is the same for every client of a service.

    The service model is read-only once built (its operation and shape models are caches of the
    same JSON); botocore builds one per client, and each client's endpoint-discovery check walks
    every operation of it (EC2: ~800 operation models per client). Shared, a service's model is
    built once per loader (the daemon's loader trims its models: daemon/aws/models.py), and a
    class once per service and set of operations.

    Instances keep their own configuration, credentials, endpoint and event hooks. Idempotent.
    """
    create = AioClientCreator._create_client_class
    if getattr(create, "_posture_shared", False):
        return
    load_model = AioClientCreator._load_service_model

    def shared_model(self: Any, service_name: str, api_version: str | None = None) -> Any:
        models = _MODELS.setdefault(self._loader, {})  # a loader may trim its models
        key = (service_name, api_version)
        model = models.get(key)
        if model is None:
            model = models[key] = load_model(self, service_name, api_version)
        return model

    async def shared(self: Any, service_name: str, service_model: Any) -> type:
        key = (service_name, str(service_model.api_version), tuple(service_model.operation_names))
        cls = _CLASSES.get(key)
        if cls is None:
            cls = _CLASSES[key] = await create(self, service_name, service_model)
        return cls

    shared._posture_shared = True  # type: ignore[attr-defined]
    AioClientCreator._create_client_class = shared
    AioClientCreator._load_service_model = shared_model


share_client_classes()


@dataclass(frozen=True, slots=True)
class ClientKey:
    account_id: str
    region: str
    service: str


class _Entry:
    __slots__ = ("client", "in_use", "paginators", "stack")

    def __init__(self, client: Client, stack: AsyncExitStack) -> None:
        self.client = client
        self.stack = stack
        self.in_use = 0
        self.paginators: dict[str, Any] = {}  # method -> the client's paginator for it


class Sessions:
    """Credentials per account. The daemon's own account uses the base session."""

    def __init__(
        self,
        settings: AwsSettings,
        on_create: ClientHook | None = None,
        operations: Iterable[Operation] | None = None,
    ) -> None:
        """`operations`: what the daemon calls; given, every session loads service models cut
        down to them (daemon/aws/models.py). None: botocore's whole models."""
        self._settings = settings
        self._on_create = on_create  # instruments the STS clients like every other client
        # STS calls get the same retries and timeouts as every other client.
        self._sts_config = AioConfig(
            retries={"mode": "standard", "max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            user_agent=USER_AGENT,
            http_session_cls=SharedTlsHTTPSession,
        )
        self._base = use_shared_parsers(new_session())
        if operations is not None:
            self._base.register_component(
                "data_loader",
                trimmed_loader(
                    self._base.get_config_variable("data_path"), operations_by_service(operations)
                ),
            )
        self._loader = self._base.get_component("data_loader")
        self._by_account: dict[str, AioSession] = {}
        self._creds: dict[str, AioDeferredRefreshableCredentials] = {}
        self._own_account: str | None = None
        self._own_lock = asyncio.Lock()
        self._assumed_at: dict[
            str, float
        ] = {}  # principal -> time.monotonic() of the last AssumeRole

    @property
    def base(self) -> AioSession:
        return self._base

    @asynccontextmanager
    async def _sts(self, account_id: str) -> AsyncIterator[Client]:
        """An STS client with the daemon's own credentials (for AssumeRole and identity)."""
        region = self._settings.region
        async with self._base.create_client(
            "sts", region_name=region, config=self._sts_config
        ) as sts:
            if self._on_create is not None:
                self._on_create(sts, account_id, region, "sts")
            yield sts

    async def own_account_id(self) -> str:
        async with self._own_lock:
            if self._own_account is None:
                try:
                    async with self._sts("") as sts:
                        ident = await sts.get_caller_identity()
                except Exception as exc:
                    raise to_aws_error(
                        exc, service="sts", operation="GetCallerIdentity", account_id="", region=""
                    ) from None
                self._own_account = str(ident["Account"])
            return self._own_account

    async def warm_up(self, services: Iterable[str]) -> None:
        """Load the service models and build the client classes now, before the first sweep: one
        throwaway client per service (no call is made). Their parsed JSON is most of the daemon's
        long-lived heap; `daemon.app` freezes it afterwards so the garbage collector stops
        re-scanning it (gen-2 passes over it stalled the event loop for hundreds of ms)."""
        for service in sorted(set(services)):
            async with self._base.create_client(
                service,
                region_name=self._settings.region,
                config=self._sts_config,
                aws_access_key_id="warm-up",
                aws_secret_access_key="warm-up",
            ):
                pass

    def _new_session(self) -> AioSession:
        session = new_session()
        session.register_component("data_loader", self._loader)
        return use_shared_parsers(session)

    async def session_for(self, principal: str) -> AioSession:
        """The session for an account id (member role or own credentials) or "role:ARN"."""
        if principal.startswith(ROLE_PREFIX):
            role_arn = principal.removeprefix(ROLE_PREFIX)
            account_id = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
        else:
            if principal == await self.own_account_id():
                return self._base
            account_id = principal
            role_arn = f"arn:aws:iam::{account_id}:role/{self._settings.role_name}"
        session = self._by_account.get(principal)
        if session is None:
            session = self._new_session()
            creds = AioDeferredRefreshableCredentials(
                refresh_using=functools.partial(self._assume, principal, role_arn, account_id),
                method="assume-role",
            )
            session._credentials = creds  # aiobotocore has no public setter for refreshable creds
            self._creds[principal] = creds
            self._by_account[principal] = session
        return session

    async def _assume(self, principal: str, role_arn: str, account_id: str) -> dict[str, str]:
        params: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": SESSION_NAME,
            "DurationSeconds": self._settings.assume_role_duration_seconds,
        }
        if self._settings.external_id is not None:
            params["ExternalId"] = self._settings.external_id.get_secret_value()
        try:
            async with self._sts(account_id) as sts:
                resp = await sts.assume_role(**params)
        except Exception as exc:
            err = to_aws_error(
                exc, service="sts", operation="AssumeRole", account_id=account_id, region=""
            )
            if err.kind is ErrorKind.NOT_FOUND:  # e.g. the role does not exist
                err = AwsError(
                    ErrorKind.ACCESS_DENIED,
                    err.code,
                    service="sts",
                    operation="AssumeRole",
                    account_id=account_id,
                    message=err.message,
                )
            raise err from None
        self._assumed_at[principal] = time.monotonic()
        c = resp["Credentials"]
        expiry = c["Expiration"]
        if isinstance(expiry, dt.datetime):
            expiry = expiry.astimezone(dt.UTC).isoformat()
        return {
            "access_key": c["AccessKeyId"],
            "secret_key": c["SecretAccessKey"],
            "token": c["SessionToken"],
            "expiry_time": str(expiry),
        }

    def invalidate(self, principal: str, since: float | None = None) -> bool:
        """Force a fresh AssumeRole on the next call (after AWS said the token expired).

        `since` is when the failed call started (time.monotonic()): when the role was assumed
        again after that, another call already renewed the credentials, so this one only retries
        instead of assuming the role once more. True when a retry may succeed.
        """
        creds = self._creds.get(principal)
        if creds is None:
            return False  # the daemon's own credentials: nothing to renew here
        if since is not None and self._assumed_at.get(principal, float("-inf")) > since:
            return True
        creds._expiry_time = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        return True


class ClientPool:
    """Open clients keyed by (account, region, service), reused, closed LRU when idle."""

    def __init__(
        self, sessions: Sessions, settings: AwsSettings, on_create: ClientHook | None = None
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._on_create = on_create
        self._entries: OrderedDict[ClientKey, _Entry] = OrderedDict()
        self._locks: dict[ClientKey, asyncio.Lock] = {}
        self._config = AioConfig(
            retries={"mode": "standard", "max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            max_pool_connections=settings.max_pool_connections,
            user_agent=USER_AGENT,
            http_session_cls=SharedTlsHTTPSession,
        )
        self._closed = False

    @property
    def open_clients(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def client(self, account_id: str, region: str, service: str) -> AsyncIterator[Client]:
        entry = await self._acquire(ClientKey(account_id, region, service))
        try:
            yield entry.client
        finally:
            await self._release(entry)

    @asynccontextmanager
    async def paginator(
        self, account_id: str, region: str, service: str, method: str
    ) -> AsyncIterator[tuple[Client, Any]]:
        """The client and its paginator for `method`, made once per client: `get_paginator`
        builds a new paginator class (and docstring object) on every call. A paginator keeps
        nothing between `paginate()` calls."""
        entry = await self._acquire(ClientKey(account_id, region, service))
        try:
            paginator = entry.paginators.get(method)
            if paginator is None:
                paginator = entry.paginators[method] = entry.client.get_paginator(method)
            yield entry.client, paginator
        finally:
            await self._release(entry)

    async def _acquire(self, key: ClientKey) -> _Entry:
        """The open entry for `key`, marked in use (the caller releases it). It is marked before
        anything awaits: eviction closes entries that are not in use, and while this one waited
        for its client to be made or for other clients to close, another task's eviction could
        otherwise close it under its caller."""
        if self._closed:
            raise RuntimeError("client pool is closed")
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            entry.in_use += 1
            return entry
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry is None:
                session = await self._sessions.session_for(key.account_id)
                stack = AsyncExitStack()
                client = await stack.enter_async_context(
                    session.create_client(key.service, region_name=key.region, config=self._config)
                )
                if self._on_create is not None:
                    self._on_create(client, key.account_id, key.region, key.service)
                entry = _Entry(client, stack)
                self._entries[key] = entry
            entry.in_use += 1
        try:
            await self._evict()
        except BaseException:
            entry.in_use -= 1
            raise
        return entry

    async def _release(self, entry: _Entry) -> None:
        """Mark `entry` idle; when more clients are open than the cap (all were in use when the
        last one was made), close the excess now rather than at the next new client."""
        entry.in_use -= 1
        if len(self._entries) > self._settings.max_open_clients and not self._closed:
            await self._evict()

    async def _evict(self) -> None:
        """Close the least recently used idle clients beyond the cap. The victims are chosen and
        removed before anything awaits, so concurrent evictions never pick the same entry."""
        excess = len(self._entries) - self._settings.max_open_clients
        if excess <= 0:
            return
        victims: list[_Entry] = []
        for key, entry in list(self._entries.items()):
            if len(victims) == excess:
                break
            if entry.in_use:
                continue
            del self._entries[key]  # its lock stays: a task may be waiting on it
            victims.append(entry)
        for entry in victims:
            await entry.stack.aclose()

    async def close(self) -> None:
        self._closed = True
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            with contextlib.suppress(Exception):  # closing is best effort at shutdown
                await entry.stack.aclose()
