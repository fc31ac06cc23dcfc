"""Loading the policy file: valid documents compile; every invalid one is a PolicyError that names
the field path and the YAML line, never a traceback."""

from __future__ import annotations

import contextlib
import datetime as dt
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.controls.reference import LAMBDA_RUNTIMES
from daemon.controls.registry import all_controls
from daemon.policy import LocatedProblem, Policy, PolicyError, load_policy, parse_policy_text

MINIMAL = """\
version: 1
scope:
  accounts: {own_account: true}
  regions: [us-east-1]
"""


def problems(text: str) -> list[LocatedProblem]:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text, source="policy.yaml")
    assert info.value.source == "policy.yaml"
    return info.value.problems


def located(text: str) -> set[tuple[str, int | None]]:
    return {(p.path, p.line) for p in problems(text)}


def single(text: str) -> LocatedProblem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- valid policies ------------------------------------------------------------------------------


def test_minimal_policy_compiles_every_control_with_defaults() -> None:
    policy = parse_policy_text(MINIMAL)
    assert isinstance(policy, Policy)
    # scope.services defaults to lambda: only its controls are compiled in
    assert set(policy.controls) == {c for c in all_controls() if c.startswith("lambda-")}
    for control_id, cc in policy.controls.items():
        ctrl = all_controls()[control_id]
        assert cc.base.enabled is ctrl.default_enabled
        assert cc.base.severity is ctrl.severity
        assert cc.base.params == ctrl.default_params()
        assert cc.overrides == ()
    assert policy.exemptions == ()
    assert policy.source == "<memory>"
    assert len(policy.digest) == 16 and set(policy.digest) <= set(string.hexdigits)
    assert policy.reference[LAMBDA_RUNTIMES]["python3.8"] == dt.date(2024, 10, 14)
    assert policy.document.scope.regions == ["us-east-1"]


def test_services_in_scope_select_their_controls() -> None:
    text = MINIMAL.replace(
        "regions: [us-east-1]", "regions: [us-east-1]\n  services: [ecr, ecs, rds]"
    )
    assert "services: [ecr, ecs, rds]" in text
    policy = parse_policy_text(text)
    assert isinstance(policy, Policy)
    assert {c.split("-", 1)[0] for c in policy.controls} == {"ecr", "ecs", "rds"}
    assert policy.controls_for("lambda") == []
    # opt-in controls are compiled but off until the policy turns them on
    assert not policy.controls["rds-non-default-port"].base.enabled
    assert policy.controls["rds-non-default-port"] not in policy.controls_for("rds")


def test_unknown_service_is_an_error_with_its_path() -> None:
    text = MINIMAL.replace("regions: [us-east-1]", "regions: [us-east-1]\n  services: [ecs, eks]")
    with pytest.raises(PolicyError) as exc:
        parse_policy_text(text)
    assert "scope.services[1]" in str(exc.value)


def test_digest_follows_the_text() -> None:
    assert parse_policy_text(MINIMAL).digest == parse_policy_text(MINIMAL).digest
    assert parse_policy_text(MINIMAL).digest != parse_policy_text(MINIMAL + "\n# note\n").digest


def test_full_policy() -> None:
    text = """\
version: 1
scope:
  accounts:
    static:
      - {id: "012345678901", name: prod}
    organizations: {enabled: true, exclude: [master]}
  regions: all
  services: [lambda]
controls:
  lambda-timeout-memory-bounds:
    severity: medium
    params: {max_timeout_seconds: 120}
    overrides:
      - match: {accounts: ["012345678901"], tags: {env: dev}}
        params: {max_timeout_seconds: 900}
  lambda-xray-active:
    enabled: false
exemptions:
  - id: SEC-123
    controls: [lambda-url-auth]
    resources: ["arn:aws:lambda:*:012345678901:function:public-*"]
    reason: public webhook, reviewed
    expires: 2027-03-31
reference:
  lambda_runtimes: {python3.12: 2026-01-01, provided.al2023: 2029-06-30}
"""
    policy = parse_policy_text(text)
    assert policy.document.scope.regions == "all"
    assert policy.document.scope.accounts.static[0].id == "012345678901"
    bounds = policy.controls["lambda-timeout-memory-bounds"]
    assert bounds.base.params.max_timeout_seconds == 120
    assert bounds.base.severity.value == "medium"
    ((match, eff),) = bounds.overrides
    assert match.tags == {"env": "dev"}
    assert eff.params.max_timeout_seconds == 900
    assert eff.severity.value == "medium"  # inherited from the control's settings
    assert not policy.controls["lambda-xray-active"].base.enabled
    assert policy.exemptions[0].expires == dt.date(2027, 3, 31)
    runtimes = policy.reference[LAMBDA_RUNTIMES]
    assert runtimes["python3.12"] == dt.date(2026, 1, 1)
    assert runtimes["provided.al2023"] == dt.date(2029, 6, 30)
    assert runtimes["python3.8"] == dt.date(2024, 10, 14)  # packaged entries stay


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    policy = load_policy(path)
    assert policy.source == str(path)
    assert policy.digest == parse_policy_text(MINIMAL).digest
    assert load_policy(str(path)).digest == policy.digest


# --- YAML-level errors ---------------------------------------------------------------------------


def test_invalid_yaml_syntax_has_its_line() -> None:
    text = """\
version: 1
scope:
  accounts: {own_account: true
  regions: [us-east-1]
"""
    p = single(text)
    assert p.path == "(yaml)"
    assert p.line == 4
    assert p.message.startswith("not valid YAML: ")
    assert "line 4: (yaml): not valid YAML" in str(p)


def test_tab_indentation_is_invalid_yaml() -> None:
    p = single("version: 1\nscope:\n\taccounts: {}\n")
    assert (p.path, p.line) == ("(yaml)", 3)


def test_duplicate_keys_are_rejected_with_the_line_of_the_second() -> None:
    text = """\
version: 1
scope:
  accounts: {own_account: true}
  regions: [us-east-1]
controls:
  lambda-xray-active:
    enabled: false
  lambda-url-auth: {}
  lambda-xray-active:
    enabled: true
"""
    p = single(text)
    assert (p.path, p.line, p.message) == ("controls.lambda-xray-active", 9, "duplicate key")


def test_nested_duplicate_keys_in_a_list_item() -> None:
    text = (
        MINIMAL
        + """\
exemptions:
  - controls: [lambda-url-auth]
    accounts: ["111111111111"]
    reason: first
    reason: second
    expires: 2030-01-01
"""
    )
    assert located(text) == {("exemptions[0].reason", 9)}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("- version: 1\n", id="list"),
        pytest.param("just a string\n", id="scalar"),
        pytest.param("", id="empty"),
        pytest.param("# only a comment\n", id="comment"),
        pytest.param("42\n", id="number"),
    ],
)
def test_document_must_be_a_mapping(text: str) -> None:
    p = single(text)
    assert (p.path, p.line) == ("(document)", 1)
    assert "must be a YAML mapping" in p.message


def _exemption_expiring(expires: str) -> str:
    return (
        MINIMAL
        + f"""\
exemptions:
  - controls: ["*"]
    accounts: ["111111111111"]
    reason: a date that does not exist
    expires: {expires}
"""
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(_exemption_expiring("2025-02-30"), 9, id="february-30"),
        pytest.param(_exemption_expiring("2025-13-01"), 9, id="month-13"),
        pytest.param(
            MINIMAL + "reference:\n  lambda_runtimes: {python3.9: 2025-12-32}\n",
            6,
            id="reference-date",
        ),
    ],
)
def test_impossible_dates_are_policy_errors_with_a_line(text: str, line: int) -> None:
    """PyYAML resolves an unquoted `YYYY-MM-DD` scalar to a date and raises ValueError (not a
    YAMLError) when the date does not exist. The loader must report it like any other mistake
    (and a policy reload must not die on it)."""
    p = single(text)
    assert p.line == line


# --- model validation errors ---------------------------------------------------------------------

MULTI = """\
version: 1
scope:
  accounts:
    static:
      - id: "111111111111"
        name: prod
      - id: 222222222222
  regions:
    - us-east-1
    - Mars-1
  services: [lambda, ec2]
controls: {}
exemptions:
  - controls: [lambda-url-auth]
    reason: no scope at all
    expires: 2030-01-01
  - controls: []
    resources: ["*"]
    reason: fine
    expires: 2030-01-01
"""


def test_every_model_error_has_its_path_and_line() -> None:
    found = {p.path: p for p in problems(MULTI)}
    assert {path: p.line for path, p in found.items()} == {
        "scope.accounts.static[1].id": 7,
        "scope.regions[1]": 10,
        "scope.services[1]": 11,
        "exemptions[0]": 14,
        "exemptions[1].controls": 17,
    }
    assert "quote account ids" in found["scope.accounts.static[1].id"].message
    assert "pattern" in found["scope.regions[1]"].message
    assert "lambda" in found["scope.services[1]"].message
    assert "must name resources, tags or accounts" in found["exemptions[0]"].message
    assert "at least 1 item" in found["exemptions[1].controls"].message


def test_error_message_lists_every_problem_with_its_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(MULTI, source="/etc/posture-daemon/policy.yaml")
    text = str(info.value)
    assert text.startswith("invalid policy /etc/posture-daemon/policy.yaml: 5 problems\n")
    assert "  line 7: scope.accounts.static[1].id: quote account ids" in text
    assert "  line 10: scope.regions[1]: " in text
    assert "Traceback" not in text


def test_unquoted_account_id_in_exemption_and_override() -> None:
    text = (
        MINIMAL
        + """\
controls:
  lambda-xray-active:
    overrides:
      - match: {accounts: [111111111111]}
        enabled: false
exemptions:
  - controls: [lambda-url-auth]
    accounts:
      - 222222222222
    reason: unquoted
    expires: 2030-01-01
"""
    )
    found = problems(text)
    assert {(p.path, p.line) for p in found} == {
        ("controls.lambda-xray-active.overrides[0].match.accounts[0]", 8),
        ("exemptions[0].accounts[0]", 13),
    }
    assert all("quote account ids ('012345678901')" in p.message for p in found)


def test_account_ids_must_have_twelve_digits() -> None:
    text = 'version: 1\nscope:\n  accounts:\n    static: [{id: "12345"}]\n  regions: all\n'
    p = single(text)
    assert (p.path, p.line) == ("scope.accounts.static[0].id", 4)


def test_regions_all_is_accepted_other_words_are_not() -> None:
    policy = parse_policy_text(MINIMAL.replace("[us-east-1]", "all"))
    assert policy.document.scope.regions == "all"
    p = single(MINIMAL.replace("[us-east-1]", "everywhere"))
    assert (p.path, p.line) == ("scope.regions", 4)


def test_empty_region_list_is_rejected() -> None:
    p = single(MINIMAL.replace("[us-east-1]", "[]"))
    assert (p.path, p.line) == ("scope.regions", 4)
    assert "at least one region" in p.message


def test_nothing_to_scan_is_rejected() -> None:
    p = single("version: 1\nscope:\n  accounts: {}\n  regions: all\n")
    assert (p.path, p.line) == ("scope.accounts", 3)
    assert "no accounts to scan" in p.message


def test_missing_and_unknown_top_level_fields() -> None:
    assert located("version: 1\n") == {("scope", 1)}
    assert located(MINIMAL + "owner: security\n") == {("owner", 5)}
    assert located(MINIMAL.replace("version: 1", "version: 2")) == {("version", 1)}


def test_override_must_match_something() -> None:
    text = (
        MINIMAL
        + """\
controls:
  lambda-xray-active:
    overrides:
      - match: {}
        enabled: false
"""
    )
    p = single(text)
    assert (p.path, p.line) == ("controls.lambda-xray-active.overrides[0].match", 8)


def test_exemption_reason_and_expiry_are_required() -> None:
    text = (
        MINIMAL
        + """\
exemptions:
  - controls: [lambda-url-auth]
    resources: ["*"]
    reason: "  "
"""
    )
    assert located(text) == {("exemptions[0].reason", 8), ("exemptions[0].expires", 6)}


# --- compile errors: control ids and parameters --------------------------------------------------


def test_unknown_control_id() -> None:
    text = (
        MINIMAL
        + """\
controls:
  lambda-url-auth: {}
  lambda-no-such-control:
    enabled: true
"""
    )
    p = single(text)
    assert (p.path, p.line, p.message) == (
        "controls.lambda-no-such-control",
        8,
        "unknown control id",
    )


def test_bad_control_params_have_path_and_line() -> None:
    text = (
        MINIMAL
        + """\
controls:
  lambda-timeout-memory-bounds:
    params:
      max_timeout_seconds: 5000
      min_memory_mb: 256
      max_memmory_mb: 512
"""
    )
    found = {p.path: p for p in problems(text)}
    assert {path: p.line for path, p in found.items()} == {
        "controls.lambda-timeout-memory-bounds.params.max_timeout_seconds": 8,
        "controls.lambda-timeout-memory-bounds.params.max_memmory_mb": 10,
    }
    assert (
        "less than or equal to 900"
        in found["controls.lambda-timeout-memory-bounds.params.max_timeout_seconds"].message
    )
    assert (
        "Extra inputs"
        in found["controls.lambda-timeout-memory-bounds.params.max_memmory_mb"].message
    )


def test_wrong_param_type_in_a_list() -> None:
    text = (
        MINIMAL
        + """\
controls:
  lambda-layers-trusted:
    params:
      trusted_accounts:
        - "222222222222"
        - {id: "333333333333"}
"""
    )
    p = single(text)
    assert (p.path, p.line) == ("controls.lambda-layers-trusted.params.trusted_accounts[1]", 10)


def test_override_params_are_validated_with_their_own_path() -> None:
    text = (
        MINIMAL
        + """\
controls:
  lambda-timeout-memory-bounds:
    params: {max_timeout_seconds: 120}
    overrides:
      - match: {tags: {env: dev}}
        params: {max_timeout_seconds: 900}
      - match: {regions: [eu-west-1]}
        params:
          min_memory_mb: 64
"""
    )
    p = single(text)
    assert p.path == "controls.lambda-timeout-memory-bounds.overrides[1].params.min_memory_mb"
    assert p.line == 13
    assert "greater than or equal to 128" in p.message


def test_exemption_referencing_unknown_control() -> None:
    text = (
        MINIMAL
        + """\
exemptions:
  - controls:
      - lambda-url-auth
      - lambda-url-auht
    resources: ["*"]
    reason: typo in the control id
    expires: 2030-01-01
"""
    )
    p = single(text)
    assert (p.path, p.line, p.message) == ("exemptions[0].controls[1]", 8, "unknown control id")


def test_exemption_for_every_control_is_allowed() -> None:
    text = (
        MINIMAL
        + """\
exemptions:
  - controls: ["*"]
    tags: {posture/exempt: "true"}
    reason: reviewed sandbox
    expires: 2030-01-01
"""
    )
    assert parse_policy_text(text).exemptions[0].controls == ["*"]


def test_invalid_regular_expression_parameter_is_rejected() -> None:
    """name_patterns are regular expressions; one that does not compile makes the control raise
    on every function of every account after the policy was accepted (and hot-reloaded)."""
    text = (
        MINIMAL
        + """\
controls:
  lambda-env-no-plaintext-secrets:
    params:
      name_patterns:
        - "(?i)password"
        - "(?i)api[_-key"
"""
    )
    p = single(text)
    assert p.path.startswith("controls.lambda-env-no-plaintext-secrets.params.name_patterns")
    assert p.line == (10 if p.path.endswith("[1]") else 8)


def test_unknown_value_detector_is_rejected() -> None:
    """A misspelt detector name would silently turn that detector off for a critical control."""
    text = (
        MINIMAL
        + """\
controls:
  lambda-env-no-plaintext-secrets:
    params:
      value_detectors: [aws_access_key_id, aws_secret_acess_key]
"""
    )
    p = single(text)
    assert p.path.startswith("controls.lambda-env-no-plaintext-secrets.params.value_detectors")
    assert p.line == 8


def test_bad_reference_runtime_name() -> None:
    p = single(MINIMAL + "reference:\n  lambda_runtimes: {Python 3.9: 2025-12-15}\n")
    assert (p.path, p.line) == ("reference.lambda_runtimes", 6)
    assert "'Python 3.9' is not a runtime identifier" in p.message


# --- files ---------------------------------------------------------------------------------------


def test_missing_file_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (p,) = info.value.problems
    assert (p.path, p.line) == ("(file)", None)
    assert p.message == "cannot read: No such file or directory"
    assert info.value.source == str(path)
    assert (
        str(info.value) == f"invalid policy {path}: (file): cannot read: No such file or directory"
    )


def test_directory_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path)


def test_non_utf8_file_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + "# r\xe9gion\n".encode("latin-1"))
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(path)


def test_invalid_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL.replace("[us-east-1]", "[nowhere]"))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"invalid policy {path}: line 4: scope.regions[0]: ")


# --- property: junk never escapes as anything but PolicyError ------------------------------------

KEYS = [
    "version",
    "scope",
    "accounts",
    "static",
    "organizations",
    "own_account",
    "regions",
    "services",
    "controls",
    "exemptions",
    "reference",
    "lambda_runtimes",
    "enabled",
    "severity",
    "params",
    "overrides",
    "match",
    "tags",
    "id",
    "name",
    "resources",
    "reason",
    "expires",
    *sorted(all_controls()),
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["all", "lambda", "us-east-1", "111111111111", "*", "high", "2030-01-01"])
    | st.dates()
)
junk = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def _policy_like() -> st.SearchStrategy[dict[str, Any]]:
    scope = st.fixed_dictionaries(
        {},
        optional={
            "accounts": st.fixed_dictionaries(
                {},
                optional={
                    "own_account": st.booleans() | junk,
                    "static": st.lists(
                        st.fixed_dictionaries(
                            {"id": st.sampled_from(["111111111111", "x"]) | junk}
                        ),
                        max_size=2,
                    ),
                },
            )
            | junk,
            "regions": st.sampled_from(["all", ["us-east-1"], ["eu-west-1", "bad"]]) | junk,
            "services": st.just(["lambda"]) | junk,
        },
    )
    control_settings = st.fixed_dictionaries(
        {},
        optional={
            "enabled": st.booleans() | junk,
            "severity": st.sampled_from(["low", "high", "urgent"]) | junk,
            "params": st.dictionaries(
                st.text(max_size=24)
                | st.sampled_from(
                    [
                        "max_timeout_seconds",
                        "alias",
                        "required",
                        "name_patterns",
                        "allowed_accounts",
                    ]
                ),
                junk,
                max_size=3,
            ),
            "overrides": st.lists(
                st.fixed_dictionaries({"match": junk}, optional={"params": junk, "severity": junk}),
                max_size=2,
            ),
        },
    )
    exemption = st.fixed_dictionaries(
        {},
        optional={
            "controls": st.lists(
                st.sampled_from([*sorted(all_controls()), "*", "nope"]) | junk, max_size=3
            ),
            "resources": junk,
            "tags": junk,
            "accounts": junk,
            "reason": junk,
            "expires": st.dates() | junk,
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "version": st.sampled_from([1, 2, "1"]) | junk,
            "scope": scope | junk,
            "controls": st.dictionaries(
                st.sampled_from(sorted(all_controls())) | st.text(max_size=10),
                control_settings | junk,
                max_size=3,
            ),
            "exemptions": st.lists(exemption | junk, max_size=2),
            "reference": st.fixed_dictionaries(
                {
                    "lambda_runtimes": st.dictionaries(
                        st.text(max_size=10), st.dates() | junk, max_size=2
                    )
                }
            )
            | junk,
        },
    )


def _parse_never_crashes(document: Any) -> None:
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    try:
        policy = parse_policy_text(text)
    except PolicyError as exc:
        assert exc.problems
        for p in exc.problems:
            assert isinstance(p.path, str) and p.path
            assert p.line is None or (isinstance(p.line, int) and p.line >= 1)
            assert p.message
        assert str(exc).startswith("invalid policy <memory>")
    else:
        assert isinstance(policy, Policy)


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(junk)
def test_random_junk_documents_only_raise_policy_error(document: Any) -> None:
    _parse_never_crashes(document)


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(_policy_like())
def test_random_policy_shaped_documents_only_raise_policy_error(document: dict[str, Any]) -> None:
    _parse_never_crashes(document)


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.text(
        alphabet=st.sampled_from(list(":-[]{}#&*!|>'\"%@`,?\n 0123456789abcxyz\t")), max_size=60
    )
)
def test_random_text_only_raises_policy_error(text: str) -> None:
    with contextlib.suppress(PolicyError):
        parse_policy_text(text)
