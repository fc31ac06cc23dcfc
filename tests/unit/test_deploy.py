"""The generated deployment artefacts: current, least privilege, and correct for new operations."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from daemon import deploy
from daemon.collectors.registry import declared_operations
from daemon.model.operations import PRINCIPALS, Operation

ROOT = Path(__file__).resolve().parents[2]
READ_VERBS = ("Get", "List", "Describe", "BatchGet", "Search", "Lookup")


def test_generated_deployment_files_are_current() -> None:
    assert deploy.main(["--check"]) == 0, "run `make docs` (python -m daemon.docs) and commit"


def test_declarations_are_well_formed_and_only_opt_in_features_write() -> None:
    ops = declared_operations()
    keys = [(op.service, op.operation) for op in ops]
    assert len(keys) == len(set(keys))
    for op in ops:
        assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9*]+", op.iam_action), op
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", op.operation), op
        assert op.principal in PRINCIPALS
        if op.optional or op.iam_action == "sts:AssumeRole":
            continue
        verb = op.iam_action.split(":", 1)[1]
        assert verb.startswith(READ_VERBS) or op.iam_action == "apigateway:GET", (
            f"{op}: a write action must be optional (an opt-in feature's separate policy)"
        )


def test_policies_fit_a_managed_policy() -> None:
    for name, doc in deploy.policy_json_files(declared_operations()).items():
        compact = re.sub(r"\s+", "", json.dumps(doc))
        assert len(compact) < deploy.MANAGED_POLICY_LIMIT, name


FUTURE = (
    *declared_operations(),
    Operation("s3", "PutObject", "s3:PutObject", optional=True, principal="hub"),
    Operation("lambda", "PutFunctionConcurrency", "lambda:PutFunctionConcurrency", optional=True),
    Operation("ecr", "DescribeRepositories", "ecr:DescribeRepositories"),
)


def test_new_operations_flow_into_the_right_policies() -> None:
    files = deploy.policy_json_files(FUTURE)
    actions = {
        name: {a for s in doc["Statement"] for a in s["Action"]} for name, doc in files.items()
    }
    today = {
        name: {a for s in doc["Statement"] for a in s["Action"]}
        for name, doc in deploy.policy_json_files(declared_operations()).items()
    }
    assert "ecr:DescribeRepositories" in actions["reader-policy.json"]
    assert actions["reader-optional-policy.json"] - today.get(
        "reader-optional-policy.json", set()
    ) == {"lambda:PutFunctionConcurrency"}
    # an optional policy never repeats what the default one grants
    assert not actions["reader-optional-policy.json"] & actions["reader-policy.json"]
    assert actions["hub-optional-policy.json"] - today.get("hub-optional-policy.json", set()) == {
        "s3:PutObject"
    }
    base = actions["reader-policy.json"] | actions["hub-policy.json"]
    assert not base & {"s3:PutObject", "lambda:PutFunctionConcurrency"}
    (assume,) = [
        s for s in files["hub-policy.json"]["Statement"] if "sts:AssumeRole" in s["Action"]
    ]
    assert assume["Resource"] == [f"arn:aws:iam::*:role/{deploy.READER_ROLE_NAME}"]


def test_templates_with_opt_in_features_are_valid_cloudformation(tmp_path: Path) -> None:
    reader = deploy.reader_role_template(FUTURE)
    hub = deploy.hub_role_template(FUTURE)
    assert reader["Parameters"]["EnableOptionalFeatures"]["Default"] == "false"
    optional = reader["Resources"]["OptionalPolicy"]
    assert optional["Condition"] == "OptionalFeatures"
    assert json.dumps(optional).count("lambda:PutFunctionConcurrency") == 1
    assert "lambda:PutFunctionConcurrency" not in json.dumps(reader["Resources"]["ReaderPolicy"])
    assert "s3:PutObject" in json.dumps(hub["Resources"]["OptionalPolicy"])
    # without opt-in operations there is no such parameter or policy
    plain = deploy.reader_role_template(tuple(o for o in declared_operations() if not o.optional))
    assert "EnableOptionalFeatures" not in plain["Parameters"]
    for name, template in (("reader.yaml", reader), ("hub.yaml", hub)):
        (tmp_path / name).write_bytes(deploy._cfn_yaml(template))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--", *map(str, tmp_path.glob("*.yaml"))],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_stale_generated_files_are_found_and_rewritten(tmp_path: Path) -> None:
    files = deploy.iam_files(FUTURE)
    assert sorted(p.name for p in deploy.stale_files(tmp_path, files)) == sorted(
        p.name for p in files
    )
    deploy.write(tmp_path, files)
    assert not deploy.stale_files(tmp_path, files)
    # the hub's optional operations removed: its optional policy file goes too
    fewer = deploy.iam_files(
        tuple(op for op in declared_operations() if not (op.principal == "hub" and op.optional))
    )
    stale = deploy.stale_files(tmp_path, fewer)
    assert deploy.IAM_DIR / "hub-optional-policy.json" in stale
    deploy.write(tmp_path, fewer)
    assert not (tmp_path / deploy.IAM_DIR / "hub-optional-policy.json").exists()
    assert not deploy.stale_files(tmp_path, fewer)


def test_rule_files_are_told_apart_from_other_prometheus_files(tmp_path: Path) -> None:
    source = tmp_path / deploy.RULES_SOURCE
    source.mkdir(parents=True)
    (source / "a.rules.yml").write_text(yaml.safe_dump({"groups": []}))
    (source / "a_test.yml").write_text(yaml.safe_dump({"rule_files": ["a.rules.yml"]}))
    (source / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": []}))
    (source / "broken.yml").write_text("groups: [")
    assert [p.name for p in deploy.rule_files(tmp_path)] == ["a.rules.yml"]


def test_chart_schema_carries_the_daemon_settings_and_policy_schemas() -> None:
    schema = json.loads((ROOT / deploy.CHART_SCHEMA).read_text())
    settings = schema["$defs"]["settings"]
    assert settings["additionalProperties"] is False
    assert {"reconciler", "aws", "log", "metrics"} <= settings["properties"].keys()
    assert not settings["properties"].keys() & {"http", "shard", "policy_file"}
    assert "external_id" not in settings["properties"]["aws"]["properties"]
    assert "$ref" not in json.dumps(settings)
    policy = schema["$defs"]["policyDocument"]
    assert policy["required"] == ["version", "scope"]
