"""The collectors the daemon runs, one per service, and the AWS operations they declare."""

from __future__ import annotations

from typing import Any

from daemon.aws import clients, discovery
from daemon.collectors import awslambda, ecr, ecs, rds
from daemon.collectors.base import Collector, Operation
from daemon.collectors.cache import DetailCache, Lookups
from daemon.collectors.iam import RoleReader
from daemon.config import Settings
from daemon.export import operations as export_operations
from daemon.reconciler import events

MODULES = (awslambda, ecr, ecs, rds)


def build_collectors(settings: Settings) -> dict[str, Collector]:
    # Roles are account-wide and task definitions are read by both the ECS and the ECR collector:
    # cache them for a fraction of the interval so one sweep reads them once without serving
    # stale data for long.
    ttl = min(300.0, settings.reconciler.interval_seconds / 2)
    rs = settings.reconciler
    task_definitions = ecs.TaskDefinitionReader(ttl)

    def details() -> DetailCache[Any]:
        # look one interval ahead so a detail is re-read before it is older than max_data_age
        return DetailCache(rs.max_data_age_seconds, lookahead=rs.interval_seconds)

    return {
        awslambda.SERVICE: awslambda.LambdaCollector(
            RoleReader(rs.max_data_age_seconds or ttl, error_ttl_seconds=ttl),
            details(),
            Lookups(rs.cloudwatch_interval_seconds, lookahead=rs.interval_seconds),
        ),
        ecr.SERVICE: ecr.EcrCollector(task_definitions, details()),
        ecs.SERVICE: ecs.EcsCollector(task_definitions),
        rds.SERVICE: rds.RdsCollector(details()),
    }


def declared_operations() -> tuple[Operation, ...]:
    """Every operation the daemon may call: sessions and discovery, the collectors', and the
    configuration export's (optional: only with the export on; daemon/export/operations.py also
    lists what `restore` calls). For zero-initialised metrics and the IAM policies
    (`python -m daemon.deploy`).
    """
    seen: dict[tuple[str, str], Operation] = {}
    for ops in (
        clients.OPERATIONS,
        discovery.OPERATIONS,
        *(module.OPERATIONS for module in MODULES),
        export_operations.DAEMON,
        events.OPERATIONS,
    ):
        for op in ops:
            key = (op.service, op.operation)
            known = seen.get(key)
            # optional only if every caller needs it for an opt-in feature
            if known is None or (known.optional and not op.optional):
                seen[key] = op
    return tuple(seen.values())
