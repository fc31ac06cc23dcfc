"""Evaluation: snapshot + policy + now -> findings. Pure: no I/O, no clock, no logging.

For every enabled control of the target's service and every resource of its type:
- a resource whose data for a required aspect could not be read gets an `error` finding;
- otherwise the control's function decides pass/fail (or None: not applicable);
- an exception inside a control becomes an `error` finding and an entry in `problems`;
- exemptions apply to failures only: an active one marks the finding exempted, an expired one
  is recorded on the finding but does not apply.

`evaluate_steps` does the same one control at a time, so that a caller on an event loop can let
other work run in between (a Lambda target: ~30 controls x 100 functions, tens of ms in one go);
`evaluate` runs it through.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from dataclasses import dataclass

from daemon.controls.registry import EvalContext, Outcome
from daemon.model import Finding, Resource, Severity, Snapshot, Status
from daemon.policy.compiled import CompiledControl, Policy


@dataclass(frozen=True, slots=True)
class Evaluation:
    findings: tuple[Finding, ...]
    # every control that ran on the target, with the severities it reported under
    controls: tuple[tuple[str, Severity], ...]
    problems: tuple[str, ...] = ()  # controls that raised: a bug to log, not a verdict


def _evaluate_one(
    cc: CompiledControl, resource: Resource, ctx: EvalContext, problems: list[str]
) -> tuple[Severity, Outcome] | None:
    target = ctx.target
    eff = cc.resolve(target.account_id, target.region, resource.tags)
    if not eff.enabled:
        return None
    ctrl = cc.control
    missing = [a for a in ctrl.requires if a in resource.errors]
    if missing:
        detail = ", ".join(f"{a} ({resource.errors[a]})" for a in missing)
        return eff.severity, Outcome(Status.ERROR, f"could not read {detail}")
    try:
        outcome = ctrl.evaluate(resource, eff.params, ctx)
    except Exception as exc:
        problems.append(f"{ctrl.id} on {resource.arn}: {type(exc).__name__}: {exc}")
        return eff.severity, Outcome(Status.ERROR, f"evaluation failed ({type(exc).__name__})")
    if outcome is None:
        return None
    return eff.severity, outcome


Steps = Generator[None, None, Evaluation]


def evaluate(snapshot: Snapshot, policy: Policy, now: dt.datetime) -> Evaluation:
    steps = evaluate_steps(snapshot, policy, now)
    while (evaluation := step(steps)) is None:
        pass
    return evaluation


def step(steps: Steps) -> Evaluation | None:
    """Run `evaluate_steps` to its next pause: None, or the Evaluation once it is done."""
    try:
        next(steps)
    except StopIteration as done:
        evaluation: Evaluation = done.value
        return evaluation
    return None


def evaluate_steps(snapshot: Snapshot, policy: Policy, now: dt.datetime) -> Steps:
    """`evaluate`, pausing (a bare `yield`) after each control; returns the Evaluation."""
    target = snapshot.target
    ctx = EvalContext(now=now, target=target, snapshot=snapshot, reference=policy.reference)
    findings: list[Finding] = []
    problems: list[str] = []
    ran: dict[tuple[str, Severity], None] = {}
    for cc in policy.controls_for(target.service):
        yield
        ctrl = cc.control
        if cc.base.enabled:
            ran[(ctrl.id, cc.base.severity)] = None
        for resource in snapshot.resources(ctrl.resource_type):
            result = _evaluate_one(cc, resource, ctx, problems)
            if result is None:
                continue
            severity, outcome = result
            ran[(ctrl.id, severity)] = None
            match = (
                policy.exemption_for(ctrl.id, resource, target.account_id, now)
                if outcome.status is Status.FAIL
                else None
            )
            active = match is not None and not match.expired
            findings.append(
                Finding(
                    resource=resource.arn,
                    resource_type=resource.resource_type,
                    account_id=target.account_id,
                    region=target.region,
                    service=target.service,
                    control=ctrl.id,
                    severity=severity,
                    status=outcome.status,
                    evidence=outcome.evidence,
                    exempted=active,
                    exemption_reason=match.label if match is not None else None,
                    exemption_expired=match is not None and match.expired,
                )
            )
    return Evaluation(tuple(findings), tuple(ran), tuple(problems))
