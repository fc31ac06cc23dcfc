"""The collectors the daemon runs, one per service, and the AWS operations they declare."""

from __future__ import annotations

from daemon.collectors import awslambda
from daemon.collectors.base import Collector, Operation
from daemon.collectors.iam import RoleReader
from daemon.config import Settings
from daemon.export import operations as export_operations


def build_collectors(settings: Settings) -> dict[str, Collector]:
    # Roles are account-wide: cache them for a fraction of the interval so the regions of an
    # account share one read per sweep without serving stale roles for long.
    role_ttl = min(300.0, settings.reconciler.interval_seconds / 2)
    return {
        awslambda.SERVICE: awslambda.LambdaCollector(RoleReader(role_ttl)),
    }


def declared_operations() -> tuple[Operation, ...]:
    """Every operation the daemon may call (for zero-initialised metrics and the IAM policy):
    the collectors', then the configuration export's (optional: only with the export on; see
    daemon/export/operations.py, which also lists what `restore` calls)."""
    seen: dict[tuple[str, str], Operation] = {}
    for op in (*awslambda.OPERATIONS, *export_operations.DAEMON):
        seen.setdefault((op.service, op.operation), op)
    return tuple(seen.values())
