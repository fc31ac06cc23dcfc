"""One taxonomy for everything that can go wrong calling AWS.

Collectors decide per call what an error means for the data (a missing policy is "no policy", a
denied GetPolicy is "could not look"); the reconciler decides per target what it means for the
schedule (throttled: back off; denied: retry slowly; transient: retry soon).
"""

from __future__ import annotations

import asyncio
import enum

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

MALFORMED_RESPONSE = "MalformedResponse"
CALL_TIMEOUT = "CallTimeout"  # the per-call deadline expired (retries included)


class MalformedResponseError(BotoCoreError):  # type: ignore[misc]
    """A 2xx answer whose body does not parse (cut short, corrupted, or not the protocol's format).

    botocore's JSON parser turns such a body into an empty result: a ListFunctions answer that
    says nothing would read as "no functions". The daemon refuses it instead (see
    `daemon.aws.api.check_response_body`), as a transient failure of the call.
    """

    fmt = "{operation}: the {protocol} response body (HTTP {status}) does not parse"


class ErrorKind(enum.StrEnum):
    THROTTLED = "throttled"
    ACCESS_DENIED = "access_denied"
    CREDENTIALS = "credentials"  # expired or invalid credentials; a refresh may fix it
    NOT_FOUND = "not_found"
    UNSUPPORTED = "unsupported"  # the endpoint does not offer the operation (or the region is off)
    TRANSIENT = "transient"  # 5xx, connection resets, timeouts
    INVALID = "invalid"  # other 4xx: a bug in the request or odd data

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT, ErrorKind.CREDENTIALS)


THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedException",
        "AuthorizationError",
        "AuthorizationErrorException",
        "Forbidden",
        "AuthFailure",
        "AWSOrganizationsNotInUseException",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "RequestExpired",
        "InvalidToken",
        "TokenRefreshRequired",
    }
)
UNSUPPORTED_CODES = frozenset(
    {"OptInRequired", "UnknownOperationException", "InvalidAction", "404", "NotImplemented"}
)
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServiceError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServiceException",
        "RequestTimeout",
        "RequestTimeoutException",
        "EC2ThrottledException",
        "ResourceConflictException",
    }
)


def classify_code(code: str, http_status: int | None = None) -> ErrorKind:
    if code in THROTTLING_CODES:
        return ErrorKind.THROTTLED
    if code in CREDENTIAL_CODES:
        return ErrorKind.CREDENTIALS
    if code in ACCESS_DENIED_CODES:
        return ErrorKind.ACCESS_DENIED
    if code in UNSUPPORTED_CODES:
        return ErrorKind.UNSUPPORTED
    if code in TRANSIENT_CODES or (http_status is not None and http_status >= 500):
        return ErrorKind.TRANSIENT
    if code.endswith(("NotFoundException", "NotFound", "NoSuchEntity")) or code in (
        "NoSuchEntity",
        "ResourceNotFoundException",
        "NoSuchBucket",
        "NoSuchKey",
    ):
        return ErrorKind.NOT_FOUND
    if http_status == 429:
        return ErrorKind.THROTTLED
    if http_status == 403:
        return ErrorKind.ACCESS_DENIED
    return ErrorKind.INVALID


class AwsError(Exception):
    """A failed AWS call, classified. Messages carry no credentials or request bodies."""

    def __init__(
        self,
        kind: ErrorKind,
        code: str,
        *,
        service: str = "",
        operation: str = "",
        account_id: str = "",
        region: str = "",
        message: str = "",
    ) -> None:
        self.kind = kind
        self.code = code
        self.service = service
        self.operation = operation
        self.account_id = account_id
        self.region = region
        self.message = message[:300]
        where = f"{service}:{operation}" if operation else service
        super().__init__(f"{where} failed: {code} ({kind}){': ' + self.message if message else ''}")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore exception, or the exception's class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "Unknown")
    if isinstance(exc, AwsError):
        return exc.code
    if isinstance(exc, MalformedResponseError | ResponseParserError):
        return MALFORMED_RESPONSE
    return type(exc).__name__


def classify_exception(exc: BaseException) -> ErrorKind:
    if isinstance(exc, AwsError):
        return exc.kind
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return classify_code(error_code(exc), status)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ErrorKind.CREDENTIALS
    if isinstance(
        exc,
        EndpointConnectionError
        | ConnectTimeoutError
        | ReadTimeoutError
        | ConnectionClosedError
        | TimeoutError
        | asyncio.TimeoutError
        | ConnectionError,
    ):
        return ErrorKind.TRANSIENT
    if isinstance(exc, BotoCoreError | ResponseParserError):
        # e.g. a response body that cannot be parsed: a network or endpoint fault, not an answer
        return ErrorKind.TRANSIENT
    return ErrorKind.INVALID


def _message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message") or "")
    return ""


def to_aws_error(
    exc: BaseException, *, service: str, operation: str, account_id: str, region: str
) -> AwsError:
    if isinstance(exc, AwsError):
        return exc
    return AwsError(
        classify_exception(exc),
        error_code(exc),
        service=service,
        operation=operation,
        account_id=account_id,
        region=region,
        message=_message(exc),
    )
