"""PromQL helpers for the tests: parse with promql-parser (the Rust parser's Python binding) and
list the metric names an expression reads."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import promql_parser
import yaml

from daemon.metrics import names

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
# Prometheus' own series a rule may read besides the daemon's: the scrape's up.
PROMETHEUS_SERIES = frozenset({"up"})


def tool(
    name: str, *args: str, cwd: Path = DEPLOY, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run promtool or amtool (Debian's prometheus and prometheus-alertmanager packages)."""
    exe = shutil.which(name)
    assert exe, f"{name} is required (Debian packages prometheus, prometheus-alertmanager)"
    return subprocess.run(
        [exe, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (raises ValueError if it does not parse)."""
    found: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                found.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    found.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def recorded_names() -> set[str]:
    """The series the shipped recording rules create."""
    out: set[str] = set()
    for path in sorted(DEPLOY.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.update(r["record"] for r in group["rules"] if "record" in r)
    return out


@functools.cache
def known_names() -> frozenset[str]:
    """What a shipped query may read: the daemon's metrics, the recording rules, Prometheus' up."""
    return frozenset(names.exposed_names() | recorded_names() | PROMETHEUS_SERIES)


# The queries inside alert annotation templates: {{ with printf "QUERY" args | query }}
_TEMPLATE_QUERY = re.compile(r'printf "((?:[^"\\]|\\.)*)"[^|}]*\|\s*query')


def template_queries(text: str) -> list[str]:
    """The PromQL of every `query` in a Prometheus template, with printf's %q/%s filled in."""
    out = []
    for raw in _TEMPLATE_QUERY.findall(text):
        query = raw.replace('\\"', '"')
        out.append(query.replace("%q", '"x"').replace("%s", "x"))
    return out


# --- Grafana queries ----------------------------------------------------------------------------
# Grafana's built-in variables, with values that suit a Prometheus scraping every second.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def grafana_variables(expr: str) -> set[str]:
    """The dashboard variables an expression uses (Grafana's built-ins excluded)."""
    found = {a or b for a, b in _VARIABLE.findall(expr)}
    return found - set(GRAFANA_BUILTINS)


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """The query Grafana sends: built-ins replaced, and every dashboard variable set to `values`
    or, by default, to its "All" value (`.+`: the dashboards only use variables in `=~` matchers).
    """
    chosen = {**GRAFANA_BUILTINS, **(values or {})}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return chosen.get(name, ".+")

    return _VARIABLE.sub(replace, expr)
