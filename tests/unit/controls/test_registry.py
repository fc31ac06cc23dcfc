"""The control catalogue: metadata of every control, registration checks, generated docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import Field

from daemon import docs
from daemon.controls.registry import (
    CONTROL_ID,
    ControlDefinitionError,
    NoParams,
    Params,
    all_controls,
    control,
    controls_for,
    get_control,
    passed,
    services,
)
from daemon.model import Severity, ecr, ecs, rds
from daemon.model import awslambda as m

CATALOGUE = all_controls()
IDS = sorted(CATALOGUE)
KNOWN_ASPECTS = {
    value
    for module in (m, ecr, ecs, rds)
    for name, value in vars(module).items()
    if name.startswith("ASPECT_") and isinstance(value, str)
}
RESOURCE_TYPES = {
    m.FUNCTION,
    m.LAYER_VERSION,
    m.ACCOUNT_REGION,
    ecr.REPOSITORY,
    ecs.TASK_DEFINITION,
    ecs.SERVICE,
    ecs.CLUSTER,
    rds.DB_INSTANCE,
    rds.DB_CLUSTER,
    rds.DATABASE,
    rds.SNAPSHOT,
}


def test_catalogue_is_sorted_by_id() -> None:
    assert CATALOGUE
    assert list(CATALOGUE) == IDS


@pytest.mark.parametrize("control_id", IDS)
def test_control_metadata_is_complete(control_id: str) -> None:
    c = CATALOGUE[control_id]
    assert c.id == control_id
    assert CONTROL_ID.match(c.id)
    assert c.id.startswith(c.service + "-")
    assert c.service in services()
    assert c.resource_type in RESOURCE_TYPES
    assert isinstance(c.severity, Severity)
    for text in (c.title, c.rationale, c.remediation):
        assert text.strip() == text and len(text) > 10
        assert "\n" not in text and "  " not in text  # whitespace is normalised at registration
    assert set(c.requires) <= KNOWN_ASPECTS
    assert callable(c.evaluate)


@pytest.mark.parametrize("control_id", IDS)
def test_params_all_have_defaults_and_forbid_unknown_keys(control_id: str) -> None:
    c = CATALOGUE[control_id]
    assert issubclass(c.params_model, Params)
    defaults = c.default_params()
    assert isinstance(defaults, c.params_model)
    for name, field in c.params_model.model_fields.items():
        assert not field.is_required(), f"{control_id}.{name} has no default"
    assert c.params_model.model_config.get("extra") == "forbid"
    with pytest.raises(ValueError, match="Extra inputs"):
        c.params_model.model_validate({"no_such_parameter": 1})


def test_lookups() -> None:
    assert get_control("lambda-url-auth").title == "Function URL requires IAM authentication"
    with pytest.raises(KeyError):
        get_control("lambda-no-such-control")
    assert services() == ["ecr", "ecs", "lambda", "rds"]
    assert [c.id for c in controls_for("lambda")] == [i for i in IDS if i.startswith("lambda-")]
    assert controls_for("s3") == []


def test_policy_services_are_the_catalogue_services() -> None:
    from typing import get_args

    from daemon.policy.models import ServiceName

    assert sorted(get_args(ServiceName)) == services()


def test_every_control_is_exercised_by_unit_tests() -> None:
    here = Path(__file__).parent
    source = "\n".join(
        p.read_text() for p in here.glob("test_*.py") if p.name != Path(__file__).name
    )
    for service in services():
        untested = [c.id for c in controls_for(service) if f'"{c.id}"' not in source]
        assert not untested, f"{service}: no unit tests for {untested}"


def test_opt_in_controls() -> None:
    off = sorted(c.id for c in CATALOGUE.values() if not c.default_enabled)
    assert off == [
        "ecr-in-use-images-no-critical-findings",
        "lambda-log-export",
        "rds-backup-plan",
        "rds-non-default-port",
    ]


def test_severities_and_mappings_of_key_controls() -> None:
    assert CATALOGUE["lambda-env-no-plaintext-secrets"].severity is Severity.CRITICAL
    assert CATALOGUE["lambda-resource-policy-restricted"].security_hub == "Lambda.1"
    assert CATALOGUE["lambda-resource-policy-restricted"].requires == (m.ASPECT_POLICY,)
    assert CATALOGUE["lambda-config-recording"].resource_type == m.ACCOUNT_REGION
    assert CATALOGUE["lambda-layer-not-public"].resource_type == m.LAYER_VERSION
    assert CATALOGUE["ecr-image-scanning"].security_hub == "ECR.1"
    assert CATALOGUE["ecs-task-no-environment-secrets"].severity is Severity.CRITICAL
    assert CATALOGUE["ecs-task-no-environment-secrets"].aws_config_rule == (
        "ecs-no-environment-secrets"
    )
    assert CATALOGUE["rds-instance-not-public"].resource_type == rds.DB_INSTANCE
    assert CATALOGUE["rds-storage-encrypted"].resource_type == rds.DATABASE
    assert CATALOGUE["rds-security-group-no-public-ingress"].requires == (
        rds.ASPECT_SECURITY_GROUPS,
    )


# --- registration validation (every failing case raises before anything is registered) -----------


def _noop(resource: object, params: object, ctx: object) -> None:
    return None


def _register(**overrides: object) -> None:
    kwargs: dict[str, object] = {
        "id": "lambda-unit-test-probe",
        "service": "lambda",
        "resource_type": m.FUNCTION,
        "title": "Probe",
        "severity": Severity.LOW,
        "rationale": "Only used to check registration errors.",
        "remediation": "None.",
        "params": NoParams,
    }
    kwargs.update(overrides)
    control(**kwargs)(_noop)  # type: ignore[arg-type]


class _NeedsValue(Params):
    threshold: int = Field(description="no default")


class _Lenient(Params):
    model_config = {"extra": "ignore", "frozen": True}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"id": "LambdaProbe"}, "kebab-case"),
        ({"id": "probe"}, "kebab-case"),
        ({"id": "ecs-probe-check"}, "must start with its service"),
        ({"title": "  "}, "title is empty"),
        ({"rationale": ""}, "rationale is empty"),
        ({"remediation": "\n"}, "remediation is empty"),
        ({"params": _NeedsValue}, "every parameter needs a default"),
        ({"params": _Lenient}, "must forbid unknown keys"),
        ({"id": "lambda-url-auth"}, "registered twice"),
    ],
)
def test_bad_definitions_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ControlDefinitionError, match=message):
        _register(**overrides)
    assert all_controls() == CATALOGUE  # nothing was added or replaced


def test_outcome_helpers() -> None:
    outcome = passed("fine")
    assert outcome.status.value == "pass" and outcome.evidence == "fine"


# --- generated reference documentation -----------------------------------------------------------


def test_controls_markdown_documents_every_control_and_parameter() -> None:
    text = docs.controls_markdown()
    for c in CATALOGUE.values():
        assert f"\n## {c.id}\n" in text
        assert f"[`{c.id}`](#{c.id})" in text  # table row
        assert c.rationale in text and c.remediation in text
        assert f"severity `{c.severity.value}`" in text
        for name, field in c.params_model.model_fields.items():
            default = field.default if field.default_factory is None else field.default_factory()
            assert f"| `{name}` | `{json.dumps(default)}` |" in text
        for aspect in c.requires:
            assert f"`{aspect}`" in text
    assert text.count("No parameters.") == sum(
        1 for c in CATALOGUE.values() if not c.params_model.model_fields
    )


def test_controls_json_lists_parameters() -> None:
    by_id = {entry["id"]: entry for entry in docs.controls_json()}
    assert set(by_id) == set(IDS)
    secrets = by_id["lambda-env-no-plaintext-secrets"]
    assert {"name_patterns", "ignore_name_suffixes", "value_detectors"} <= set(
        secrets["parameters"]
    )
    assert by_id["lambda-xray-active"]["parameters"] == {}


def test_docs_check_detects_missing_and_stale_files(tmp_path: Path) -> None:
    assert docs.main(["--check", "--dir", str(tmp_path)]) == 1
    assert docs.main(["--dir", str(tmp_path)]) == 0
    assert (tmp_path / "controls.md").read_text() == docs.controls_markdown()
    assert docs.main(["--check", "--dir", str(tmp_path)]) == 0
    metrics = tmp_path / "metrics.md"
    metrics.write_text(metrics.read_text() + "edited by hand\n")
    assert docs.main(["--check", "--dir", str(tmp_path)]) == 1
