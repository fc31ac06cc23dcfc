"""The control catalogue: each control is data (metadata, parameters) plus one pure function.

A control module declares its controls with `@control(...)`. Registration validates the metadata,
so a control with no remediation text or a parameter without a default fails at import, in tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from daemon.model import Severity, Snapshot, Status, Target

CONTROL_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")


class Params(BaseModel):
    """Base for a control's parameters: every field has a default, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    pass


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    evidence: str


def passed(evidence: str) -> Outcome:
    return Outcome(Status.PASS, evidence)


def failed(evidence: str) -> Outcome:
    return Outcome(Status.FAIL, evidence)


def errored(evidence: str) -> Outcome:
    return Outcome(Status.ERROR, evidence)


@dataclass(frozen=True, slots=True)
class EvalContext:
    """Everything a control may know besides the resource and its parameters. No I/O, no clock."""

    now: datetime
    target: Target
    snapshot: Snapshot
    reference: Mapping[str, Any] = field(default_factory=dict)  # reference data, e.g. runtimes


R = TypeVar("R")
P = TypeVar("P", bound=Params)

Evaluate = Callable[[R, P, EvalContext], Outcome | None]


@dataclass(frozen=True, slots=True)
class Control(Generic[R, P]):
    id: str
    service: str
    resource_type: str
    title: str
    severity: Severity
    rationale: str
    remediation: str
    params_model: type[P]
    evaluate: Evaluate[R, P]
    requires: tuple[str, ...] = ()
    security_hub: str | None = None
    aws_config_rule: str | None = None
    references: tuple[str, ...] = ()
    default_enabled: bool = True

    def default_params(self) -> P:
        return self.params_model()


AnyControl = Control[Any, Any]

_REGISTRY: dict[str, AnyControl] = {}


class ControlDefinitionError(ValueError):
    pass


def _check(ctrl: AnyControl) -> None:
    if not CONTROL_ID.match(ctrl.id):
        raise ControlDefinitionError(f"{ctrl.id}: id must be kebab-case with a service prefix")
    if not ctrl.id.startswith(ctrl.service + "-"):
        raise ControlDefinitionError(f"{ctrl.id}: id must start with its service {ctrl.service!r}")
    for name in ("title", "rationale", "remediation"):
        if not getattr(ctrl, name).strip():
            raise ControlDefinitionError(f"{ctrl.id}: {name} is empty")
    if ctrl.id in _REGISTRY and _REGISTRY[ctrl.id].evaluate is not ctrl.evaluate:
        raise ControlDefinitionError(f"{ctrl.id}: registered twice")
    try:
        ctrl.params_model()
    except Exception as exc:
        raise ControlDefinitionError(f"{ctrl.id}: every parameter needs a default ({exc})") from exc
    if ctrl.params_model.model_config.get("extra") != "forbid":
        raise ControlDefinitionError(f"{ctrl.id}: parameters must forbid unknown keys")


def control(
    *,
    id: str,
    service: str,
    resource_type: str,
    title: str,
    severity: Severity,
    rationale: str,
    remediation: str,
    params: type[P],
    requires: tuple[str, ...] = (),
    security_hub: str | None = None,
    aws_config_rule: str | None = None,
    references: tuple[str, ...] = (),
    default_enabled: bool = True,
) -> Callable[[Evaluate[R, P]], Evaluate[R, P]]:
    """Declare a control. The decorated function is pure: (resource, params, ctx) -> Outcome."""

    def register(fn: Evaluate[R, P]) -> Evaluate[R, P]:
        ctrl: Control[R, P] = Control(
            id=id,
            service=service,
            resource_type=resource_type,
            title=title,
            severity=severity,
            rationale=" ".join(rationale.split()),
            remediation=" ".join(remediation.split()),
            params_model=params,
            evaluate=fn,
            requires=requires,
            security_hub=security_hub,
            aws_config_rule=aws_config_rule,
            references=references,
            default_enabled=default_enabled,
        )
        _check(ctrl)
        _REGISTRY[id] = ctrl
        return fn

    return register


def _load_catalogue() -> None:
    # Importing the service modules registers their controls.
    from daemon.controls import (  # noqa: F401
        awslambda,
        backup,
        concurrency,
        ecr,
        ecs,
        export,
        rds,
    )


def all_controls() -> Mapping[str, AnyControl]:
    _load_catalogue()
    return dict(sorted(_REGISTRY.items()))


def get_control(control_id: str) -> AnyControl:
    return all_controls()[control_id]


def controls_for(service: str) -> list[AnyControl]:
    return [c for c in all_controls().values() if c.service == service]


def services() -> list[str]:
    return sorted({c.service for c in all_controls().values()})
