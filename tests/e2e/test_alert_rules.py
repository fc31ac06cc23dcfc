"""deploy/prometheus/alerts.rules.yml, docs/runbooks.md and deploy/alertmanager with the real
promtool and amtool (Debian's prometheus and prometheus-alertmanager packages).

promtool's unit tests (deploy/prometheus/tests/alerts-*.test.yml) prove every alert firing and not
firing, its `for:` duration and its rendered summary and description; this module proves they
exist for every alert, that the rules only read what the daemon exports, that each alert has its
runbook, and that the example Alertmanager configuration routes each alert as documented. The
whole chain with a real Prometheus and Alertmanager runs in test_alerting.py.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import DOCS_URL
from tests.promql import DEPLOY, known_names, metric_names, template_queries, tool

ROOT = DEPLOY.parents[1]
RULES = DEPLOY / "alerts.rules.yml"
RULE_TESTS = sorted((DEPLOY / "tests").glob("alerts-*.test.yml"))
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

SEVERITIES = {"critical", "warning", "info"}
CATEGORIES = {"compliance", "backup", "concurrency", "daemon"}
# The receiver each (severity, category) must reach: the routing README and runbooks describe.
RECEIVERS = {
    ("critical", None): "oncall-pager",
    ("warning", "compliance"): "compliance-tickets",
    ("warning", "backup"): "compliance-tickets",
    ("warning", "concurrency"): "platform-tickets",
    ("warning", "daemon"): "platform-tickets",
    ("info", None): "digest",
}


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _duration_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", text))


def test_rule_file_is_valid() -> None:
    proc = tool("promtool", "check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in proc.stdout


@pytest.mark.parametrize("tests", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(tests: Path) -> None:
    proc = tool("promtool", "test", "rules", str(tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert {"../alerts.rules.yml", "../backup.rules.yml", "../concurrency.rules.yml"} <= set(
            doc["rule_files"]
        ), path.name  # the alerts read the recording rules
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
                for alert in check.get("exp_alerts") or []:
                    # the rendered text is checked, not only the labels
                    assert {"summary", "description", "runbook_url"} <= set(
                        alert.get("exp_annotations", {})
                    ), check["alertname"]
    names = {a["alert"] for a in alerts()}
    assert fired <= names and quiet <= names, (fired | quiet) - names
    assert names - fired == set(), "never shown firing"
    assert names - quiet == set(), "never shown not firing"


def test_every_alert_has_severity_category_text_and_a_hold_time() -> None:
    for alert in alerts():
        name = alert["alert"]
        assert re.fullmatch(r"Posture[A-Z][A-Za-z]+", name), name
        labels = alert["labels"]
        assert labels["severity"] in SEVERITIES, name
        assert labels["category"] in CATEGORIES, name
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"]), name
        # noise control: nothing notifies on a single evaluation or a single sweep
        assert _duration_seconds(alert.get("for", "0s")) >= 300, name
        if labels["severity"] == "critical":
            # a page is only for the daemon being gone or blind, never a compliance finding
            assert labels["category"] == "daemon", name


def test_rules_and_their_annotation_queries_read_only_what_exists() -> None:
    known = known_names()
    for alert in alerts():
        used = metric_names(alert["expr"])
        assert used and used <= known, (alert["alert"], used - known)
        for text in alert["annotations"].values():
            for query in template_queries(text):
                assert metric_names(query) <= known, (alert["alert"], query)


def _sections() -> dict[str, str]:
    text = RUNBOOKS.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_alert_has_a_runbook_section_and_every_section_an_alert() -> None:
    sections = _sections()
    names = {a["alert"] for a in alerts()}
    assert set(sections) == names, set(sections) ^ names
    for alert in alerts():
        name = alert["alert"]
        # GitHub's anchor for "## PostureTargetDown" is #posturetargetdown
        assert alert["annotations"]["runbook_url"] == f"{DOCS_URL}/runbooks.md#{name.lower()}"
        body = sections[name]
        for part in ("**What it means.**", "**How to check.**", "**How to fix.**"):
            assert part in body, (name, part)
        # the PromQL a runbook tells the on-call engineer to paste must parse and exist
        queries = re.findall(r"```promql\n(.*?)```", body, flags=re.S)
        assert queries, name
        for block in queries:
            for line in block.strip().splitlines():
                expr = re.sub(r'"<[a-z]+>"', '"x"', line)
                assert metric_names(expr) <= known_names(), (name, line)
    # links between sections point to sections that exist
    anchors = {n.lower() for n in names}
    for target in re.findall(r"\]\(#([a-z]+)\)", RUNBOOKS.read_text()):
        assert target in anchors, target


@pytest.mark.parametrize(
    ("old", "new", "caught_by"),
    [
        # a typo in a metric name
        ("posture_target_up == 0\n", "posture_target_ups == 0\n", "alerts-daemon"),
        # a shorter hold time than documented
        (
            "        for: 15m\n        labels:\n          severity: warning\n          category: daemon",
            "        for: 5m\n        labels:\n          severity: warning\n          category: daemon",
            "alerts-daemon",
        ),
        # a wrong threshold
        ("(posture:backup_age_ratio) > 1", "(posture:backup_age_ratio) > 2", "alerts-backup"),
        # a broken description
        ("neither compliant nor violating", "compliant", "alerts-compliance"),
    ],
    ids=["metric", "for", "threshold", "text"],
)
def test_the_unit_tests_fail_when_an_alert_is_wrong(
    tmp_path: Path, old: str, new: str, caught_by: str
) -> None:
    (tmp_path / "tests").mkdir()
    for path in DEPLOY.glob("*.rules.yml"):
        (tmp_path / path.name).write_text(path.read_text())
    text = RULES.read_text()
    assert old in text
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    tests = DEPLOY / "tests" / f"{caught_by}.test.yml"
    (tmp_path / "tests" / tests.name).write_text(tests.read_text())
    proc = tool("promtool", "test", "rules", str(tmp_path / "tests" / tests.name))
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr


def test_alertmanager_example_is_valid() -> None:
    proc = tool("amtool", "check-config", str(ALERTMANAGER), cwd=ALERTMANAGER.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert "1 templates" in proc.stdout


def test_alertmanager_example_routes_every_alert_by_severity_and_category() -> None:
    for alert in alerts():
        labels = alert["labels"]
        expected = RECEIVERS.get(
            (labels["severity"], labels["category"]), RECEIVERS.get((labels["severity"], None))
        )
        pairs = [f"{k}={v}" for k, v in sorted(labels.items())]
        proc = tool(
            "amtool",
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"alertname={alert['alert']}",
            "aws_account_id=111111111111",
            *pairs,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == expected, (alert["alert"], proc.stdout)


def test_alertmanager_inhibitions_name_real_alerts_and_categories() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    names = {a["alert"] for a in alerts()}
    rules = config["inhibit_rules"]
    assert rules
    for rule in rules:
        for matcher in [*rule["source_matchers"], *rule["target_matchers"]]:
            m = re.fullmatch(r'(\w+)(=~|=)"(.+)"', matcher)
            assert m, matcher
            label, _, value = m.groups()
            values = set(value.split("|"))
            if label == "alertname":
                assert values <= names, values - names
            elif label == "category":
                assert values <= CATEGORIES, values
    # the inhibition: violations are muted while their target is down
    assert {
        "source_matchers": ['alertname="PostureTargetDown"'],
        "target_matchers": ['category=~"compliance|backup|concurrency"'],
        "equal": ["aws_account_id", "aws_region", "aws_service"],
    } in rules


def test_the_readme_loads_every_rule_file_and_scrapes_the_job_the_rules_watch() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n# prometheus.yml\n(.*?)```", readme, flags=re.DOTALL)
    assert block, "README: the prometheus.yml example of 'Dashboards and alerts'"
    config = yaml.safe_load(block.group(1))
    (job,) = config["scrape_configs"]
    watched = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    assert watched == {job["job_name"]}
    (pattern,) = config["rule_files"]
    shipped = {p.name for p in DEPLOY.glob("*.rules.yml")}
    assert {n for n in shipped if fnmatch.fnmatch(n, Path(pattern).name)} == shipped
