"""Measures: service-specific gauges computed from snapshots and rendered at scrape time."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon import measures
from daemon.config import MetricsSettings
from daemon.controls.registry import all_controls
from daemon.metrics import names
from daemon.metrics.collector import StateCollector
from daemon.model import Target
from daemon.state import StateStore, TargetResult

NOW = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
TARGET = Target("111111111111", "us-east-1", "lambda")
PER_TARGET = names.MetricDef(
    "posture_test_widgets",
    "gauge",
    "Widgets per target and kind.",
    (*names.TARGET_LABELS, "kind"),
    "state",
)
POLICY_LEVEL = names.MetricDef(
    "posture_test_threshold_seconds",
    "gauge",
    "A policy threshold.",
    (names.SERVICE, "kind"),
    "state",
)


@pytest.fixture
def contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names, "ALL", (*names.ALL, PER_TARGET, POLICY_LEVEL))


def render(store: StateStore) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(StateCollector(store, MetricsSettings(), dict(all_controls())))
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_target_and_policy_samples_render_with_their_labels(contract: None) -> None:
    store = StateStore()
    store.set_targets([TARGET])
    samples = [
        measures.sample(PER_TARGET.name, 3, kind="blue"),
        measures.sample(PER_TARGET.name, 0, kind="red"),
    ]
    store.publish(TargetResult.build(TARGET, NOW, (), (), {}, samples), at=1.0)
    store.set_policy_samples(
        [measures.sample(POLICY_LEVEL.name, 86400, aws_service="lambda", kind="version")]
    )
    out = render(store)
    ids = {"aws_account_id": "111111111111", "aws_region": "us-east-1", "aws_service": "lambda"}
    assert sorted(out["posture_test_widgets"], key=lambda x: x[0]["kind"]) == [
        ({**ids, "kind": "blue"}, 3.0),
        ({**ids, "kind": "red"}, 0.0),
    ]
    assert out["posture_test_threshold_seconds"] == [
        ({"aws_service": "lambda", "kind": "version"}, 86400.0)
    ]


def test_samples_vanish_with_the_next_result_and_the_target(contract: None) -> None:
    store = StateStore()
    store.set_targets([TARGET])
    store.publish(
        TargetResult.build(
            TARGET, NOW, (), (), {}, [measures.sample(PER_TARGET.name, 1, kind="a")]
        ),
        1.0,
    )
    store.publish(TargetResult.build(TARGET, NOW, (), (), {}, []), 2.0)
    assert "posture_test_widgets" not in render(store)
    store.publish(
        TargetResult.build(
            TARGET, NOW, (), (), {}, [measures.sample(PER_TARGET.name, 1, kind="a")]
        ),
        3.0,
    )
    store.record_failure(TARGET, "ThrottlingException", 4.0)  # kept while the target fails
    assert render(store)["posture_test_widgets"][0][1] == 1.0
    store.set_targets([])
    assert "posture_test_widgets" not in render(store)


def test_samples_for_undeclared_metrics_are_not_exported() -> None:
    store = StateStore()
    store.set_targets([TARGET])
    store.publish(
        TargetResult.build(TARGET, NOW, (), (), {}, [measures.sample("posture_not_declared", 1)]),
        1.0,
    )
    assert "posture_not_declared" not in render(store)
