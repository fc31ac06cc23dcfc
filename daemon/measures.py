"""Measures: numbers about a target that are not pass/fail findings.

Concurrency limits, backup timestamps and similar facts are computed here, purely, from the same
snapshot the controls read (no I/O, no clock: `now` is passed). A measure returns `Sample`s for
metrics declared in daemon/metrics/names.py with source "state"; the reconciler stores them with
the target's result, so they are swapped atomically, kept when a sweep fails, and vanish with the
target or the resource.

- Target measures (`@target_measure(service)`): the target's labels (aws_account_id, aws_region,
  aws_service) are added by the collector; a sample carries only the metric's other labels.
- Policy measures (`@policy_measure`): numbers derived from the policy alone (e.g. a threshold),
  rendered once per scrape without target labels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from daemon.model import Snapshot
from daemon.policy.compiled import Policy


@dataclass(frozen=True, slots=True)
class Sample:
    metric: str  # a MetricDef name from daemon.metrics.names
    labels: Mapping[str, str]  # every label of the metric except the target labels
    value: float


def sample(metric: str, value: float, /, **labels: str) -> Sample:
    return Sample(metric, MappingProxyType(dict(labels)), float(value))


TargetMeasure = Callable[[Snapshot, Policy, dt.datetime], Iterable[Sample]]
PolicyMeasure = Callable[[Policy], Iterable[Sample]]

_TARGET: dict[str, list[TargetMeasure]] = {}
_POLICY: list[PolicyMeasure] = []


def target_measure(service: str) -> Callable[[TargetMeasure], TargetMeasure]:
    def register(fn: TargetMeasure) -> TargetMeasure:
        if fn not in _TARGET.setdefault(service, []):
            _TARGET[service].append(fn)
        return fn

    return register


def policy_measure(fn: PolicyMeasure) -> PolicyMeasure:
    if fn not in _POLICY:
        _POLICY.append(fn)
    return fn


def _load() -> None:
    # Importing the modules that declare measures registers them (like the control catalogue).
    from daemon.controls import registry

    registry.all_controls()


def measure_target(snapshot: Snapshot, policy: Policy, now: dt.datetime) -> tuple[Sample, ...]:
    _load()
    out: list[Sample] = []
    for fn in _TARGET.get(snapshot.target.service, []):
        out.extend(fn(snapshot, policy, now))
    return tuple(out)


def measure_policy(policy: Policy) -> tuple[Sample, ...]:
    _load()
    out: list[Sample] = []
    for fn in _POLICY:
        out.extend(fn(policy))
    return tuple(out)
