"""The collectors the daemon runs, one per service, and the AWS operations they declare."""

from __future__ import annotations

from daemon.aws import clients, discovery
from daemon.collectors import awslambda
from daemon.collectors.base import Collector, Operation
from daemon.collectors.iam import RoleReader
from daemon.config import Settings


def build_collectors(settings: Settings) -> dict[str, Collector]:
    # Roles are account-wide: cache them for a fraction of the interval so the regions of an
    # account share one read per sweep without serving stale roles for long.
    role_ttl = min(300.0, settings.reconciler.interval_seconds / 2)
    return {
        awslambda.SERVICE: awslambda.LambdaCollector(RoleReader(role_ttl)),
    }


def declared_operations() -> tuple[Operation, ...]:
    """Every operation the daemon may call: the collectors' and those of sessions and discovery.

    For zero-initialised metrics and the IAM policies (`python -m daemon.deploy`).
    """
    seen: dict[tuple[str, str], Operation] = {}
    for op in (*clients.OPERATIONS, *discovery.OPERATIONS, *awslambda.OPERATIONS):
        seen.setdefault((op.service, op.operation), op)
    return tuple(seen.values())
