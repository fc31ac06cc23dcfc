"""The state store and the scrape-time collector, read back through the Prometheus text format.

Every scrape here renders the state both ways, through the collector and through the cached fast
path of /metrics (daemon/metrics/exposition.py), and requires the two texts to be identical.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterable
from types import MappingProxyType

import pytest
from prometheus_client import generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families

from daemon.config import MetricsSettings
from daemon.controls.registry import all_controls
from daemon.metrics import names as n
from daemon.metrics.collector import StateCollector
from daemon.metrics.exposition import Exposition, Registry
from daemon.model import Finding, Severity, Status, Target
from daemon.state import StateStore, StoreView, TargetHealth, TargetResult

from .test_exposition import ECR, ecr_result, exposition, lambda_result
from .test_exposition import SETTINGS as EXPOSITION_SETTINGS

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
PROD = Target("111111111111", "us-east-1", "lambda")
PROD_EU = Target("111111111111", "eu-west-1", "lambda")
DEV = Target("222222222222", "us-east-1", "lambda")

Labels = frozenset[tuple[str, str]]


def arn(target: Target, name: str) -> str:
    return f"arn:aws:lambda:{target.region}:{target.account_id}:function:{name}"


def finding(
    target: Target,
    name: str,
    control: str,
    status: Status = Status.FAIL,
    severity: Severity = Severity.HIGH,
    *,
    exempted: bool = False,
    expired: bool = False,
) -> Finding:
    return Finding(
        resource=arn(target, name),
        resource_type="lambda-function",
        account_id=target.account_id,
        region=target.region,
        service=target.service,
        control=control,
        severity=severity,
        status=status,
        evidence="evidence",
        exempted=exempted,
        exemption_reason="SEC-1" if exempted or expired else None,
        exemption_expired=expired,
    )


def result(
    target: Target,
    findings: Iterable[Finding],
    controls: Iterable[tuple[str, Severity]],
    resources: dict[str, int] | None = None,
) -> TargetResult:
    return TargetResult.build(target, NOW, findings, controls, resources or {"lambda-function": 3})


def make_store(*targets: Target) -> StateStore:
    store = StateStore()
    store.set_targets(targets)
    return store


def scrape(
    store: StateStore, settings: MetricsSettings | None = None
) -> dict[str, dict[Labels, float]]:
    registry = Registry()
    state = StateCollector(store, settings or MetricsSettings(), dict(all_controls()))
    registry.register(state)
    text = generate_latest(registry).decode()
    fast, _ = Exposition(registry, state).render("")
    assert fast.decode() == text
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        series = out.setdefault(family.name, {})
        for sample in family.samples:
            series[frozenset(sample.labels.items())] = sample.value
    return out


def labels(target: Target | None = None, **extra: str) -> Labels:
    base = {}
    if target is not None:
        base = {
            "aws_account_id": target.account_id,
            "aws_region": target.region,
            "aws_service": target.service,
        }
    return frozenset({**base, **extra}.items())


XRAY = ("lambda-xray-active", Severity.LOW)
URL = ("lambda-url-auth", Severity.HIGH)
SECRETS = ("lambda-env-no-plaintext-secrets", Severity.CRITICAL)


# --- TargetResult.build --------------------------------------------------------------------------


def url_findings() -> list[Finding]:
    """One lambda-url-auth finding of each kind: failed, exempted, expired exemption, pass, error."""
    return [
        finding(PROD, "a", "lambda-url-auth"),
        finding(PROD, "b", "lambda-url-auth", exempted=True),
        finding(PROD, "c", "lambda-url-auth", expired=True),
        finding(PROD, "d", "lambda-url-auth", Status.PASS),
        finding(PROD, "e", "lambda-url-auth", Status.ERROR),
    ]


def test_build_aggregates_findings() -> None:
    findings = url_findings()
    r = result(PROD, findings, [URL, XRAY])
    assert r.violations == {URL: 2, XRAY: 0}
    assert r.evaluated == {"lambda-url-auth": 4, "lambda-xray-active": 0}
    assert r.errors == {"lambda-url-auth": 1, "lambda-xray-active": 0}
    assert r.exemptions == {("lambda-url-auth", "active"): 1, ("lambda-url-auth", "expired"): 1}
    assert [v.resource for v in r.resource_violations] == [arn(PROD, "a"), arn(PROD, "c")]
    assert r.findings == tuple(findings)


def test_resource_violations_are_the_results_own_failing_findings() -> None:
    """No second object per violation: the per-resource series are the violating findings, and
    the stored result (passes dropped) still holds each of them once."""
    findings = url_findings()
    r = result(PROD, findings, [URL, XRAY])
    assert [v.resource for v in r.resource_violations] == [arn(PROD, "a"), arn(PROD, "c")]
    assert all(any(v is f for f in findings) for v in r.resource_violations)
    kept = r.stored()
    assert kept.resource_violations is r.resource_violations
    assert all(any(v is f for f in kept.findings) for v in kept.resource_violations)


def test_build_orders_resource_violations_most_severe_first() -> None:
    findings = [
        finding(PROD, "z", "lambda-xray-active", severity=Severity.LOW),
        finding(PROD, "y", "lambda-env-no-plaintext-secrets", severity=Severity.CRITICAL),
        finding(PROD, "x", "lambda-url-auth", severity=Severity.HIGH),
        finding(PROD, "w", "lambda-url-auth", severity=Severity.HIGH),
    ]
    r = result(PROD, findings, [XRAY, SECRETS, URL])
    assert [(v.severity, v.resource.rsplit(":", 1)[1]) for v in r.resource_violations] == [
        (Severity.CRITICAL, "y"),
        (Severity.HIGH, "w"),
        (Severity.HIGH, "x"),
        (Severity.LOW, "z"),
    ]


def test_build_adds_severities_seen_only_in_findings() -> None:
    r = result(PROD, [finding(PROD, "a", "lambda-xray-active", severity=Severity.MEDIUM)], [XRAY])
    assert r.violations == {XRAY: 0, ("lambda-xray-active", Severity.MEDIUM): 1}


# --- violations, evaluated, errors ---------------------------------------------------------------


def test_violations_exclude_exempted_findings() -> None:
    store = make_store(PROD)
    findings = [
        finding(PROD, "a", "lambda-url-auth"),
        finding(PROD, "b", "lambda-url-auth", exempted=True),
        finding(PROD, "c", "lambda-url-auth", expired=True),
    ]
    store.publish(result(PROD, findings, [URL]), at=1000.0)
    m = scrape(store)
    key = labels(PROD, control="lambda-url-auth", severity="high")
    assert m["posture_violations"] == {key: 2.0}
    assert m["posture_evaluated_resources"] == {labels(PROD, control="lambda-url-auth"): 3.0}
    assert m["posture_exemptions"] == {
        labels(PROD, control="lambda-url-auth", state="active"): 1.0,
        labels(PROD, control="lambda-url-auth", state="expired"): 1.0,
    }


def test_evaluated_controls_without_failures_have_zero_series() -> None:
    store = make_store(PROD)
    findings = [finding(PROD, "a", "lambda-xray-active", Status.PASS, Severity.LOW)]
    store.publish(result(PROD, findings, [XRAY, URL]), at=1000.0)
    m = scrape(store)
    assert m["posture_violations"] == {
        labels(PROD, control="lambda-xray-active", severity="low"): 0.0,
        labels(PROD, control="lambda-url-auth", severity="high"): 0.0,
    }
    assert m["posture_evaluated_resources"][labels(PROD, control="lambda-xray-active")] == 1.0
    assert m["posture_evaluated_resources"][labels(PROD, control="lambda-url-auth")] == 0.0
    assert m["posture_exemptions"] == {}
    assert m["posture_resource_violation"] == {}


def test_errors_are_counted_apart_from_evaluated() -> None:
    store = make_store(PROD)
    findings = [
        finding(PROD, "a", "lambda-url-auth", Status.ERROR),
        finding(PROD, "b", "lambda-url-auth", Status.ERROR),
        finding(PROD, "c", "lambda-url-auth", Status.PASS),
    ]
    store.publish(result(PROD, findings, [URL]), at=1000.0)
    m = scrape(store)
    assert m["posture_control_evaluation_errors"] == {labels(PROD, control="lambda-url-auth"): 2.0}
    assert m["posture_evaluated_resources"] == {labels(PROD, control="lambda-url-auth"): 1.0}
    assert m["posture_violations"] == {
        labels(PROD, control="lambda-url-auth", severity="high"): 0.0
    }


def test_resources_and_control_info() -> None:
    store = make_store(PROD)
    findings = [finding(PROD, "a", "lambda-url-auth")]
    counts = {"lambda-function": 4, "lambda-layer-version": 2}
    store.publish(result(PROD, findings, [URL, XRAY], counts), at=1000.0)
    m = scrape(store)
    assert m["posture_resources"] == {
        labels(PROD, resource_type="lambda-function"): 4.0,
        labels(PROD, resource_type="lambda-layer-version"): 2.0,
    }
    info = m["posture_control_info"]
    assert {dict(k)["control"] for k in info} == {"lambda-url-auth", "lambda-xray-active"}
    url = next(dict(k) for k in info if dict(k)["control"] == "lambda-url-auth")
    assert url == {
        "control": "lambda-url-auth",
        "aws_service": "lambda",
        "severity": "high",
        "resource_type": "lambda-function",
        "title": "Function URL requires IAM authentication",
        "security_hub": "",
    }


# --- per-resource series and the cap -------------------------------------------------------------


def _three_severities(store: StateStore) -> None:
    store.publish(
        result(
            PROD,
            [
                finding(PROD, "low-1", "lambda-xray-active", severity=Severity.LOW),
                finding(
                    PROD, "crit-1", "lambda-env-no-plaintext-secrets", severity=Severity.CRITICAL
                ),
                finding(PROD, "high-1", "lambda-url-auth", severity=Severity.HIGH),
            ],
            [XRAY, SECRETS, URL],
        ),
        at=1000.0,
    )
    store.publish(
        result(
            DEV,
            [
                finding(DEV, "low-2", "lambda-xray-active", severity=Severity.LOW),
                finding(DEV, "high-2", "lambda-url-auth", severity=Severity.HIGH),
            ],
            [XRAY, URL],
        ),
        at=1000.0,
    )


def _resources(series: dict[Labels, float]) -> set[str]:
    return {dict(k)["resource"].rsplit(":", 1)[1] for k in series}


def test_resource_violation_series_per_resource() -> None:
    store = make_store(PROD, DEV)
    _three_severities(store)
    m = scrape(store)
    series = m["posture_resource_violation"]
    assert _resources(series) == {"low-1", "crit-1", "high-1", "low-2", "high-2"}
    assert set(series.values()) == {1.0}
    key = labels(
        PROD,
        control="lambda-url-auth",
        severity="high",
        resource=arn(PROD, "high-1"),
    )
    assert key in series
    assert m["posture_resource_series_dropped"] == {frozenset(): 0.0}


@pytest.mark.parametrize(
    ("limit", "kept"),
    [
        (0, set()),
        (1, {"crit-1"}),
        (3, {"crit-1", "high-1", "high-2"}),
        (4, {"crit-1", "high-1", "high-2", "low-1"}),
        (100, {"crit-1", "high-1", "high-2", "low-1", "low-2"}),
    ],
)
def test_series_cap_drops_lowest_severity_first(limit: int, kept: set[str]) -> None:
    store = make_store(PROD, DEV)
    _three_severities(store)
    m = scrape(store, MetricsSettings(resource_series_limit=limit))
    assert _resources(m["posture_resource_violation"]) == kept
    assert m["posture_resource_series_dropped"] == {frozenset(): float(5 - len(kept))}
    # the aggregate series are not capped
    assert sum(m["posture_violations"].values()) == 5.0


def test_resource_series_can_be_turned_off() -> None:
    store = make_store(PROD, DEV)
    _three_severities(store)
    m = scrape(store, MetricsSettings(resource_series=False))
    assert m["posture_resource_violation"] == {}
    assert sum(m["posture_violations"].values()) == 5.0


def test_exempted_resources_have_no_resource_series() -> None:
    store = make_store(PROD)
    findings = [finding(PROD, "a", "lambda-url-auth", exempted=True)]
    store.publish(result(PROD, findings, [URL]), at=1000.0)
    assert scrape(store)["posture_resource_violation"] == {}


# --- health, failures, replacement ---------------------------------------------------------------


def test_assigned_targets_before_their_first_sweep() -> None:
    store = make_store(PROD)
    assert store.pending_first_sweep() == 1
    m = scrape(store)
    assert m["posture_target_up"] == {}  # unknown, not down
    assert m["posture_target_consecutive_failures"] == {labels(PROD): 0.0}
    assert m["posture_target_last_success_timestamp_seconds"] == {labels(PROD): 0.0}
    assert m["posture_violations"] == {}


def test_publish_marks_target_up() -> None:
    store = make_store(PROD)
    store.publish(result(PROD, [], [URL]), at=1234.5)
    assert store.pending_first_sweep() == 0
    m = scrape(store)
    assert m["posture_target_up"] == {labels(PROD): 1.0}
    assert m["posture_target_last_success_timestamp_seconds"] == {labels(PROD): 1234.5}
    assert m["posture_target_last_attempt_timestamp_seconds"] == {labels(PROD): 1234.5}


def test_failed_reconcile_keeps_last_results_and_shows_down() -> None:
    store = make_store(PROD)
    store.publish(result(PROD, [finding(PROD, "a", "lambda-url-auth")], [URL]), at=1000.0)
    store.record_failure(PROD, "AccessDenied", at=1300.0)
    health = store.record_failure(PROD, "Throttling", at=1600.0)
    assert health == TargetHealth(
        up=False,
        attempted=True,
        last_success=1000.0,
        last_attempt=1600.0,
        consecutive_failures=2,
        last_error="Throttling",
    )
    m = scrape(store)
    assert m["posture_target_up"] == {labels(PROD): 0.0}
    assert m["posture_target_consecutive_failures"] == {labels(PROD): 2.0}
    assert m["posture_target_last_success_timestamp_seconds"] == {labels(PROD): 1000.0}
    assert m["posture_target_last_attempt_timestamp_seconds"] == {labels(PROD): 1600.0}
    # nothing flips to compliant: the last known violation is still exported
    key = labels(PROD, control="lambda-url-auth", severity="high")
    assert m["posture_violations"] == {key: 1.0}
    assert _resources(m["posture_resource_violation"]) == {"a"}


def test_success_after_failures_resets_the_streak() -> None:
    store = make_store(PROD)
    store.record_failure(PROD, "boom", at=1000.0)
    assert store.pending_first_sweep() == 0  # attempted
    store.publish(result(PROD, [], [URL]), at=1100.0)
    m = scrape(store)
    assert m["posture_target_consecutive_failures"] == {labels(PROD): 0.0}
    assert m["posture_target_up"] == {labels(PROD): 1.0}


def test_new_publish_replaces_results_so_vanished_resources_disappear() -> None:
    store = make_store(PROD)
    first = [finding(PROD, "old", "lambda-url-auth"), finding(PROD, "kept", "lambda-url-auth")]
    store.publish(result(PROD, first, [URL]), at=1000.0)
    store.publish(result(PROD, [finding(PROD, "kept", "lambda-url-auth")], [URL]), at=1300.0)
    m = scrape(store)
    assert _resources(m["posture_resource_violation"]) == {"kept"}
    assert m["posture_violations"] == {
        labels(PROD, control="lambda-url-auth", severity="high"): 1.0
    }


def test_set_targets_drops_unassigned_target_series() -> None:
    store = make_store(PROD, PROD_EU)
    store.publish(result(PROD, [finding(PROD, "a", "lambda-url-auth")], [URL]), at=1000.0)
    store.publish(result(PROD_EU, [finding(PROD_EU, "b", "lambda-url-auth")], [URL]), at=1000.0)
    store.set_targets([PROD])
    m = scrape(store)
    for family in (
        "posture_violations",
        "posture_evaluated_resources",
        "posture_resource_violation",
        "posture_target_up",
        "posture_target_consecutive_failures",
    ):
        regions = {dict(k)["aws_region"] for k in m[family]}
        assert regions == {"us-east-1"}, family
    # the kept target keeps its health
    assert m["posture_target_up"] == {labels(PROD): 1.0}


def test_results_for_unassigned_targets_are_ignored() -> None:
    store = make_store(PROD)
    store.publish(result(DEV, [finding(DEV, "a", "lambda-url-auth")], [URL]), at=1000.0)
    store.record_failure(DEV, "late failure", at=1000.0)
    view = store.view()
    assert DEV not in view.results and DEV not in view.health
    assert {dict(k)["aws_account_id"] for k in scrape(store)["posture_violations"]} == set()


def test_views_are_immutable_snapshots() -> None:
    store = make_store(PROD)
    before = store.view()
    store.publish(result(PROD, [], [URL]), at=1000.0)
    assert PROD not in before.results
    assert PROD in store.view().results
    with pytest.raises(TypeError):
        store.view().results[DEV] = store.view().results[PROD]  # type: ignore[index]


# --- what the store keeps ------------------------------------------------------------------------


class FixedStore(StateStore):
    """A store that serves a given view: here, results as they were before `publish` dropped
    their passes, to render them through the same paths."""

    def __init__(self, view: StoreView) -> None:
        super().__init__()
        self._fixed = view

    def view(self) -> StoreView:
        return self._fixed


def test_the_store_keeps_every_finding_but_the_passes() -> None:
    findings = [
        *url_findings(),
        finding(PROD, "a", "lambda-xray-active", Status.PASS, Severity.LOW),
    ]
    full = result(PROD, findings, [URL, XRAY])
    store = make_store(PROD)
    store.publish(full, at=1000.0)
    kept = store.view().results[PROD]
    assert [f.status for f in full.findings].count(Status.PASS) == 2  # the sweep's own copy
    assert kept.findings == (findings[0], findings[1], findings[2], findings[4])
    assert kept == dataclasses.replace(full, findings=kept.findings)  # every aggregate as built
    assert kept.evaluated == {"lambda-url-auth": 4, "lambda-xray-active": 1}  # passes counted
    # a result without passes is kept as it is (the cached /metrics text is keyed by identity)
    assert kept.stored() is kept
    store.publish(kept, at=1300.0)
    assert store.view().results[PROD] is kept


def test_an_equal_result_is_published_with_the_previous_objects() -> None:
    """A sweep that found nothing new re-publishes equal findings as new objects; the store keeps
    the previous ones (one copy while the exposition cache still holds the previous result, and
    no new long-lived objects), with the new sweep's time."""
    findings = url_findings()
    store = make_store(PROD)
    store.publish(result(PROD, findings, [URL]), at=1000.0)
    first = store.view().results[PROD]
    again = dataclasses.replace(
        result(PROD, [dataclasses.replace(f) for f in findings], [URL]),
        evaluated_at=NOW + dt.timedelta(minutes=1),
    )
    assert again.stored() == dataclasses.replace(first, evaluated_at=again.evaluated_at)
    assert again.findings[0] is not first.findings[0]  # equal, not the same objects
    before = scrape(store)
    store.publish(again, at=1060.0)
    kept = store.view().results[PROD]
    assert kept is not first and kept.evaluated_at == again.evaluated_at
    assert kept.findings is first.findings
    assert kept.resource_violations is first.resource_violations
    for part in ("violations", "evaluated", "errors", "exemptions", "resources", "samples"):
        assert getattr(kept, part) is getattr(first, part), part
    after = scrape(store)
    moved = {"posture_target_last_success_timestamp_seconds"}
    moved.add("posture_target_last_attempt_timestamp_seconds")
    assert {k: v for k, v in after.items() if k not in moved} == {
        k: v for k, v in before.items() if k not in moved
    }
    assert after["posture_violations"] and after["posture_resource_violation"]


def test_a_changed_result_keeps_the_previous_objects_of_its_unchanged_findings() -> None:
    findings = url_findings()
    store = make_store(PROD)
    store.publish(result(PROD, findings, [URL]), at=1000.0)
    first = store.view().results[PROD]
    fixed = finding(PROD, "a", "lambda-url-auth", Status.PASS)  # "a" was a violation
    assert findings[0].resource == fixed.resource and findings[0].status is Status.FAIL
    changed = [fixed, *(dataclasses.replace(f) for f in findings[1:])]
    store.publish(result(PROD, changed, [URL]), at=1060.0)
    kept = store.view().results[PROD]
    assert kept.findings == tuple(f for f in changed if f.status is not Status.PASS)
    old = {id(f) for f in first.findings}
    assert all(id(f) in old for f in kept.findings)  # the unchanged findings, not copies
    assert kept.violations != first.violations  # the aggregates are the new result's
    assert kept.violations == result(PROD, changed, [URL]).violations
    assert [v.resource for v in kept.resource_violations] == [
        v.resource for v in first.resource_violations if v.resource != fixed.resource
    ]
    assert all(any(v is w for w in first.resource_violations) for v in kept.resource_violations)
    series = scrape(store)["posture_violations"]
    assert sum(series.values()) == sum(kept.violations.values())


def test_results_without_their_passes_render_the_same_metrics() -> None:
    targets = [PROD, PROD_EU, DEV]  # the same targets as test_exposition's
    full = {t: lambda_result(t, 20 + 10 * i, seed=i) for i, t in enumerate(targets)}
    full[ECR] = ecr_result()
    store = StateStore()
    store.set_targets(full)
    store.set_accounts({"111111111111": "prod"}, {"111111111111": True})
    for r in full.values():
        store.publish(r, at=1_700_000_000.0)
    store.record_failure(DEV, "throttled", at=1_700_000_100.0)
    view = store.view()
    statuses = Counter(f.status for r in full.values() for f in r.findings)
    assert statuses[Status.PASS] > 100 and statuses[Status.FAIL] and statuses[Status.ERROR]
    for t, r in full.items():
        kept = view.results[t]
        assert Status.PASS not in {f.status for f in kept.findings}
        assert kept.findings == tuple(f for f in r.findings if f.status is not Status.PASS)
        assert any(f.exempted for f in kept.findings) or t == ECR
    uncompacted = FixedStore(dataclasses.replace(view, results=MappingProxyType(full)))
    for settings in EXPOSITION_SETTINGS:
        for accept in ("", "application/openmetrics-text;version=1.0.0"):
            encoder, _ = choose_encoder(accept)
            stored, before = exposition(store, settings), exposition(uncompacted, settings)
            slow = encoder(before.registry)
            assert b"posture_evaluated_resources{" in slow  # not an empty comparison
            if settings == MetricsSettings():
                assert b"posture_resource_violation{" in slow
            assert encoder(stored.registry) == slow  # the collector, byte for byte
            assert stored.render(accept)[0] == before.render(accept)[0] == slow  # cached path


# --- accounts ------------------------------------------------------------------------------------


def test_account_info_and_up() -> None:
    store = make_store(PROD, DEV)
    store.set_accounts(
        {"111111111111": "prod", "222222222222": "dev sandbox"},
        {"111111111111": True, "222222222222": False},
    )
    m = scrape(store)
    assert m["posture_account_info"] == {
        frozenset({"aws_account_id": "111111111111", "account_name": "prod"}.items()): 1.0,
        frozenset({"aws_account_id": "222222222222", "account_name": "dev sandbox"}.items()): 1.0,
    }
    assert m["posture_account_up"] == {
        frozenset({("aws_account_id", "111111111111")}): 1.0,
        frozenset({("aws_account_id", "222222222222")}): 0.0,
    }


# --- the metrics contract ------------------------------------------------------------------------


def test_every_rendered_family_is_declared() -> None:
    store = make_store(PROD, DEV)
    store.set_accounts({"111111111111": "prod"}, {"111111111111": True})
    _three_severities(store)
    findings = [finding(PROD, "x", "lambda-url-auth", exempted=True)]
    store.publish(result(PROD, findings, [URL]), at=1000.0)
    store.record_failure(DEV, "boom", at=1100.0)
    rendered = scrape(store)
    declared = {d.exposed for d in n.ALL}
    assert set(rendered) <= declared
    state = {d.exposed for d in n.ALL if d.source == "state"}
    assert set(rendered) == state  # every state family is rendered, even when empty


def test_rendered_labels_match_the_contract() -> None:
    store = make_store(PROD)
    store.set_accounts({"111111111111": "prod"}, {"111111111111": True})
    findings = [
        finding(PROD, "a", "lambda-url-auth"),
        finding(PROD, "b", "lambda-url-auth", exempted=True),
    ]
    store.publish(result(PROD, findings, [URL]), at=1000.0)
    rendered = scrape(store)
    for d in n.ALL:
        if d.source != "state":
            continue
        for key in rendered[d.exposed]:
            assert {name for name, _ in key} == set(d.labels), d.name
