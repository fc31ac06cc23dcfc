"""Fault rules for the moto shim: answer chosen requests with AWS errors instead of moto.

Faults the shim cannot produce (resets, hangs, cut bodies) and per-operation faults come from the
fault proxy (faultproxy.py).
"""

from __future__ import annotations

from daemon.demo.moto_server import ShimRequest, ShimResponse, json_error, query_error


def _account_of(request: ShimRequest) -> str:
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(request.access_key))


def deny_assume_role(account_id: str, session_name: str = "posture-daemon"):  # type: ignore[no-untyped-def]
    """AccessDenied for the daemon's AssumeRole into one account (other callers unaffected)."""

    def rule(request: ShimRequest) -> ShimResponse | None:
        form = request.form()
        if (
            form.get("Action") == "AssumeRole"
            and f":{account_id}:" in form.get("RoleArn", "")
            and form.get("RoleSessionName") == session_name
        ):
            return query_error("AccessDenied", "not authorized to perform sts:AssumeRole")
        return None

    return rule


def throttle_service(account_id: str, service: str):  # type: ignore[no-untyped-def]
    """ThrottlingException for every call to a JSON/REST service with the account's credentials."""

    def rule(request: ShimRequest) -> ShimResponse | None:
        if request.service == service and _account_of(request) == account_id:
            return json_error("ThrottlingException", "Rate exceeded", "429 Too Many Requests")
        return None

    return rule


def ec2_error(code: str, message: str, status: str = "403 Forbidden") -> ShimResponse:
    """An error in EC2's own XML shape (Response/Errors/Error), unlike other query services."""
    xml = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        "</Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
    )
    return ShimResponse(status, xml.encode(), "text/xml")


def deny(account_id: str, service: str, operation: str, code: str = "AccessDeniedException"):  # type: ignore[no-untyped-def]
    """An access-denied answer to one operation (by wire name) of one account's calls."""

    def rule(request: ShimRequest) -> ShimResponse | None:
        if (
            request.service == service
            and request.operation == operation
            and _account_of(request) == account_id
        ):
            if service == "ec2":
                return ec2_error(code, "You are not authorized to perform this operation.")
            return json_error(code, "not authorized", "400 Bad Request")
        return None

    return rule
