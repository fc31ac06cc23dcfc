"""The one way the daemon calls AWS.

`AwsApi.call` / `AwsApi.pages` count and time every call, hold the per-account in-flight limit,
apply the per-call deadline, classify failures into `AwsError`, and re-assume a role once when AWS
answers that the token expired. Every HTTP attempt (retries included) is counted by a botocore
event hook installed when the client is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import IO, Any

import aiohttp

from daemon.aws.clients import Client, ClientPool, Sessions
from daemon.aws.errors import (
    THROTTLING_CODES,
    AwsError,
    ErrorKind,
    classify_code,
    classify_exception,
    error_code,
    to_aws_error,
)
from daemon.config import AwsSettings
from daemon.metrics.health import HealthMetrics


def operation_name(client: Client, method: str) -> str:
    """botocore's wire name (ListFunctions) for a method name (list_functions)."""
    mapping: dict[str, str] = client.meta.method_to_api_mapping
    return mapping.get(method, method)


class AwsGateway:
    """Owns sessions, clients and limits for the whole daemon; hands out per-target `AwsApi`s."""

    def __init__(self, settings: AwsSettings, metrics: HealthMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sessions = Sessions(settings, on_create=self._instrument)
        self.pool = ClientPool(self.sessions, settings, on_create=self._instrument)
        self._account_limits: dict[str, asyncio.Semaphore] = {}
        self._http: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        """The HTTP session for presigned URLs (proxies from the environment, as botocore)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(trust_env=True)
        return self._http

    def _instrument(self, client: Client, account_id: str, region: str, service: str) -> None:
        metrics = self.metrics

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

        # Registered first, at the retry handler's own level: that handler answers the event when it
        # decides to retry, which stops the dispatch to later handlers.
        service_id = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register_first(f"needs-retry.{service_id}", on_attempt)

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

    async def call(self, service: str, method: str, **params: Any) -> dict[str, Any]:
        """One API call. Raises AwsError; never returns a partial answer."""
        refreshed = False
        while True:
            try:
                return await self._call_once(service, method, params)
            except AwsError as err:
                if err.kind is ErrorKind.CREDENTIALS and not refreshed:
                    refreshed = self.gateway.sessions.invalidate(self.account_id)
                    if refreshed:
                        continue
                raise

    async def _call_once(self, service: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        operation = method
        started = time.monotonic()
        try:
            async with (
                self.gateway.pool.client(self.account_id, self.region, service) as client,
                self.gateway.limit_for(self.account_id),
                asyncio.timeout(self.gateway.settings.call_timeout_seconds),
            ):
                operation = operation_name(client, method)
                result: dict[str, Any] = await getattr(client, method)(**params)
        except AwsError:
            raise
        except Exception as exc:
            raise self._error(exc, service, operation) from None
        finally:
            self.gateway.metrics.api_duration.labels(service).observe(time.monotonic() - started)
        result.pop("ResponseMetadata", None)
        return result

    async def pages(
        self, service: str, method: str, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """The pages of a paginated operation, each fetched under the same rules as `call`."""
        operation = method
        async with self.gateway.pool.client(self.account_id, self.region, service) as client:
            operation = operation_name(client, method)
            iterator = client.get_paginator(method).paginate(**params).__aiter__()
            while True:
                started = time.monotonic()
                try:
                    async with (
                        self.gateway.limit_for(self.account_id),
                        asyncio.timeout(self.gateway.settings.call_timeout_seconds),
                    ):
                        page = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    err = self._error(exc, service, operation)
                    if err.kind is ErrorKind.CREDENTIALS:
                        self.gateway.sessions.invalidate(self.account_id)
                    raise err from None
                finally:
                    self.gateway.metrics.api_duration.labels(service).observe(
                        time.monotonic() - started
                    )
                page.pop("ResponseMetadata", None)
                yield page

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


__all__ = ["AwsApi", "AwsError", "AwsGateway", "ErrorKind", "error_code"]
