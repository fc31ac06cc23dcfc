"""Direct reads: botocore's answer to a REST-JSON GET, without botocore's per-call pipeline.

A cold sweep is ~95% Lambda reads (GetFunction, GetPolicy, GetFunctionUrlConfig, ...), all
REST-JSON GETs with a path parameter or two and no body. For each of them an aiobotocore client
runs a dozen event emissions (parameter building, before-call, request-created, before-sign,
before-send, after-call, before-parse), validates and serialises the parameters, resolves the
endpoint from the rules, builds and prepares an `AWSRequest`, and makes a new SigV4 signer that
derives the signing key again: about a third of the CPU of a call (the benchmark's bare client:
~1.1-1.4 ms per call against moto), most of it the same for every call of a client.

`DirectReads.call` keeps every part that decides what is sent and what comes back, and drops
the repetition around them:

- **the same request**: botocore's serialiser for the protocol (the daemon's parameters are its
  own, not validated again), the endpoint botocore's rules resolve for the client (once per
  client and operation), the client's User-Agent;
- **the same signature**: SigV4 (`SigV4.sign`), the algorithm of botocore's `SigV4Auth` for a
  request without a body, with the signing key derived once per day, region and service instead
  of four HMACs per call (tests compare every part with botocore's own signer), and the
  credentials botocore's would sign with (`Frozen`: its refresh check, asked again only when the
  credentials were renewed or invalidated, or come near their refresh time);
- **the same transport**: the client's own HTTP session (its TLS context, proxies, timeouts,
  connection pool and error mapping);
- **the same answer**: botocore's parser for the protocol, the daemon's malformed-body check, and
  the client's modelled error (`client.exceptions.from_code`), so `to_aws_error` sees what it sees
  for any other call;
- **the same retries**: after every attempt the client's `needs-retry` event, as botocore's
  endpoint emits it: botocore's standard retry handler (backoff, jitter, retry quota) decides and
  sleeps, and the daemon's attempt hook counts the attempt and feeds the pacing; after the last,
  the client's `after-call` event, where the retry quota takes back what retries borrowed; the
  SDK's retry headers (`amz-sdk-invocation-id`, `amz-sdk-request`) on every attempt.

What is skipped, for these operations, is what does nothing for them: parameter validation (the
daemon's own parameters), idempotency tokens and checksums (none on a GET), the recursion header
(only inside a Lambda function), the API-version header (not Lambda's), rebuilding the
User-Agent (the daemon sets the whole string), and the per-call signer choice (SigV4 is resolved
once). A `before-send` hook on the client (moto's in-process mock, a test's capture) does not
see these requests: the daemon is tested against moto's server, over HTTP.

Only operations where this is the whole story are read directly (`eligible`): REST-JSON, GET,
no body, no streaming, no host prefix, no endpoint parameters from the call, SigV4. Anything
else, and every call when `POSTURE_AWS__DIRECT_READS=false`, goes through the client as usual.
Listings of eligible operations are read a page per call (`AwsApi.pages`, daemon/aws/api.py).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from aiobotocore.endpoint import convert_to_response_dict
from botocore.auth import SIGNED_HEADERS_BLACKLIST, _host_from_url, get_current_datetime
from botocore.awsrequest import AWSPreparedRequest, prepare_request_dict
from botocore.handlers import add_retry_headers
from botocore.serialize import create_serializer
from botocore.utils import normalize_url_path

from daemon.aws.clients import Client

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
TIMESTAMP = "%Y%m%dT%H%M%SZ"
_SKIPPED = frozenset(SIGNED_HEADERS_BLACKLIST)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class SigV4:
    """AWS Signature Version 4 for requests without a body, as botocore's `SigV4Auth` signs them
    (canonical path, query, headers; the empty payload's hash), with the signing key kept per
    (secret, day, region, service): it changes daily and with the credentials."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def _key(self, secret: str, day: str, region: str, service: str) -> bytes:
        k = (secret, day, region, service)
        key = self._keys.get(k)
        if key is None:
            if len(self._keys) > 256:  # old days and rotated credentials
                self._keys.clear()
            key = _hmac(
                _hmac(_hmac(_hmac(f"AWS4{secret}".encode(), day), region), service), "aws4_request"
            )
            self._keys[k] = key
        return key

    def sign(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        credentials: Any,
        region: str,
        service: str,
        host: str,
        amz_date: str,
    ) -> None:
        """Add X-Amz-Date, X-Amz-Security-Token and Authorization to `headers`.

        `credentials`: botocore frozen credentials; `host`: the Host header botocore derives from
        the URL (`_host_from_url`); `amz_date`: the request time, `%Y%m%dT%H%M%SZ` (UTC).
        """
        headers["X-Amz-Date"] = amz_date
        if credentials.token:
            headers["X-Amz-Security-Token"] = credentials.token
        signed: dict[str, list[str]] = {}
        for name, value in headers.items():
            lname = name.lower()
            if lname not in _SKIPPED:
                signed.setdefault(lname, []).append(" ".join(value.split()))
        signed.setdefault("host", [host])
        names = sorted(signed)
        canonical_headers = "".join(f"{n}:{','.join(signed[n])}\n" for n in names)
        signed_headers = ";".join(names)
        parts = urlsplit(url)
        query = ""
        if parts.query:
            pairs = sorted(pair.partition("=")[::2] for pair in parts.query.split("&"))
            query = "&".join(f"{k}={v}" for k, v in pairs)
        canonical = "\n".join(
            (
                method,
                quote(normalize_url_path(parts.path), safe="/~"),
                query,
                canonical_headers,
                signed_headers,
                EMPTY_SHA256,
            )
        )
        day = amz_date[:8]
        scope = f"{day}/{region}/{service}/aws4_request"
        to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            )
        )
        key = self._key(credentials.secret_key, day, region, service)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        )


class Frozen:
    """The frozen credentials botocore would sign with now, without its refresh check on every
    call.

    `get_frozen_credentials` of refreshable credentials asks `refresh_needed` each time: the
    time left to the expiry, computed with dateutil's local time zone (~7% of a direct read's
    CPU). The answer only changes when the expiry does (a refresh, or `Sessions.invalidate`
    after an ExpiredToken answer, both put a new `_expiry_time` object) or when the time left
    falls under botocore's advisory refresh time (15 minutes). So botocore's own call is made
    when the expiry object is not the one last seen, or once the time it left then has run down
    to that refresh time (measured on the monotonic clock); in between, the credentials it
    returned last are the ones it would return. Credentials without an expiry (static keys) and
    any that are not botocore's refreshable kind always go through botocore's call.
    """

    def __init__(self) -> None:
        # credentials -> (expiry object seen, monotonic time until which no refresh is due)
        self._seen: weakref.WeakKeyDictionary[Any, tuple[object, float]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, credentials: Any) -> Any:
        seen = self._seen.get(credentials)
        expiry = getattr(credentials, "_expiry_time", None)
        if seen is not None and seen[0] is expiry and time.monotonic() < seen[1]:
            return credentials._frozen_credentials
        frozen = await credentials.get_frozen_credentials()
        expiry = getattr(credentials, "_expiry_time", None)
        advisory = getattr(credentials, "_advisory_refresh_timeout", None)
        if expiry is not None and isinstance(advisory, int | float):
            left = credentials._seconds_remaining() - advisory
            if left > 0:
                self._seen[credentials] = (expiry, time.monotonic() + left)
        return frozen


def eligible(operation_model: Any) -> bool:
    """Whether `DirectReads` sends this operation exactly as botocore would."""
    http = operation_model.http
    return bool(
        operation_model.service_model.resolved_protocol == "rest-json"
        and http.get("method") == "GET"
        and not operation_model.has_streaming_input
        and not operation_model.has_streaming_output
        and not operation_model.has_event_stream_output
        and not operation_model.endpoint  # a host prefix
        and not operation_model.context_parameters
        and not operation_model.static_context_parameters
        and not operation_model.endpoint_discovery
        and not operation_model.http_checksum
        and operation_model.resolved_auth_type in (None, "v4")
        and _no_body(operation_model.input_shape)
    )


def _no_body(shape: Any) -> bool:
    """Whether every input member goes in the URI, the query or a header (nothing to sign but
    the empty payload's hash)."""
    return shape is None or all(m.serialization.get("location") for m in shape.members.values())


@dataclass(frozen=True, slots=True)
class _Route:
    """What botocore resolves per client and operation, once."""

    endpoint_url: str
    extra_headers: dict[str, str]
    host: str
    signing_name: str
    signing_region: str
    user_agent: str | None
    after_call: str  # the event botocore emits once the call has its answer


class DirectReads:
    """Sends eligible calls (`eligible`) as botocore would, without its per-call pipeline.
    Whether a (client, operation) goes this way is decided once, with its route."""

    def __init__(self, check_body: Any) -> None:
        """`check_body(service, operation_model, response_dict)`: the daemon's malformed-body
        check, the work of its `before-parse` hook, which this path does not emit."""
        self._check_body = check_body
        self._signer = SigV4()
        self._frozen = Frozen()
        self._serializer = create_serializer("rest-json", include_validation=False)
        self._routes: weakref.WeakKeyDictionary[Client, dict[str, _Route | None]] = (
            weakref.WeakKeyDictionary()
        )

    async def _route(self, client: Client, operation_model: Any) -> _Route | None:
        routes = self._routes.get(client)
        if routes is None:
            routes = self._routes[client] = {}
        name = operation_model.name
        if name in routes:
            return routes[name]
        route: _Route | None = None
        signer = client._request_signer
        if eligible(operation_model) and signer._credentials is not None:
            # the endpoint and signing context botocore's rules give this client and operation
            # (none of their parameters come from the call: `eligible`)
            context: dict[str, Any] = {
                "client_region": client.meta.region_name,
                "client_config": client.meta.config,
                "has_streaming_input": False,
                "auth_type": operation_model.resolved_auth_type,
            }
            url, headers, _ = await client._resolve_endpoint_ruleset(operation_model, {}, context)
            signing = context.get("signing") or {}
            if context.get("auth_type") in (None, "v4") and not signing.get(
                "disableDoubleEncoding"
            ):
                route = _Route(
                    endpoint_url=url,
                    extra_headers=dict(headers or {}),
                    host=_host_from_url(url),
                    signing_name=signing.get("signing_name") or signer._signing_name,
                    signing_region=signing.get("region") or signer._region_name,
                    user_agent=client._user_agent_creator.to_string(),
                    after_call=f"after-call.{client.meta.service_model.service_id.hyphenize()}"
                    f".{name}",
                )
        routes[name] = route
        return route

    async def call(
        self, client: Client, service: str, operation_model: Any, params: dict[str, Any]
    ) -> Any:
        """The parsed answer, or `None` when this operation or client is not read directly
        (`eligible`, unsigned clients, other signing schemes: the caller then calls through the
        client). Raises what botocore raises for the call.

        The steps and their order are botocore's endpoint's (`_send_request`): signing happens
        before the attempt, and only sending is inside it (its failures go to the retry handler);
        a failure to sign or to parse is raised at once, as there.
        """
        route = await self._route(client, operation_model)
        if route is None:
            return None
        request_dict = self._serializer.serialize_to_request(params, operation_model)
        if route.extra_headers:
            request_dict["headers"].update(route.extra_headers)
        prepare_request_dict(
            request_dict,
            endpoint_url=route.endpoint_url,
            user_agent=route.user_agent,
            context={"client_config": client.meta.config},
        )
        endpoint = client._endpoint
        context = request_dict["context"]
        credentials = client._request_signer._credentials
        attempts = 1
        endpoint._update_retries_context(context, attempts)
        while True:
            frozen = await self._frozen.get(credentials)
            headers = dict(request_dict["headers"])
            self._signer.sign(
                "GET",
                request_dict["url"],
                headers,
                frozen,
                route.signing_region,
                route.signing_name,
                route.host,
                get_current_datetime().strftime(TIMESTAMP),
            )
            request = AWSPreparedRequest(
                "GET", request_dict["url"], headers, None, False, context=context
            )
            add_retry_headers(request)  # after signing, as botocore adds them (not signed)
            response: tuple[Any, dict[str, Any]] | None = None
            exception: Exception | None = None
            try:
                http_response = await endpoint.http_session.send(request)
            except Exception as exc:  # botocore's endpoint hands these to the retry handler
                exception = exc
            else:
                response_dict = await convert_to_response_dict(http_response, operation_model)
                self._check_body(service, operation_model, response_dict)
                parser = endpoint._response_parser_factory.create_parser("rest-json")
                parsed = await parser.parse(response_dict, operation_model.output_shape)
                if http_response.status_code >= 300:
                    await endpoint._add_modeled_error_fields(
                        response_dict, parsed, operation_model, parser
                    )
                response = (http_response, parsed)
            if not await endpoint._needs_retry(
                attempts, operation_model, request_dict, response, exception
            ):
                break
            attempts += 1
            endpoint._update_retries_context(context, attempts, response)
        if exception is not None:
            raise exception
        assert response is not None
        http_response, parsed = response
        # botocore's after-call handlers: the retry handler's quota takes back what a retried
        # call borrowed (without it, throttles would drain the quota and retries would stop)
        await client.meta.events.emit(
            route.after_call,
            http_response=http_response,
            parsed=parsed,
            model=operation_model,
            context=context,
        )
        if "ResponseMetadata" in parsed:
            parsed["ResponseMetadata"]["RetryAttempts"] = attempts - 1
        if http_response.status_code >= 300:
            code = parsed.get("Error", {}).get("Code")
            raise client.exceptions.from_code(code)(parsed, operation_model.name)
        return parsed
