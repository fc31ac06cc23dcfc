"""/metrics' fast path (daemon/metrics/exposition.py) against the state collector it replaces.

A realistic store (several targets and services, per-resource series cut by the cap, exemptions,
measures, info metrics, label values that need escaping, a target that failed after a success, a
removed target) is rendered both ways, in the Prometheus text format and in OpenMetrics, and read
back with prometheus_client's parsers; the fast text also goes through `promtool check metrics`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gzip
import shutil
import threading
from collections.abc import Iterable, Iterator

import aiohttp
import pytest
import structlog.testing
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Exemplar

from daemon.config import HttpSettings, MetricsSettings
from daemon.controls.registry import all_controls
from daemon.measures import sample
from daemon.metrics import names as n
from daemon.metrics.collector import StateCollector
from daemon.metrics.exposition import Exposition, Registry, first_lines
from daemon.metrics.health import HealthMetrics
from daemon.model import Finding, Severity, Status, Target
from daemon.server import (
    GZIPPERS,
    WARM_SECONDS,
    Heartbeat,
    HttpServer,
    accepts_gzip,
    build_app,
    warm_exposition,
)
from daemon.state import StateStore, TargetResult
from tests.promql import tool

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
PROD = Target("111111111111", "us-east-1", "lambda")
PROD_EU = Target("111111111111", "eu-west-1", "lambda")
DEV = Target("222222222222", "us-east-1", "lambda")
ECR = Target("222222222222", "us-east-1", "ecr")
FLAKY = Target("333333333333", "us-east-1", "lambda")  # succeeds, then fails
GONE = Target("444444444444", "us-east-1", "lambda")  # published, then unassigned
NEW = Target("555555555555", "us-east-1", "lambda")  # assigned, never swept

# Prometheus 2's and 3's Accept headers, the text formats, and the prometheus_client default.
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
ACCEPTS = [
    "",
    PROMETHEUS_2,
    PROMETHEUS_3,
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=0.0.4",
]
# Escapings that rename every metric: served by the generic encoder (the fast path's probe sees
# that its lines would differ).
RENAMING = [
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    "text/plain;version=1.0.0;escaping=dots",
]
ODD = 'fn-"quoted"\\back\nslash-é'  # every character the label escaping handles, and UTF-8


def _finding(t: Target, name: str, control: str, **kw: object) -> Finding:
    status = kw.pop("status", Status.FAIL)
    return Finding(
        resource=f"arn:aws:lambda:{t.region}:{t.account_id}:function:{name}",
        resource_type="lambda-function",
        account_id=t.account_id,
        region=t.region,
        service=t.service,
        control=control,
        severity=kw.pop("severity", Severity.HIGH),  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        evidence="e",
        **kw,  # type: ignore[arg-type]
    )


LAMBDA_CONTROLS = [
    ("lambda-env-no-plaintext-secrets", Severity.CRITICAL),
    ("lambda-url-auth", Severity.HIGH),
    ("lambda-vpc-attached", Severity.MEDIUM),
    ("lambda-xray-active", Severity.LOW),
    ("not-in-the-catalogue", Severity.LOW),  # left out of control_info
]


def lambda_result(t: Target, functions: int, *, seed: int = 0) -> TargetResult:
    findings: list[Finding] = []
    for i in range(functions):
        name = f"fn-{i:03d}" if i != 1 else ODD
        for j, (control, severity) in enumerate(LAMBDA_CONTROLS[:4]):
            if (i + j + seed) % 3 == 0:
                findings.append(_finding(t, name, control, severity=severity))
            elif (i + j) % 7 == 0:
                findings.append(_finding(t, name, control, severity=severity, exempted=True))
            elif (i + j) % 11 == 0:
                findings.append(
                    _finding(t, name, control, severity=severity, exemption_expired=True)
                )
            elif (i + j) % 13 == 0:
                findings.append(_finding(t, name, control, severity=severity, status=Status.ERROR))
            else:
                findings.append(_finding(t, name, control, severity=severity, status=Status.PASS))
    samples = [
        sample(n.LAMBDA_CONCURRENCY_LIMIT.name, 1000 + seed),
        sample(n.LAMBDA_HEADROOM.name, 0.25),
        sample(n.LAMBDA_FUNCTION_RESERVED.name, 5, function=ODD),
        sample(n.LAMBDA_DATAPOINTS.name, 1440, metric="ConcurrentExecutions"),
        sample(n.BACKUP_LAST_TIMESTAMP.name, 1.7e9 + 0.125, resource=ODD, kind="version"),
        sample(n.BACKUP_MAX_AGE.name, float("inf"), resource="fn-000", kind="version"),
        sample("posture_not_declared", 1),  # not in the contract: ignored by both paths
    ]
    return TargetResult.build(
        t,
        NOW,
        findings,
        LAMBDA_CONTROLS,
        {"lambda-function": functions, "lambda-layer-version": 2},
        samples,
    )


def ecr_result() -> TargetResult:
    findings = [
        _finding(ECR, f"repo-{i}", "ecr-image-scanning", severity=Severity.HIGH) for i in range(3)
    ]
    controls = [("ecr-image-scanning", Severity.HIGH), ("ecr-tag-immutability", Severity.MEDIUM)]
    return TargetResult.build(ECR, NOW, findings, controls, {"ecr-repository": 3})


def estate() -> StateStore:
    store = StateStore()
    store.set_targets([PROD, PROD_EU, DEV, ECR, FLAKY, GONE])
    store.set_accounts(
        {"111111111111": "prod", "222222222222": 'dev "sandbox"\\', "333333333333": "flaky"},
        {"111111111111": True, "222222222222": True, "333333333333": False},
    )
    store.set_policy_samples(
        [
            sample(n.LAMBDA_LOOKBACK.name, 86400),
            sample(n.BACKUP_POLICY_MAX_AGE.name, 604800, aws_service="lambda", kind="version"),
        ]
    )
    for i, t in enumerate([PROD, PROD_EU, DEV, FLAKY, GONE]):
        store.publish(lambda_result(t, 20 + 10 * i), at=1_700_000_000.0 + i)
    store.publish(ecr_result(), at=1_700_000_100.5)
    store.record_failure(FLAKY, "throttled", at=1_700_000_200.25)
    store.set_targets([PROD, PROD_EU, DEV, ECR, FLAKY, NEW])  # GONE leaves, NEW arrives
    return store


class Before:
    """A collector registered before the state, with samples that never change."""

    def collect(self) -> Iterator[Metric]:
        m = Metric("posture_test_before", "A gauge before the state.", "gauge")
        m.add_sample("posture_test_before", {"k": ODD}, 1.5)
        yield m


class After:
    """A collector registered after the state: its families must follow the state's, and among
    them some that the encoder writes (a timestamp, an exemplar, OpenMetrics-only samples)
    next to ones written by the exposition."""

    def collect(self) -> Iterator[Metric]:
        m = Metric("posture_test_after", "A counter after the state.", "counter")
        m.add_sample("posture_test_after_total", {}, 3)
        yield m
        stamped = Metric("posture_test_stamped", "A gauge with a timestamp.", "gauge")
        stamped.add_sample("posture_test_stamped", {"k": "v"}, 2, timestamp=1_700_000_000.5)
        yield stamped
        created = Metric("posture_test_created", "A counter with its creation time.", "counter")
        created.add_sample("posture_test_created_total", {"k": ODD}, 4)
        created.add_sample("posture_test_created_created", {"k": ODD}, 1_700_000_000.0)
        yield created
        exemplar = Metric("posture_test_exemplar", "A counter with an exemplar.", "counter")
        exemplar.add_sample(
            "posture_test_exemplar_total", {}, 5, exemplar=Exemplar({"trace_id": "abc"}, 1.0)
        )
        yield exemplar
        odd = Metric("posture_test_odd", 'Help with "quotes", \\ and\na newline.', "gauge")
        odd.add_sample("posture_test_odd", {"b": ODD, "a": "", "c": "1"}, float("-inf"))
        odd.add_sample("posture_test_odd", {"b": "x", "a": "y", "c": "2"}, float("inf"))
        odd.add_sample("posture_test_odd", {"b": "y", "a": "y", "c": "3"}, 1e-7)
        yield odd


def exposition(store: StateStore, settings: MetricsSettings | None = None) -> Exposition:
    registry = Registry()
    registry.register(Before())
    c = Counter("posture_test_requests", "Requests.", ["path"], registry=registry)
    c.labels("/metrics").inc(7)
    c.labels(ODD).inc(0.5)
    h = Histogram(
        "posture_test_seconds", "A histogram.", ["service"], buckets=(0.1, 1), registry=registry
    )
    h.labels("lambda").observe(0.05)
    h.labels("ecr").observe(3)
    Gauge("posture_test_level", "A gauge without labels.", registry=registry).set(1e21)
    Info("posture_test_build", "An info.", registry=registry).info({"version": "1.0", "z": ODD})
    state = StateCollector(store, settings or MetricsSettings(), dict(all_controls()))
    registry.register(state)
    registry.register(After())
    return Exposition(registry, state)


Family = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]


def families(text: str, openmetrics: bool) -> list[Family]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
        for f in parse(text)
    ]


SETTINGS = [
    MetricsSettings(),  # every per-resource series fits
    MetricsSettings(resource_series_limit=37),  # the cap cuts inside a target's high chunk
    MetricsSettings(resource_series_limit=0),
    MetricsSettings(resource_series=False),
]


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("settings", SETTINGS, ids=["all", "capped", "zero", "off"])
def test_fast_path_equals_the_collector(accept: str, settings: MetricsSettings) -> None:
    e = exposition(estate(), settings)
    assert e.serves_cached(accept)
    encoder, content_type = choose_encoder(accept)
    slow = encoder(e.registry)
    body, served = e.render(accept)
    assert served == content_type
    assert body == slow  # byte for byte, headers, order and trailer included
    openmetrics = content_type.startswith("application/openmetrics-text")
    parsed = families(body.decode(), openmetrics)
    assert parsed == families(slow.decode(), openmetrics)
    names = [f[0] for f in parsed]
    assert names[0] == "posture_test_before" and names[-1] == "posture_test_odd"
    assert names.index("posture_test_after") > names.index("posture_violations")
    assert body.endswith(b"# EOF\n") == openmetrics
    assert e.render(accept)[0] == slow  # served again from the cache
    assert e.writes_lines(accept)  # the daemon's own families too: not by the encoder


def test_the_realistic_store_has_what_the_comparison_must_cover() -> None:
    """Guards the comparison above against testing an empty store."""
    e = exposition(estate(), MetricsSettings(resource_series_limit=37))
    parsed = {f[0]: f for f in families(e.render(PROMETHEUS_2)[0].decode(), True)}
    series = {name: f[3] for name, f in parsed.items()}
    accounts = {s[1]["aws_account_id"] for s in series["posture_violations"]}
    assert accounts == {"111111111111", "222222222222", "333333333333"}  # GONE is gone
    assert len(series["posture_resource_violation"]) == 37
    assert series["posture_resource_series_dropped"][0][2] > 0
    severities = [s[1]["severity"] for s in series["posture_resource_violation"]]
    assert severities == sorted(severities, key=lambda s: -Severity(s).rank)
    assert {s[1]["state"] for s in series["posture_exemptions"]} == {"active", "expired"}
    uncapped = families(exposition(estate()).render("")[0].decode(), False)
    every = next(f[3] for f in uncapped if f[0] == "posture_resource_violation")
    assert len(every) > 37 and any(s[1]["resource"].endswith(ODD) for s in every)
    assert any(s[1]["function"] == ODD for s in series[n.LAMBDA_FUNCTION_RESERVED.name])
    assert series[n.BACKUP_MAX_AGE.name][0][2] == float("inf")
    assert parsed["posture_account"][1] == "info"
    assert {s[1]["account_name"] for s in series["posture_account"]} >= {'dev "sandbox"\\'}
    controls = {s[1]["control"] for s in series["posture_control"]}
    assert "lambda-url-auth" in controls and "not-in-the-catalogue" not in controls
    up = {s[1]["aws_account_id"]: s[2] for s in series["posture_target_up"]}
    assert up["333333333333"] == 0 and up["111111111111"] == 1 and "555555555555" not in up
    assert {s[1]["aws_account_id"] for s in series["posture_target_consecutive_failures"]} >= {
        "555555555555"
    }
    assert series[n.LAMBDA_LOOKBACK.name] == [(n.LAMBDA_LOOKBACK.name, {}, 86400.0)]


def test_fast_text_passes_promtool() -> None:
    body, _ = exposition(estate(), MetricsSettings(resource_series_limit=37)).render("")
    proc = tool("promtool", "check", "metrics", stdin=body.decode())
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (
        proc.stdout + proc.stderr
    )


@pytest.mark.parametrize("accept", RENAMING)
def test_escaping_that_renames_metrics_falls_back_to_the_generic_encoder(accept: str) -> None:
    e = exposition(estate())
    assert not e.serves_cached(accept)
    encoder, content_type = choose_encoder(accept)
    body, served = e.render(accept)
    assert (body, served) == (encoder(e.registry), content_type)
    assert b"posture_violations{" not in body  # renamed


def _values(e: Exposition, name: str) -> dict[tuple[Target, str], float]:
    """The samples of one family by (target, control)."""
    out = {}
    for f in text_string_to_metric_families(e.render("")[0].decode()):
        for s in f.samples:
            if s.name == name:
                t = Target(
                    s.labels["aws_account_id"], s.labels["aws_region"], s.labels["aws_service"]
                )
                out[(t, s.labels.get("control", ""))] = s.value
    return out


def test_a_republished_result_is_rendered_again_and_the_rest_comes_from_the_cache() -> None:
    store = estate()
    e = exposition(store)
    assert e.text is not None
    first = e.render("")[0]
    rendered = e.text.rendered
    assert rendered == 5  # PROD, PROD_EU, DEV, ECR, FLAKY
    assert e.text.cached() == {PROD, PROD_EU, DEV, ECR, FLAKY}
    assert e.render("")[0] == first and e.text.rendered == rendered  # nothing changed

    # DEV is swept again with different outcomes: its new values appear, nothing else re-renders
    before = _values(e, "posture_violations")
    store.publish(lambda_result(DEV, 40, seed=1), at=1_700_001_000.0)
    after = _values(e, "posture_violations")
    assert e.text.rendered == rendered + 1
    changed = {k for k in after if after[k] != before[k]}
    assert changed and all(t == DEV for t, _ in changed)
    assert e.render("")[0] == generate_latest(e.registry)

    # a steady sweep: a new result object with the same numbers is not rendered again
    same = e.render("")[0]
    store.publish(lambda_result(DEV, 40, seed=1), at=1_700_001_500.0)
    assert e.render("")[0] != same  # the health timestamps moved...
    assert e.text.rendered == rendered + 1  # ...but the result's text was reused
    assert e.render("")[0] == generate_latest(e.registry)

    # only a sample moved (a data-age timestamp): it shows, the other parts are reused
    dev = store.view().results[DEV]
    moved = (sample(n.DATA_OLDEST_FETCH.name, 1_700_009_999), *dev.samples[1:])
    store.publish(dataclasses.replace(dev, samples=moved), at=1_700_001_600.0)
    body = e.render("")[0]
    assert body == generate_latest(e.registry)
    assert b"posture_data_oldest_fetch_timestamp_seconds{" in body and b"1.700009999e+09" in body
    assert e.text.rendered == rendered + 2

    # a failure changes only health: shown at once, without rendering a result again
    store.record_failure(PROD, "throttled", at=1_700_002_000.0)
    assert _values(e, "posture_target_up")[(PROD, "")] == 0
    assert e.text.rendered == rendered + 2
    assert e.render("")[0] == generate_latest(e.registry)

    # an unassigned target's series vanish
    store.set_targets([PROD, PROD_EU, ECR, FLAKY, NEW])
    assert DEV not in {t for t, _ in _values(e, "posture_resources")}
    assert DEV not in e.text.cached()  # nor kept in the cache
    assert e.render("")[0] == generate_latest(e.registry)


def test_a_violation_whose_evidence_alone_changed_reuses_the_text_and_a_new_one_does_not() -> None:
    """Per-resource series are the violating findings themselves (`TargetResult`); whether a
    target's lines are rendered again compares what the lines show (control, severity,
    resource), not the evidence, which no series carries."""
    store = estate()
    e = exposition(store)
    assert e.text is not None
    dev = lambda_result(DEV, 40, seed=1)  # with its passes, which the store drops
    store.publish(dev, at=1_700_000_500.0)
    e.render("")
    rendered = e.text.rendered
    assert len(dev.resource_violations) > 1

    # a new sweep whose first violation says something else about the same resource
    reworded = [
        dataclasses.replace(f, evidence=f.evidence + " (reworded)")
        if f is dev.resource_violations[0]
        else f
        for f in dev.findings
    ]
    again = TargetResult.build(
        DEV, NOW, reworded, list(dev.violations), dict(dev.resources), dev.samples
    )
    assert again.resource_violations != dev.resource_violations  # the findings differ...
    store.publish(again, at=1_700_001_000.0)
    assert e.render("")[0] == generate_latest(e.registry)
    assert e.text.rendered == rendered  # ...the lines do not: reused

    # the first violation now names another resource: rendered again, and it shows
    first = dev.resource_violations[0]
    moved = [
        dataclasses.replace(f, resource=f.resource + "-moved") if f is first else f
        for f in dev.findings
    ]
    store.publish(
        TargetResult.build(DEV, NOW, moved, list(dev.violations), dict(dev.resources), dev.samples),
        at=1_700_001_100.0,
    )
    body = e.render("")[0]
    assert e.text.rendered == rendered + 1
    assert body == generate_latest(e.registry)
    assert f'resource="{first.resource}-moved"'.encode() in body


def test_warmed_targets_are_not_rendered_again_by_the_scrape() -> None:
    """`warm` renders a published result's text ahead of the scrape: the scrape then renders
    nothing and serves what a cold render would."""
    store = estate()
    e = exposition(store)
    assert e.text is not None
    assert sorted(e.text.stale()) == sorted([PROD, PROD_EU, DEV, ECR, FLAKY])
    for target in e.text.stale():
        assert e.text.warm(target)
    assert e.text.stale() == [] and e.text.rendered == 5
    assert not e.text.warm(DEV)  # nothing new: nothing rendered
    body = e.render("")[0]
    assert e.text.rendered == 5
    assert body == generate_latest(e.registry) == exposition(store).render("")[0]

    store.publish(lambda_result(DEV, 40, seed=1), at=1_700_001_000.0)
    assert e.text.stale() == [DEV]
    assert e.text.warm(DEV) and e.text.rendered == 6
    assert e.render("")[0] == generate_latest(e.registry)
    assert e.text.rendered == 6
    # an unassigned target is not rendered; the scrape drops the cached one
    store.set_targets([PROD, PROD_EU, ECR, FLAKY, NEW])
    assert not e.text.warm(DEV)
    assert DEV not in {t for t, _ in _values(e, "posture_resources")}


async def test_the_server_renders_new_results_between_scrapes_once_scraped() -> None:
    """Nothing is rendered before the first scrape (a daemon nobody scrapes renders nothing);
    after it, results published between scrapes are rendered by the server within about
    WARM_SECONDS, and the next scrape renders none itself."""
    store = estate()
    registry = Registry()
    state = StateCollector(store, MetricsSettings(), dict(all_controls()))
    registry.register(state)
    e = Exposition(registry, state)
    assert e.text is not None
    server = HttpServer(
        HttpSettings(host="127.0.0.1", port=0),
        build_app(e, Heartbeat(), lambda: (True, "ok")),
    )
    await server.start()
    try:
        await asyncio.sleep(3 * WARM_SECONDS)
        assert e.text.rendered == 0
        url = f"http://127.0.0.1:{server.port}/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.status == 200
            assert e.text.rendered == 5  # the first scrape rendered them itself
            store.publish(lambda_result(DEV, 40, seed=1), at=1_700_001_000.0)
            store.publish(lambda_result(PROD, 30, seed=2), at=1_700_001_000.0)
            for _ in range(50):
                if not e.text.stale():
                    break
                await asyncio.sleep(WARM_SECONDS / 5)
            assert e.text.stale() == [] and e.text.rendered == 7
            async with session.get(url) as resp:
                body = await resp.read()
            assert e.text.rendered == 7  # the scrape only joined
            assert body == await asyncio.to_thread(generate_latest, registry)
    finally:
        await server.stop()


async def test_rendering_ahead_stops_when_it_fails_and_scrapes_still_render() -> None:
    store = estate()
    e = exposition(store)
    assert e.text is not None

    def broken(_target: Target) -> bool:
        raise ValueError("a bug in rendering")

    e.text.warm = broken  # type: ignore[method-assign]
    scraped = asyncio.Event()
    scraped.set()
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(warm_exposition(e, scraped), timeout=5)
    assert [entry["event"] for entry in logs] == ["rendering /metrics ahead of scrapes failed"]
    assert "a bug in rendering" in logs[0]["problem"]
    assert e.render("")[0] == generate_latest(e.registry)


def test_concurrent_scrapes_agree() -> None:
    store = estate()
    e = exposition(store)
    bodies: list[bytes] = []

    def scrape() -> None:
        for _ in range(5):
            bodies.append(e.render(PROMETHEUS_2)[0])

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bodies) == 20 and len(set(bodies)) == 1


def test_first_lines() -> None:
    text = b"a 1\nb 2\nc 3\n"
    assert first_lines(text, 1) == b"a 1\n"
    assert first_lines(text, 2) == b"a 1\nb 2\n"
    assert first_lines(text, 3) == text


def test_without_a_registered_state_collector_the_registry_is_encoded_as_is() -> None:
    store = estate()
    registry = Registry()
    Gauge("posture_test_gauge", "A gauge.", registry=registry).set(2)
    e = Exposition(registry, StateCollector(store, MetricsSettings(), dict(all_controls())))
    assert e.render("")[0] == generate_latest(registry)


async def test_metrics_endpoint_serves_both_formats_from_the_fast_path() -> None:
    """The real handler: OpenMetrics for Prometheus' Accept header, text otherwise, gzipped when
    the client accepts it; the daemon's health metrics (process collector included) come first,
    then the state."""
    store = estate()
    registry = Registry()
    HealthMetrics(registry)
    state = StateCollector(store, MetricsSettings(), dict(all_controls()))
    registry.register(state)
    server = HttpServer(
        HttpSettings(host="127.0.0.1", port=0),
        build_app(Exposition(registry, state), Heartbeat(), lambda: (True, "ok")),
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for accept, openmetrics, accept_encoding, coding in (
                (PROMETHEUS_3, True, "gzip", "gzip"),  # Prometheus' Accept-Encoding
                ("", False, "identity", "identity"),
                ("", False, "gzip;q=0, deflate", "identity"),
            ):
                url = f"http://127.0.0.1:{server.port}/metrics"
                headers = {"Accept": accept, "Accept-Encoding": accept_encoding}
                async with session.get(url, headers=headers) as resp:
                    assert resp.status == 200
                    body = await resp.text()  # aiohttp decompresses
                    served = resp.headers["Content-Type"]
                    assert resp.headers.get("Content-Encoding", "identity") == coding
                encoder, content_type = choose_encoder(accept)
                assert served == content_type
                slow = await asyncio.to_thread(encoder, registry)
                assert _stable(families(body, openmetrics)) == _stable(
                    families(slow.decode(), openmetrics)
                )
                assert body.endswith("# EOF\n") == openmetrics
    finally:
        await server.stop()


LARGE_ESTATE = [Target(f"{700000000000 + i}", "us-east-1", "lambda") for i in range(8)]


async def large_estate_served() -> tuple[StateStore, web.Application, HttpServer]:
    """A store of 8 Lambda targets x 300 functions (a /metrics body of ~700 KB, many gzip
    segments) served by the real app on a free port, started (the caller stops it)."""
    store = StateStore()
    store.set_targets(LARGE_ESTATE)
    accounts = [t.account_id for t in LARGE_ESTATE]
    store.set_accounts(dict.fromkeys(accounts, "acct"), dict.fromkeys(accounts, True))
    for i, t in enumerate(LARGE_ESTATE):
        store.publish(lambda_result(t, 300, seed=i), at=1_700_000_000.0 + i)
    registry = Registry()
    HealthMetrics(registry)
    state = StateCollector(store, MetricsSettings(), dict(all_controls()))
    registry.register(state)
    app = build_app(Exposition(registry, state), Heartbeat(), lambda: (True, "ok"))
    server = HttpServer(HttpSettings(host="127.0.0.1", port=0), app)
    await server.start()
    return store, app, server


async def test_gzipped_scrapes_read_by_curl_and_unchanged_text_is_not_compressed_again() -> None:
    """A body of many segments (daemon/metrics/compress.py), fetched by curl, which reads only
    the first member of a gzip body: decoded by curl and by Python's gzip module it is the
    text served without compression. A second scrape of the same store compresses again only
    the segments with text rendered at scrape time (the process collector, account lines)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    _, app, server = await large_estate_served()

    async def fetch(*options: str) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            curl,
            "-sS",
            "--fail",
            *options,
            f"http://127.0.0.1:{server.port}/metrics",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out

    try:
        sent = await fetch("-H", "Accept-Encoding: gzip")  # as sent: not decoded
        (gzipper,) = app[GZIPPERS].values()
        first = gzipper.compressed
        by_curl = await fetch("--compressed")
        plain = await fetch()
    finally:
        await server.stop()
    assert len(plain) > 500_000 and len(sent) < len(plain) / 10
    assert first >= 5  # many segments
    text = [_stable(families(b.decode(), False)) for b in (gzip.decompress(sent), by_curl, plain)]
    assert text[0] == text[1] == text[2]
    again = gzipper.compressed - first
    assert 1 <= again <= 8, f"{again} of {first} segments compressed again"
    assert gzipper.reused >= first - 8


def _stable(fams: Iterable[Family]) -> list[Family]:
    """Families without the process collector's (CPU time and memory move between scrapes)."""
    return [f for f in fams if not f[0].startswith("process_")]


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate;q=1.0, GZIP;q=0.5", True),
        ("*", True),
        ("x-gzip", True),
        ("", False),
        ("identity", False),
        ("deflate", False),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *;q=1", False),
        ("*;q=0", False),
        ("gzip;q=bogus", False),
    ],
)
def test_accepts_gzip(header: str, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip
