"""The custom collector that renders compliance state at scrape time.

`collect()` only reads the state store's current view (memory, no awaits, no AWS); the view is
immutable, so no lock is needed. It builds every state family from the whole store at each call:
that is what `registry.collect()` users get (tests, the CLI, bench/scale.py). /metrics serves the
same families from text cached per target result instead (daemon/metrics/exposition.py, which
follows `state_families()` and this module's series, order and cap); the unit tests render both
ways and require identical text, so a change here needs the same change there.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.config import MetricsSettings
from daemon.controls.registry import AnyControl
from daemon.metrics import names as n
from daemon.model import Severity
from daemon.state import StateStore, StoreView

# State metrics this module renders itself, in the order collect() yields them; the families of
# the measures follow, sorted by name (see `state_families`).
BUILT_IN_ORDER = (
    n.VIOLATIONS,
    n.EVALUATED,
    n.EVALUATION_ERRORS,
    n.EXEMPTIONS,
    n.RESOURCES,
    n.RESOURCE_VIOLATION,
    n.RESOURCE_SERIES_DROPPED,
    n.TARGET_UP,
    n.TARGET_LAST_SUCCESS,
    n.TARGET_LAST_ATTEMPT,
    n.TARGET_FAILURES,
    n.ACCOUNT_UP,
    n.ACCOUNT_INFO,
    n.CONTROL_INFO,
)
_BUILT_IN = frozenset(BUILT_IN_ORDER)


def measure_defs() -> tuple[n.MetricDef, ...]:
    """The state metrics of daemon/measures.py (every one a gauge), sorted by name."""
    return tuple(
        sorted(
            (d for d in n.ALL if d.source == "state" and d not in _BUILT_IN),
            key=lambda d: d.name,
        )
    )


def state_families() -> tuple[n.MetricDef, ...]:
    """Every state family in exposition order (daemon/metrics/exposition.py follows it too)."""
    return BUILT_IN_ORDER + measure_defs()


def _gauge(d: n.MetricDef) -> GaugeMetricFamily:
    return GaugeMetricFamily(d.name, d.help, labels=list(d.labels))


class StateCollector(Collector):
    def __init__(
        self, store: StateStore, settings: MetricsSettings, controls: dict[str, AnyControl]
    ) -> None:
        self.store = store
        self.settings = settings
        self.controls = controls

    def describe(self) -> Iterator[Metric]:
        # Families without samples: lets the registry detect name clashes at registration.
        for d in n.ALL:
            if d.source != "state":
                continue
            if d.type == "info":
                yield InfoMetricFamily(d.name, d.help, labels=list(d.labels))
            else:
                yield _gauge(d)

    def collect(self) -> Iterator[Metric]:
        view = self.store.view()
        violations = _gauge(n.VIOLATIONS)
        evaluated = _gauge(n.EVALUATED)
        errors = _gauge(n.EVALUATION_ERRORS)
        exemptions = _gauge(n.EXEMPTIONS)
        resources = _gauge(n.RESOURCES)
        enabled_controls: set[str] = set()
        for target, result in sorted(view.results.items()):
            labels = [target.account_id, target.region, target.service]
            for (control, severity), count in sorted(result.violations.items()):
                violations.add_metric([*labels, control, severity.value], count)
                enabled_controls.add(control)
            for control, count in sorted(result.evaluated.items()):
                evaluated.add_metric([*labels, control], count)
            for control, count in sorted(result.errors.items()):
                errors.add_metric([*labels, control], count)
            for (control, state), count in sorted(result.exemptions.items()):
                exemptions.add_metric([*labels, control, state], count)
            for resource_type, count in sorted(result.resources.items()):
                resources.add_metric([*labels, resource_type], count)
        yield from (violations, evaluated, errors, exemptions, resources)
        yield from self._resource_series(view)
        yield from self._health(view)
        up = _gauge(n.ACCOUNT_UP)
        for account, ok in sorted(view.account_up.items()):
            up.add_metric([account], 1.0 if ok else 0.0)
        yield up
        info = InfoMetricFamily(n.ACCOUNT_INFO.name, n.ACCOUNT_INFO.help, labels=["aws_account_id"])
        for account, name in sorted(view.account_names.items()):
            info.add_metric([account], {"account_name": name})
        yield info
        yield self._control_info(enabled_controls)
        yield from self._measures(view)

    def _measures(self, view: StoreView) -> Iterator[Metric]:
        """Every other state metric, from the samples of daemon/measures.py."""
        families: dict[str, GaugeMetricFamily] = {}
        defs = {d.name: d for d in measure_defs()}

        def family(metric: str) -> tuple[GaugeMetricFamily, n.MetricDef] | None:
            d = defs.get(metric)
            if d is None:
                return None
            if metric not in families:
                families[metric] = _gauge(d)
            return families[metric], d

        for s in view.policy_samples:
            found = family(s.metric)
            if found is not None:
                fam, d = found
                fam.add_metric([s.labels.get(label, "") for label in d.labels], s.value)
        for target, result in sorted(view.results.items()):
            ids = {
                n.ACCOUNT: target.account_id,
                n.REGION: target.region,
                n.SERVICE: target.service,
            }
            for s in result.samples:
                found = family(s.metric)
                if found is not None:
                    fam, d = found
                    values = [
                        ids[label] if label in ids else s.labels.get(label, "")
                        for label in d.labels
                    ]
                    fam.add_metric(values, s.value)
        # declared families are always present (empty when nothing was measured)
        for metric in sorted(defs):
            family(metric)
        yield from (families[k] for k in sorted(families))

    def _resource_series(self, view: StoreView) -> Iterator[Metric]:
        family = _gauge(n.RESOURCE_VIOLATION)
        dropped = _gauge(n.RESOURCE_SERIES_DROPPED)
        limit = self.settings.resource_series_limit if self.settings.resource_series else 0
        emitted = skipped = 0
        # Most severe first across all targets, so the cap drops low-severity series first.
        for severity in sorted(Severity, key=lambda s: -s.rank):
            for target, result in sorted(view.results.items()):
                labels = [target.account_id, target.region, target.service]
                for v in result.resource_violations:
                    if v.severity is not severity:
                        continue
                    if emitted < limit:
                        family.add_metric([*labels, v.control, v.severity.value, v.resource], 1)
                        emitted += 1
                    elif self.settings.resource_series:
                        skipped += 1  # dropped by the cap (not by turning the series off)
        dropped.add_metric([], skipped)
        yield family
        yield dropped

    def _health(self, view: StoreView) -> Iterator[Metric]:
        up = _gauge(n.TARGET_UP)
        last_success = _gauge(n.TARGET_LAST_SUCCESS)
        last_attempt = _gauge(n.TARGET_LAST_ATTEMPT)
        failures = _gauge(n.TARGET_FAILURES)
        for target, h in sorted(view.health.items()):
            labels = [target.account_id, target.region, target.service]
            if h.attempted:
                up.add_metric(labels, 1.0 if h.up else 0.0)
                last_attempt.add_metric(labels, h.last_attempt)
            last_success.add_metric(labels, h.last_success)
            failures.add_metric(labels, h.consecutive_failures)
        yield from (up, last_success, last_attempt, failures)

    def _control_info(self, enabled: set[str]) -> Metric:
        d = n.CONTROL_INFO
        info = InfoMetricFamily(d.name, d.help, labels=["control"])
        for control_id in sorted(enabled):
            c = self.controls.get(control_id)
            if c is None:
                continue
            info.add_metric(
                [control_id],
                {
                    "aws_service": c.service,
                    "severity": c.severity.value,
                    "resource_type": c.resource_type,
                    "title": c.title,
                    "security_hub": c.security_hub or "",
                },
            )
        return info
