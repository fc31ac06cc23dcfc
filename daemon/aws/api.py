"""The one way the daemon calls AWS.

`AwsApi.call` / `AwsApi.pages` count and time every call, hold the per-account in-flight limit,
apply the per-call deadline, classify failures into `AwsError`, and re-assume a role once when AWS
answers that the token expired. Every HTTP attempt (retries included) is counted by a botocore
event hook installed when the client is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable
from typing import IO, Any

import aiohttp
from botocore.exceptions import PaginationError
from botocore.paginate import TokenEncoder

from daemon.aws.clients import Client, ClientPool, Sessions
from daemon.aws.direct import DirectReads
from daemon.aws.errors import (
    CALL_TIMEOUT,
    MALFORMED_RESPONSE,
    THROTTLING_CODES,
    AwsError,
    ErrorKind,
    MalformedResponseError,
    classify_code,
    classify_exception,
    error_code,
    to_aws_error,
)
from daemon.aws.pacing import Pacer
from daemon.config import AwsSettings
from daemon.metrics.health import HealthMetrics
from daemon.model.operations import Operation


def operation_name(client: Client, method: str) -> str:
    """botocore's wire name (ListFunctions) for a method name (list_functions)."""
    mapping: dict[str, str] = client.meta.method_to_api_mapping
    return mapping.get(method, method)


def _has_body_members(shape: Any) -> bool:
    """Whether an output shape carries anything in the body (not only headers or status)."""
    if shape is None:
        return False
    payload = shape.serialization.get("payload")
    if payload:
        member = shape.members.get(payload)
        return member is not None and member.type_name == "structure"
    return any(
        m.serialization.get("location") not in ("header", "headers", "statusCode")
        for m in shape.members.values()
    )


def check_response_body(operation_model: Any, response_dict: dict[str, Any]) -> None:
    """Refuse a 2xx answer whose body does not parse; raise MalformedResponseError.

    botocore parses a JSON body that is not JSON into `{"message": body}` and so returns an
    empty result; an empty body parses to an empty result too. For a listing that reads as
    "nothing there" -- a compliant estate. XML bodies that do not parse raise in botocore already,
    but later and without being counted; both are checked here, before botocore parses.
    """
    status = int(response_dict.get("status_code") or 0)
    if status >= 300 or operation_model.has_streaming_output:
        return
    shape = operation_model.output_shape
    if not _has_body_members(shape):
        return
    protocol = str(operation_model.service_model.protocol)
    body = response_dict.get("body") or b""
    ok = True
    if protocol in ("json", "rest-json"):
        try:
            ok = isinstance(json.loads(body), dict)
        except ValueError:
            ok = False
    elif protocol in ("query", "ec2", "rest-xml"):
        try:
            ET.fromstring(body)
        except ET.ParseError:
            ok = False
    if not ok:
        raise MalformedResponseError(
            operation=operation_model.name, protocol=protocol, status=status
        )


class AwsGateway:
    """Owns sessions, clients and limits for the whole daemon; hands out per-target `AwsApi`s."""

    def __init__(
        self,
        settings: AwsSettings,
        metrics: HealthMetrics,
        operations: Iterable[Operation] | None = None,
    ) -> None:
        """`operations`: the daemon's declared calls, to load service models cut down to them
        (the daemon passes them; None keeps botocore's whole models)."""
        self.settings = settings
        self.metrics = metrics
        self.sessions = Sessions(settings, on_create=self._instrument, operations=operations)
        self.pool = ClientPool(self.sessions, settings, on_create=self._instrument)
        self._account_limits: dict[str, asyncio.Semaphore] = {}
        pacing = settings.pacing
        self.pacer = Pacer(
            pacing.rates(), pacing.share, gauge=metrics.rate_limit, enabled=pacing.enabled
        )
        self._http: aiohttp.ClientSession | None = None
        self.direct = DirectReads(self.check_body) if settings.direct_reads else None

    def http(self) -> aiohttp.ClientSession:
        """The HTTP session for presigned URLs (proxies from the environment, as botocore)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(trust_env=True)
        return self._http

    def _instrument(self, client: Client, account_id: str, region: str, service: str) -> None:
        metrics = self.metrics
        pacer = self.pacer

        def on_attempt(**kwargs: Any) -> None:
            # Called by botocore after every attempt, before it decides whether to retry.
            model = kwargs.get("operation")
            operation = getattr(model, "name", "unknown")
            metrics.api_requests.labels(service, operation).inc()
            response = kwargs.get("response")
            exc = kwargs.get("caught_exception")
            code: str | None = None
            if response is not None:
                http, parsed = response
                code = (parsed or {}).get("Error", {}).get("Code")
                if code is None and getattr(http, "status_code", 200) >= 400:
                    code = str(http.status_code)
            elif exc is not None:
                code = type(exc).__name__
            if code:
                metrics.api_errors.labels(service, operation, code).inc()
                if code in THROTTLING_CODES:
                    metrics.api_throttles.labels(account_id, region, service).inc()
            # AIMD: every attempt's answer, retries included (a 5xx or a timeout is no signal)
            if code in THROTTLING_CODES:
                pacer.feedback(account_id, region, service, operation, throttled=True)
            elif code is None and response is not None:
                pacer.feedback(account_id, region, service, operation, throttled=False)

        def on_body(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
            self.check_body(service, operation_model, response_dict)

        # Registered first, at the retry handler's own level: that handler answers the event when it
        # decides to retry, which stops the dispatch to later handlers.
        service_id = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register_first(f"needs-retry.{service_id}", on_attempt)
        client.meta.events.register_first(f"before-parse.{service_id}", on_body)

    def check_body(self, service: str, operation_model: Any, response_dict: dict[str, Any]) -> None:
        """`check_response_body`, counting a malformed answer as an attempt that failed (the
        retry handler never sees it: it is raised before parsing)."""
        try:
            check_response_body(operation_model, response_dict)
        except MalformedResponseError:
            self.metrics.api_requests.labels(service, operation_model.name).inc()
            self.metrics.api_errors.labels(service, operation_model.name, MALFORMED_RESPONSE).inc()
            raise

    def limit_for(self, account_id: str) -> asyncio.Semaphore:
        sem = self._account_limits.get(account_id)
        if sem is None:
            sem = asyncio.Semaphore(self.settings.max_inflight_per_account)
            self._account_limits[account_id] = sem
        return sem

    def api(self, account_id: str, region: str) -> AwsApi:
        return AwsApi(self, account_id, region)

    async def own_account_id(self) -> str:
        return await self.sessions.own_account_id()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.pool.close()


class AwsApi:
    """AWS calls on behalf of one account and region."""

    def __init__(self, gateway: AwsGateway, account_id: str, region: str) -> None:
        self.gateway = gateway
        self.account_id = account_id
        self.region = region

    def _error(self, exc: BaseException, service: str, operation: str) -> AwsError:
        return to_aws_error(
            exc,
            service=service,
            operation=operation,
            account_id=self.account_id,
            region=self.region,
        )

    def _deadline(self, service: str, operation: str) -> AwsError:
        """The per-call deadline (POSTURE_AWS__CALL_TIMEOUT_SECONDS) expired, retries included."""
        self.gateway.metrics.api_errors.labels(service, operation, CALL_TIMEOUT).inc()
        return AwsError(
            ErrorKind.TRANSIENT,
            CALL_TIMEOUT,
            service=service,
            operation=operation,
            account_id=self.account_id,
            region=self.region,
            message=f"no answer within {self.gateway.settings.call_timeout_seconds:g}s",
        )

    async def call(self, service: str, method: str, **params: Any) -> dict[str, Any]:
        """One API call. Raises AwsError; never returns a partial answer."""
        refreshed = False
        while True:
            started = time.monotonic()
            try:
                return await self._call_once(service, method, params)
            except AwsError as err:
                if err.kind is ErrorKind.CREDENTIALS and not refreshed:
                    refreshed = self.gateway.sessions.invalidate(self.account_id, since=started)
                    if refreshed:
                        continue
                raise

    async def _call_once(self, service: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        operation = method
        started = time.monotonic()
        deadline = asyncio.timeout(self.gateway.settings.call_timeout_seconds)
        try:
            async with (
                self.gateway.pool.client(self.account_id, self.region, service) as client,
                deadline,
            ):
                operation = operation_name(client, method)
                # the token first: a call waiting for its quota holds no in-flight slot
                await self.gateway.pacer.acquire(self.account_id, self.region, service, operation)
                async with self.gateway.limit_for(self.account_id):
                    result: dict[str, Any] | None = None
                    if (direct := self.gateway.direct) is not None:
                        model = client.meta.service_model.operation_model(operation)
                        result = await direct.call(client, service, model, params)
                    if result is None:  # not read directly: botocore's way
                        result = await getattr(client, method)(**params)
        except AwsError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                raise self._deadline(service, operation) from None
            raise self._error(exc, service, operation) from None
        finally:
            self.gateway.metrics.api_duration.labels(service).observe(time.monotonic() - started)
        result.pop("ResponseMetadata", None)
        return result

    async def pages(
        self, service: str, method: str, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """The pages of a paginated operation, each fetched under the same rules as `call`
        (`_Listing` says how a page is asked for).

        When AWS answers that the token expired, the role is assumed again and the listing goes on
        from the page that failed (once per page), as `call` does for single calls.
        """
        operation = method
        pool = self.gateway.pool
        async with pool.paginator(self.account_id, self.region, service, method) as (
            client,
            paginator,
        ):
            operation = operation_name(client, method)
            listing = _Listing(self.gateway.direct, client, service, operation, paginator, params)
            resume: dict[str, Any] | None = None  # the token of the page being fetched
            refreshed = False
            while True:
                started = time.monotonic()
                deadline = asyncio.timeout(self.gateway.settings.call_timeout_seconds)
                try:
                    async with deadline:
                        await self.gateway.pacer.acquire(
                            self.account_id, self.region, service, operation
                        )
                        async with self.gateway.limit_for(self.account_id):
                            page = await listing.fetch(resume)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    if isinstance(exc, TimeoutError) and deadline.expired():
                        raise self._deadline(service, operation) from None
                    err = self._error(exc, service, operation)
                    if err.kind is ErrorKind.CREDENTIALS and not refreshed:
                        refreshed = self.gateway.sessions.invalidate(self.account_id, since=started)
                        if refreshed:
                            listing.restart(resume)
                            continue
                    raise err from None
                finally:
                    self.gateway.metrics.api_duration.labels(service).observe(
                        time.monotonic() - started
                    )
                refreshed = False
                try:
                    resume = listing.next_token(page, resume)
                except PaginationError as exc:
                    raise self._error(exc, service, operation) from None
                page.pop("ResponseMetadata", None)
                yield page
                if resume is None:
                    return  # the last page: no request (and no token of the quota) for "no more"

    async def download(
        self,
        url: str,
        sink: IO[bytes],
        *,
        service: str,
        operation: str,
        max_bytes: int,
        limit_seconds: float | None = None,
    ) -> tuple[int, str]:
        """GET a presigned URL (e.g. GetFunction's Code.Location) into `sink`.

        Returns (bytes, SHA-256 hex). Counted and timed like an API call under `operation`;
        failures become AwsError. The URL carries a signature: it is never logged and never put
        into an error message.
        """
        metrics = self.gateway.metrics
        metrics.api_requests.labels(service, operation).inc()
        started = time.monotonic()
        digest = hashlib.sha256()
        size = 0
        code: str | None = None
        try:
            async with (
                asyncio.timeout(limit_seconds or self.gateway.settings.call_timeout_seconds),
                self.gateway.http().get(url, allow_redirects=True) as resp,
            ):
                if resp.status >= 400:
                    code = "TooManyRequests" if resp.status == 429 else str(resp.status)
                    raise AwsError(
                        classify_code(code, resp.status),
                        code,
                        service=service,
                        operation=operation,
                        account_id=self.account_id,
                        region=self.region,
                        message=f"HTTP {resp.status} from the presigned URL",
                    )
                async for chunk in resp.content.iter_chunked(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        code = "PackageTooLarge"
                        raise AwsError(
                            ErrorKind.INVALID,
                            code,
                            service=service,
                            operation=operation,
                            account_id=self.account_id,
                            region=self.region,
                            message=f"larger than {max_bytes} bytes",
                        )
                    digest.update(chunk)
                    sink.write(chunk)
        except AwsError:
            raise
        except Exception as exc:
            code = type(exc).__name__
            transient = isinstance(exc, aiohttp.ClientError | TimeoutError)
            raise AwsError(
                ErrorKind.TRANSIENT if transient else classify_exception(exc),
                code,
                service=service,
                operation=operation,
                account_id=self.account_id,
                region=self.region,
            ) from None
        finally:
            if code is not None:
                metrics.api_errors.labels(service, operation, code).inc()
            metrics.api_duration.labels(service).observe(time.monotonic() - started)
        return size, digest.hexdigest()

    async def all_items(self, service: str, method: str, key: str, **params: Any) -> list[Any]:
        """Every item under `key` across all pages."""
        out: list[Any] = []
        async for page in self.pages(service, method, **params):
            out.extend(page.get(key) or [])
        return out


class _Listing:
    """How `AwsApi.pages` asks for each page of one listing.

    A page of an operation the direct path reads (`DirectReads`: Lambda's listings) is one direct
    call with the previous page's token, as botocore's paginator would send it; the paginator
    still says what the next token is, and a token that comes back unchanged is refused, as
    botocore refuses it. Every other listing, and any call with a `PaginationConfig` (page size,
    item limit, starting token), goes through botocore's paginator.
    """

    def __init__(
        self,
        direct: DirectReads | None,
        client: Client,
        service: str,
        operation: str,
        paginator: Any,
        params: dict[str, Any],
    ) -> None:
        self.client = client
        self.service = service
        self.paginator = paginator
        self.params = params
        self.pager = paginator.paginate(**params)
        self.direct = direct if "PaginationConfig" not in params else None
        self.model = client.meta.service_model.operation_model(operation) if self.direct else None
        self.iterator: AsyncIterator[dict[str, Any]] | None = None  # botocore's

    async def fetch(self, resume: dict[str, Any] | None) -> dict[str, Any]:
        """The page `resume` (the previous page's next token; None: the first) points to.
        Raises StopAsyncIteration when botocore's paginator has no more."""
        if self.direct is not None:
            page = await self.direct.call(
                self.client, self.service, self.model, {**self.params, **(resume or {})}
            )
            if page is not None:
                return page  # type: ignore[no-any-return]
            self.direct = None  # not read directly (decided on the first page)
        if self.iterator is None:
            self.iterator = self.pager.__aiter__()
        return await self.iterator.__anext__()

    def restart(self, resume: dict[str, Any] | None) -> None:
        """After renewed credentials: the page `resume` points to is asked for again. botocore's
        iterator is finished once it raised, so a new one starts at that page."""
        if self.direct is not None:
            return  # a direct listing asks for the same page as it is
        self.iterator = None
        rest = {k: v for k, v in self.params.items() if k != "PaginationConfig"}
        config = dict(self.params.get("PaginationConfig") or {})
        if resume:
            config["StartingToken"] = TokenEncoder().encode(resume)
        self.pager = self.paginator.paginate(**rest, PaginationConfig=config)

    def next_token(
        self, page: dict[str, Any], resume: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The token of the page after `page` (None: it was the last), as botocore's paginator
        reads it."""
        token = {k: v for k, v in self.pager._get_next_token(page).items() if v is not None}
        if self.direct is not None and token and token == resume:
            raise PaginationError(message="the same next token was received twice")
        return token or None


__all__ = ["AwsApi", "AwsError", "AwsGateway", "ErrorKind", "error_code"]
