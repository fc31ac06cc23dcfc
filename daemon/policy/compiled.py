"""A validated policy, compiled for fast lookups during evaluation.

`compile_policy` checks what the pydantic models cannot: that control ids exist and that each
control's parameters (and every override's) are valid for that control. It reports problems with
their path in the document, so the loader can point at the YAML line.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from daemon.controls.reference import build_reference
from daemon.controls.registry import AnyControl, Params, all_controls
from daemon.model import Resource, Severity
from daemon.policy.models import ControlSettings, Exemption, OverrideMatch, PolicyDocument

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc
    message: str

    @property
    def path(self) -> str:
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out or "(document)"


class PolicyCompileError(ValueError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class EffectiveControl:
    control: AnyControl
    enabled: bool
    severity: Severity
    params: Params


def _tags_match(wanted: Mapping[str, str], tags: Mapping[str, str]) -> bool:
    return all(k in tags and fnmatch.fnmatchcase(tags[k], v) for k, v in wanted.items())


def _override_matches(
    match: OverrideMatch, account_id: str, region: str, tags: Mapping[str, str]
) -> bool:
    if match.accounts and account_id not in match.accounts:
        return False
    if match.regions and region not in match.regions:
        return False
    return _tags_match(match.tags, tags)


@dataclass(frozen=True, slots=True)
class CompiledControl:
    base: EffectiveControl
    overrides: tuple[tuple[OverrideMatch, EffectiveControl], ...] = ()

    @property
    def control(self) -> AnyControl:
        return self.base.control

    @property
    def may_run(self) -> bool:
        return self.base.enabled or any(eff.enabled for _, eff in self.overrides)

    def resolve(self, account_id: str, region: str, tags: Mapping[str, str]) -> EffectiveControl:
        """The settings for one resource: the first matching override wins."""
        for match, eff in self.overrides:
            if _override_matches(match, account_id, region, tags):
                return eff
        return self.base


@dataclass(frozen=True, slots=True)
class ExemptionMatch:
    exemption: Exemption
    expired: bool

    @property
    def label(self) -> str:
        return self.exemption.id or self.exemption.reason


@dataclass(frozen=True, slots=True)
class Policy:
    document: PolicyDocument
    controls: Mapping[str, CompiledControl]
    reference: Mapping[str, Any]
    source: str = "<memory>"
    digest: str = ""
    exemptions: tuple[Exemption, ...] = field(default=())

    def controls_for(self, service: str) -> list[CompiledControl]:
        return [c for c in self.controls.values() if c.control.service == service and c.may_run]

    def exemption_for(
        self, control_id: str, resource: Resource, account_id: str, now: dt.datetime
    ) -> ExemptionMatch | None:
        """The first active exemption that covers the finding; else the first expired one."""
        expired: ExemptionMatch | None = None
        today = now.date()
        for ex in self.exemptions:
            if "*" not in ex.controls and control_id not in ex.controls:
                continue
            if ex.accounts and account_id not in ex.accounts:
                continue
            if ex.resources and not any(fnmatch.fnmatchcase(resource.arn, g) for g in ex.resources):
                continue
            if ex.tags and not _tags_match(ex.tags, resource.tags):
                continue
            if ex.expires >= today:
                return ExemptionMatch(ex, expired=False)
            if expired is None:
                expired = ExemptionMatch(ex, expired=True)
        return expired


def _validate_params(
    ctrl: AnyControl, raw: Mapping[str, Any], loc: Loc, problems: list[Problem]
) -> Params | None:
    try:
        params: Params = ctrl.params_model.model_validate(dict(raw))
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(
                Problem((*loc, *err["loc"]), str(err["msg"]).removeprefix("Value error, "))
            )
        return None
    return params


def _compile_control(
    ctrl: AnyControl, settings: ControlSettings, problems: list[Problem]
) -> CompiledControl | None:
    loc: Loc = ("controls", ctrl.id)
    params = _validate_params(ctrl, settings.params, (*loc, "params"), problems)
    if params is None:
        return None
    base = EffectiveControl(ctrl, settings.enabled, settings.severity or ctrl.severity, params)
    overrides: list[tuple[OverrideMatch, EffectiveControl]] = []
    for i, ov in enumerate(settings.overrides):
        merged = {**settings.params, **ov.params}
        ov_params = _validate_params(ctrl, merged, (*loc, "overrides", i, "params"), problems)
        if ov_params is None:
            continue
        overrides.append(
            (
                ov.match,
                EffectiveControl(
                    ctrl,
                    base.enabled if ov.enabled is None else ov.enabled,
                    ov.severity or base.severity,
                    ov_params,
                ),
            )
        )
    return CompiledControl(base, tuple(overrides))


def compile_policy(doc: PolicyDocument, source: str = "<memory>", digest: str = "") -> Policy:
    catalogue = all_controls()
    problems: list[Problem] = []
    for control_id in doc.controls:
        if control_id not in catalogue:
            problems.append(Problem(("controls", control_id), "unknown control id"))
    for i, ex in enumerate(doc.exemptions):
        for j, control_id in enumerate(ex.controls):
            if control_id != "*" and control_id not in catalogue:
                problems.append(Problem(("exemptions", i, "controls", j), "unknown control id"))
    compiled: dict[str, CompiledControl] = {}
    for control_id, ctrl in catalogue.items():
        default = ControlSettings(enabled=ctrl.default_enabled)
        settings = doc.controls.get(control_id, default)
        cc = _compile_control(ctrl, settings, problems)
        if cc is not None:
            compiled[control_id] = cc
    if problems:
        raise PolicyCompileError(problems)
    enabled_services = set(doc.scope.services)
    return Policy(
        document=doc,
        controls={k: v for k, v in compiled.items() if v.control.service in enabled_services},
        reference=build_reference(doc.reference.model_dump()),
        source=source,
        digest=digest,
        exemptions=tuple(doc.exemptions),
    )
