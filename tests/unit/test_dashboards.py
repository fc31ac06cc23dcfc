"""The Grafana dashboards (daemon/dashboards -> grafana/*.json): complete, provisionable as is,
and reading only metrics the daemon exports or the shipped recording rules record.

Whether each query returns data from a real Prometheus scraping the daemon is proven end to end
in tests/e2e/test_alerting.py.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from daemon import DOCS_URL, dashboards
from daemon.dashboards.grafana import Dashboard, Panel, Query, Row, render
from tests.promql import grafana_variables, known_names, metric_names, substitute

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DOCS = ROOT / "docs" / "dashboards.md"


def shipped() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(GRAFANA.glob("*.json"))]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every query: panels' targets and annotation queries."""
    out = [(p["title"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]
    out += [
        (f"annotation {a['name']}", a["expr"])
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    ]
    return out


def problems(dashboard: dict[str, Any]) -> list[str]:
    """Queries that do not parse or read a metric that does not exist."""
    known = known_names()
    found = []
    for where, expr in exprs(dashboard):
        try:
            names = metric_names(substitute(expr))
        except ValueError as err:
            found.append(f"{where}: does not parse: {err}")
            continue
        if not names:
            found.append(f"{where}: reads no metric")
        for name in sorted(names - known):
            found.append(f"{where}: {name} is not exported")
    return found


def test_the_shipped_json_is_what_the_code_renders() -> None:
    assert sorted(p.name for p in GRAFANA.glob("*.json")) == sorted(dashboards.files())
    for name, text in dashboards.files().items():
        assert (GRAFANA / name).read_text() == text, "run `make docs`"


@pytest.mark.parametrize("dashboard", shipped(), ids=lambda d: d["uid"])
def test_every_query_parses_and_reads_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    assert problems(dashboard) == []


def test_a_panel_on_a_metric_the_daemon_does_not_export_is_caught() -> None:
    def with_query(expr: str) -> dict[str, Any]:
        panel = Panel("p", "d", "stat", (Query(expr),), "none", ((None, "green"),))
        return render(Dashboard("x", "x", "x", ("posture-daemon",), (), (Row("r", (panel,)),)))

    assert problems(with_query('sum(posture_violations{job=~"$job"})')) == []
    assert problems(with_query("sum(posture_violation)")) == [
        "p: posture_violation is not exported"
    ]
    assert problems(with_query("sum(posture:not_recorded)")) == [
        "p: posture:not_recorded is not exported"
    ]
    assert problems(with_query("sum(posture_violations{)"))[0].startswith("p: does not parse")


@pytest.mark.parametrize("dashboard", shipped(), ids=lambda d: d["uid"])
def test_dashboard_is_identified_and_works_with_any_prometheus(dashboard: dict[str, Any]) -> None:
    assert re.fullmatch(r"posture-[a-z]+", dashboard["uid"])
    assert dashboard["title"].startswith("Posture / ")
    assert isinstance(dashboard["version"], int) and dashboard["version"] >= 1
    assert "posture-daemon" in dashboard["tags"] and dashboard["description"]
    assert dashboard["id"] is None  # provisioned: Grafana assigns it
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    first = dashboard["templating"]["list"][0]
    assert first["name"] == "datasource" and first["type"] == "datasource"
    assert first["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels(dashboard):
        assert panel["datasource"] == source, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == source
            # the variable's own query reads exported metrics too
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
            assert m, variable["query"]
            assert metric_names(substitute(m.group(1))) <= known_names()
    # every variable a query uses is defined, and used as a regex (its "All" value is .+)
    for where, expr in exprs(dashboard):
        for name in grafana_variables(expr):
            assert name in variables, (where, name)
            assert f'=~"${name}"' in expr, (where, name)
    # the docs links point to the published docs (the Helm chart's docsUrl replaces this)
    assert variables["docs"]["query"] == DOCS_URL if "docs" in variables else True


@pytest.mark.parametrize("dashboard", shipped(), ids=lambda d: d["uid"])
def test_every_panel_has_description_unit_and_thresholds(dashboard: dict[str, Any]) -> None:
    titles = set()
    for panel in panels(dashboard):
        name = panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        assert len(panel["description"]) > 20, name
        assert defaults["unit"], name
        steps = defaults["thresholds"]["steps"]
        assert steps and steps[0]["value"] is None, name
        assert all(a["value"] < b["value"] for a, b in itertools.pairwise(steps[1:])), name
        assert panel["targets"], name
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), name
        assert (name, panel["type"]) not in titles, f"duplicate panel {name}"
        titles.add((name, panel["type"]))
        if panel["type"] == "table":
            assert all(t["format"] == "table" and t["instant"] for t in panel["targets"]), name
            shown = panel["transformations"][-2]["options"]["include"]["names"]
            for override in panel["fieldConfig"]["overrides"]:
                for prop in override["properties"]:
                    if prop["id"] == "links":
                        for link in prop["value"]:
                            for field in re.findall(r"__data\.fields\.(\w+)", link["url"]):
                                assert field in shown, (name, field)
        else:
            assert all(t["range"] != t["instant"] for t in panel["targets"]), name
            assert all(t["instant"] == (panel["type"] != "timeseries") for t in panel["targets"])


@pytest.mark.parametrize("dashboard", shipped(), ids=lambda d: d["uid"])
def test_layout_fits_the_grid_without_overlaps(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_the_issue_s_dashboards_and_panels_exist() -> None:
    by_uid = {d["uid"]: {p["title"] for p in panels(d)} for d in shipped()}
    assert {
        "Violations by severity",
        "Compliance score per account and region",
        "Top controls by violations",
        "Top accounts by violations",
        "Stale or failing targets",
        "Critical violations",
    } <= by_uid["posture-overview"]
    assert {"Per-control breakdown", "Violating resources"} <= by_uid["posture-account"]
    account = next(d for d in shipped() if d["uid"] == "posture-account")
    assert {"datasource", "account", "region", "service", "severity"} <= {
        v["name"] for v in account["templating"]["list"]
    }
    assert {"Backup age per resource", "Missing backups", "Oldest backups"} <= by_uid[
        "posture-backup"
    ]
    assert {
        "Headroom per account-region",
        "Limit, peak and reserved",
        "Throttled invocations",
        "Unreserved pool",
    } <= by_uid["posture-concurrency"]
    assert {
        "Reconcile duration",
        "Queue depth",
        "Oldest waiting target",
        "AWS API calls by operation",
        "AWS API throttles",
        "Target health",
        "Policy reloads",
        "Workers busy",
    } <= by_uid["posture-operations"]


def test_docs_list_every_dashboard_and_panel() -> None:
    text = DOCS.read_text()
    for dashboard in shipped():
        assert f"## {dashboard['title']}" in text
        for panel in panels(dashboard):
            assert f"| {panel['title']} | {panel['type']} |" in text


def test_every_query_parses_with_prometheus_grammar_after_substitution() -> None:
    # promql-parser rejects what Prometheus rejects; a sanity check that it is strict
    with pytest.raises(ValueError):
        promql_parser.parse('rate(x{job=~"$job"}[$__rate_interval])')
    promql_parser.parse(substitute('rate(x{job=~"$job"}[$__rate_interval])'))
