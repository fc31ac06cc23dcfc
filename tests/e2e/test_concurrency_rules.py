"""deploy/prometheus/concurrency.rules.yml with the real promtool (Debian's prometheus package):
the file is valid, its unit tests pass, and it only reads metrics the daemon exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from daemon.metrics import names
from tests.promql import tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "concurrency.rules.yml"
RULE_TESTS = DEPLOY / "tests" / "concurrency.test.yml"


def test_rule_file_is_valid() -> None:
    proc = tool("promtool", "check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 6 rules found" in proc.stdout


def test_rule_unit_tests_pass() -> None:
    proc = tool("promtool", "test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rules_read_only_exported_metrics_and_record_namespaced_names() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    exported = names.exposed_names()
    for rule in rules:
        assert re.fullmatch(r"posture:[a-z_]+", rule["record"]), rule["record"]
        used = set(re.findall(r"\bposture_[a-z_]+", rule["expr"]))
        assert used and used <= exported, used - exported


@pytest.mark.parametrize("name", ["posture_lambda_concurrency_headroom", "posture_workers_active"])
def test_a_rule_test_fails_when_the_rule_is_wrong(tmp_path: Path, name: str) -> None:
    # the test file must be able to fail: break one input and expect promtool to say so
    (tmp_path / "tests").mkdir()
    (tmp_path / "concurrency.rules.yml").write_text(RULES.read_text().replace(name, name + "_typo"))
    (tmp_path / "tests" / "concurrency.test.yml").write_text(RULE_TESTS.read_text())
    proc = tool("promtool", "test", "rules", str(tmp_path / "tests" / "concurrency.test.yml"))
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr
