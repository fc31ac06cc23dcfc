"""Fault rules for the moto shim: answer chosen requests with AWS errors instead of moto.

Faults the shim cannot produce (resets, hangs, cut bodies) and per-operation faults come from the
fault proxy (faultproxy.py).
"""

from __future__ import annotations

from daemon.demo.moto_server import ShimRequest, ShimResponse, query_error


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
