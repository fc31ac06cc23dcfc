"""Configuration export coverage: a control and the backup gauges of kind "export".

Both read what the export step put on each function (daemon/export/exporter.py): the newest valid
snapshot in the bucket and, when the function's current state is not in it, since when. With the
daemon's export off, the snapshot carries no export data: the control does not apply and the gauges
are absent. When the bucket's index could not be read, the control reports `error` and the gauges
are absent (unknown is not "missing").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from pydantic import Field

from daemon.controls.registry import (
    EvalContext,
    Outcome,
    Params,
    control,
    errored,
    failed,
    passed,
)
from daemon.measures import Sample, sample, target_measure
from daemon.metrics import names as n
from daemon.model import Severity, Snapshot
from daemon.model import awslambda as m
from daemon.model.export import ASPECT_EXPORT
from daemon.policy.compiled import Policy

SERVICE = "lambda"
EXPORT_CURRENT = "lambda-config-export-current"
KIND = "export"


class ExportCurrentParams(Params):
    max_lag_minutes: int = Field(
        default=60,
        ge=0,
        description="How long a function's current configuration may stay out of the export "
        "(after a change, or since the daemon first saw it) before this fails.",
    )
    require_code: bool = Field(
        default=True,
        description="Fail when the newest snapshot holds no deployment package (code not "
        "exported, too large, or not downloadable).",
    )
    require_environment: bool = Field(
        default=True,
        description="Fail when the newest snapshot could not hold the environment variables "
        "(the reader could not decrypt them).",
    )


def _minutes(delta: dt.timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"


@control(
    id=EXPORT_CURRENT,
    service=SERVICE,
    resource_type=m.FUNCTION,
    title="Configuration export holds the function's current state",
    severity=Severity.MEDIUM,
    rationale="""AWS keeps no copy of a function's configuration: once a function is deleted or
    broken, its settings, permissions, aliases, triggers and code are gone unless something
    exported them. The daemon's export (POSTURE_EXPORT__ENABLED) writes a snapshot to S3 on every
    change; this control fails when the newest snapshot no longer matches the function for longer
    than the allowed lag, or lacks parts needed to restore it. It applies only while the export is
    enabled.""",
    remediation="""Check posture_export_failures_total and the daemon's log for the failing
    stage (bucket or KMS permissions of POSTURE_EXPORT__ROLE_ARN, the reader role's Lambda
    permissions, package size), fix it, and the next sweep exports the function.""",
    params=ExportCurrentParams,
    requires=(ASPECT_EXPORT,),
    references=("https://docs.aws.amazon.com/lambda/latest/api/API_GetFunction.html",),
)
def config_export_current(
    fn: m.LambdaFunction, p: ExportCurrentParams, ctx: EvalContext
) -> Outcome | None:
    snapshot = ctx.snapshot
    if not isinstance(snapshot, m.LambdaSnapshot) or snapshot.export is None:
        return None  # the daemon's export is off: nothing to judge
    state = fn.export
    if state is None:
        return errored("export state was not computed")
    latest = state.latest
    newest = f"snapshot {latest.snapshot_id}" if latest else "no snapshot"
    if state.pending_since is not None or latest is None:
        since = state.pending_since or ctx.now
        lag = ctx.now - since
        why = f"; last attempt: {state.problem}" if state.problem else ""
        if lag.total_seconds() > p.max_lag_minutes * 60:  # no timedelta: any int is valid
            return failed(
                f"current configuration not exported for {_minutes(lag)} "
                f"(allowed {p.max_lag_minutes} min); newest: {newest}{why}"
            )
        return passed(f"export pending for {_minutes(lag)}; newest: {newest}{why}")
    lacks = [
        part
        for part in latest.missing
        if (part == "code" and p.require_code) or (part == "environment" and p.require_environment)
    ]
    if lacks:
        return failed(f"{newest} is current but lacks {' and '.join(lacks)}")
    return passed(f"{newest} (captured {latest.captured_at:%Y-%m-%d %H:%M} UTC) is current")


@target_measure(SERVICE)
def export_timestamps(snapshot: Snapshot, policy: Policy, now: dt.datetime) -> Iterator[Sample]:
    """posture_backup_last_timestamp_seconds / posture_backup_missing with kind="export"."""
    if not isinstance(snapshot, m.LambdaSnapshot) or snapshot.export is None:
        return
    for fn in snapshot.functions:
        if ASPECT_EXPORT in fn.errors or fn.export is None:
            continue  # unknown: no series rather than a wrong one
        latest = fn.export.latest
        labels = {"resource": fn.arn, "kind": KIND}
        if latest is not None:
            yield sample(n.BACKUP_LAST_TIMESTAMP.name, latest.captured_at.timestamp(), **labels)
        yield sample(n.BACKUP_MISSING.name, 0 if latest is not None else 1, **labels)
