"""Fault rules for the moto shim: answer chosen requests with AWS errors instead of moto."""

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


def throttle_lambda(account_id: str):  # type: ignore[no-untyped-def]
    """ThrottlingException for every Lambda call made with the account's credentials."""

    def rule(request: ShimRequest) -> ShimResponse | None:
        if request.service == "lambda" and _account_of(request) == account_id:
            return json_error("ThrottlingException", "Rate exceeded", "429 Too Many Requests")
        return None

    return rule


def deny_operation(account_id: str, path_fragment: str, code: str = "AccessDeniedException"):  # type: ignore[no-untyped-def]
    """403 for Lambda REST calls whose path contains `path_fragment` (e.g. '/policy')."""

    def rule(request: ShimRequest) -> ShimResponse | None:
        if (
            request.service == "lambda"
            and path_fragment in request.path
            and _account_of(request) == account_id
        ):
            return json_error(code, "not authorized", "403 Forbidden")
        return None

    return rule
