"""The latest result and health of every target, swapped atomically.

Writers (the reconciler, on the event loop) replace whole immutable objects; readers (the metrics
collector, in the scrape thread) take a `view()` — a consistent set of references — and never see
a half-written state. A target's result is replaced by its next successful sweep (so deleted
resources disappear), kept when a sweep fails (so nothing flips to compliant), and dropped when the
target is no longer assigned.

The store keeps what the metrics need, and little more: every aggregate of a result (computed
from all its findings in `TargetResult.build`, passes included) and the findings that are not a
plain pass (FAIL, exempted or not, and ERROR: what someone reading a metric asks about). PASS
findings are dropped when a result is published (`publish` stores `TargetResult.stored()`):
nothing reads them from the store, and in a mostly compliant estate they are most of a result's
memory (the demo estate's Lambda results: 6.8 KB per function with them, 2.1 KB without), held
for as long as the process lives. Whoever needs a sweep's passes, as `posture-daemon check` does,
reads the result the reconciler returns (`Outcome.result`), never the store.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from daemon.measures import Sample
from daemon.model import Finding, Severity, Status, Target

_T = TypeVar("_T")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class TargetResult:
    """One successful sweep of a target, with its metric aggregates computed once."""

    target: Target
    evaluated_at: dt.datetime
    findings: tuple[Finding, ...]
    violations: Mapping[tuple[str, Severity], int]
    evaluated: Mapping[str, int]
    errors: Mapping[str, int]
    exemptions: Mapping[tuple[str, str], int]
    resources: Mapping[str, int]
    # the FAIL findings without an active exemption, most severe first: the result's own Finding
    # objects, not copies of their control, severity and resource (one object fewer per
    # violation, ~66,000 at the benchmark's 6,000 functions, kept as long as the result)
    resource_violations: tuple[Finding, ...]
    samples: tuple[Sample, ...] = ()  # service-specific gauges (daemon/measures.py)

    @classmethod
    def build(
        cls,
        target: Target,
        evaluated_at: dt.datetime,
        findings: Iterable[Finding],
        controls: Iterable[tuple[str, Severity]],
        resources: Mapping[str, int],
        samples: Iterable[Sample] = (),
    ) -> TargetResult:
        findings = tuple(findings)
        violations: Counter[tuple[str, Severity]] = Counter(dict.fromkeys(controls, 0))
        evaluated: Counter[str] = Counter({control: 0 for control, _ in violations})
        errors: Counter[str] = Counter({control: 0 for control, _ in violations})
        exemptions: Counter[tuple[str, str]] = Counter()
        per_resource: list[Finding] = []
        for f in findings:
            if f.status is Status.ERROR:
                errors[f.control] += 1
                continue
            evaluated[f.control] += 1
            if f.status is not Status.FAIL:
                continue
            violations.setdefault((f.control, f.severity), 0)
            if f.exempted:
                exemptions[(f.control, "active")] += 1
                continue
            if f.exemption_expired:
                exemptions[(f.control, "expired")] += 1
            violations[(f.control, f.severity)] += 1
            per_resource.append(f)
        per_resource.sort(key=lambda v: (-v.severity.rank, v.control, v.resource))
        return cls(
            target=target,
            evaluated_at=evaluated_at,
            findings=findings,
            violations=MappingProxyType(dict(violations)),
            evaluated=MappingProxyType(dict(evaluated)),
            errors=MappingProxyType(dict(errors)),
            exemptions=MappingProxyType(dict(exemptions)),
            resources=MappingProxyType(dict(resources)),
            resource_violations=tuple(per_resource),
            samples=tuple(samples),
        )

    def stored(self) -> TargetResult:
        """This result as the store keeps it: the same aggregates, without the PASS findings
        (`self` when it has none). Aggregates are never recomputed from the kept findings."""
        if not any(f.status is Status.PASS for f in self.findings):
            return self
        return replace(
            self, findings=tuple(f for f in self.findings if f.status is not Status.PASS)
        )

    def reusing(self, previous: TargetResult) -> TargetResult:
        """This result, built from `previous`'s own objects wherever they are equal: the whole
        findings tuple, aggregate mapping or sample tuple when it is equal, else each equal
        finding and per-resource violation. A sweep that found nothing new then keeps no second
        copy of its target's findings -- not while the exposition cache still holds the
        previous result (until the next scrape), nor as fresh long-lived objects that the
        garbage collector's full passes would walk: the new ones die young. Values are the same
        either way; only object identity changes."""

        def merged(new: tuple[_T, ...], old: tuple[_T, ...]) -> tuple[_T, ...]:
            if new == old:
                return old
            known = {item: item for item in old}
            return tuple([known.get(item, item) for item in new])

        def same(new: _V, old: _V) -> _V:
            return old if new == old else new

        if self is previous:
            return self
        return TargetResult(
            target=previous.target if self.target == previous.target else self.target,
            evaluated_at=self.evaluated_at,
            findings=merged(self.findings, previous.findings),
            violations=same(self.violations, previous.violations),
            evaluated=same(self.evaluated, previous.evaluated),
            errors=same(self.errors, previous.errors),
            exemptions=same(self.exemptions, previous.exemptions),
            resources=same(self.resources, previous.resources),
            resource_violations=merged(self.resource_violations, previous.resource_violations),
            samples=same(self.samples, previous.samples),
        )


@dataclass(frozen=True, slots=True)
class TargetHealth:
    up: bool = False
    attempted: bool = False  # finished (or failed) at least one reconcile
    last_success: float = 0.0  # unix time
    last_attempt: float = 0.0
    consecutive_failures: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class StoreView:
    results: Mapping[Target, TargetResult]
    health: Mapping[Target, TargetHealth]
    account_names: Mapping[str, str]
    account_up: Mapping[str, bool]
    targets: frozenset[Target] = field(default_factory=frozenset)
    policy_samples: tuple[Sample, ...] = ()


class StateStore:
    def __init__(self) -> None:
        self._view = StoreView(
            results=MappingProxyType({}),
            health=MappingProxyType({}),
            account_names=MappingProxyType({}),
            account_up=MappingProxyType({}),
        )

    def view(self) -> StoreView:
        return self._view

    def _swap(self, **changes: object) -> None:
        self._view = replace(self._view, **changes)  # type: ignore[arg-type]

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Assign the targets; results and health of unassigned ones are dropped."""
        wanted = frozenset(targets)
        v = self._view
        self._swap(
            targets=wanted,
            results=MappingProxyType({t: r for t, r in v.results.items() if t in wanted}),
            health=MappingProxyType({t: v.health.get(t, TargetHealth()) for t in sorted(wanted)}),
        )

    def set_policy_samples(self, samples: Iterable[Sample]) -> None:
        self._swap(policy_samples=tuple(samples))

    def set_accounts(self, names: Mapping[str, str], up: Mapping[str, bool]) -> None:
        self._swap(
            account_names=MappingProxyType(dict(names)), account_up=MappingProxyType(dict(up))
        )

    def publish(self, result: TargetResult, at: float) -> None:
        """A successful reconcile: the target's result (without its passes, see `stored`; with
        the previous result's objects where equal, see `reusing`)."""
        v = self._view
        if result.target not in v.targets:
            return  # unassigned while it was being reconciled
        health = TargetHealth(up=True, attempted=True, last_success=at, last_attempt=at)
        stored = result.stored()
        previous = v.results.get(result.target)
        if previous is not None:
            stored = stored.reusing(previous)
        self._swap(
            results=MappingProxyType({**v.results, result.target: stored}),
            health=MappingProxyType({**v.health, result.target: health}),
        )

    def record_failure(self, target: Target, error: str, at: float) -> TargetHealth:
        """A failed reconcile: the last result stays, the target shows down."""
        v = self._view
        old = v.health.get(target, TargetHealth())
        health = replace(
            old,
            up=False,
            attempted=True,
            last_attempt=at,
            consecutive_failures=old.consecutive_failures + 1,
            last_error=error,
        )
        if target in v.targets:
            self._swap(health=MappingProxyType({**v.health, target: health}))
        return health

    def pending_first_sweep(self) -> int:
        """Assigned targets that have not yet finished (or failed) a first reconcile."""
        v = self._view
        return sum(1 for t in v.targets if not v.health.get(t, TargetHealth()).attempted)
