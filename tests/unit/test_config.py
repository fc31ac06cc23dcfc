"""Daemon settings from POSTURE_* environment variables and an optional YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from daemon.config import (
    MetricsSettings,
    Settings,
    SettingsError,
    ShardSettings,
    load_settings,
    unknown_env_settings,
)

# A value that must never be echoed back in an error message.
CANARY = "zz-canary-value-7f3a91"


def settings_error(**overrides: object) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    return str(info.value)


def test_defaults() -> None:
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.http.port == 9717
    assert s.reconciler.workers == 32
    assert s.reconciler.interval_seconds == 60
    assert s.reconciler.cloudwatch_interval_seconds == 300
    assert s.shard.count == 1 and s.shard.resolved_index == 0
    assert s.metrics == MetricsSettings()
    assert s.aws.external_id is None
    assert s.aws.region == "us-east-1"  # from AWS_REGION (tests/conftest.py)
    assert s.config_file is None


def test_nested_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_RECONCILER__WORKERS", "16")
    monkeypatch.setenv("POSTURE_HTTP__PORT", "8080")
    monkeypatch.setenv("POSTURE_LOG__LEVEL", "debug")
    monkeypatch.setenv("POSTURE_METRICS__RESOURCE_SERIES", "false")
    monkeypatch.setenv("POSTURE_AWS__ROLE_NAME", "Audit/PostureReader")
    monkeypatch.setenv("POSTURE_POLICY_FILE", "/config/policy.yaml")
    s = load_settings()
    assert s.reconciler.workers == 16
    assert s.http.port == 8080
    assert s.log.level == "debug"
    assert s.metrics.resource_series is False
    assert s.aws.role_name == "Audit/PostureReader"
    assert s.policy_file == Path("/config/policy.yaml")


def test_env_var_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("posture_reconciler__workers", "3")
    assert load_settings().reconciler.workers == 3


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.reconciler.workers = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("var", "problem"),
    [
        ("POSTURE_RECONCILER__WORKERS", "valid integer"),
        ("POSTURE_HTTP__PORT", "valid integer"),
        ("POSTURE_RECONCILER__INTERVAL_SECONDS", "valid number"),
        ("POSTURE_METRICS__RESOURCE_SERIES", "valid boolean"),
        ("POSTURE_LOG__LEVEL", "'debug', 'info', 'warning' or 'error'"),
        ("POSTURE_AWS__ROLE_NAME", "pattern"),
    ],
)
def test_wrong_type_names_the_variable_but_not_the_value(
    monkeypatch: pytest.MonkeyPatch, var: str, problem: str
) -> None:
    value = CANARY if var != "POSTURE_AWS__ROLE_NAME" else f"bad role {CANARY}"
    monkeypatch.setenv(var, value)
    message = settings_error()
    assert f"{var}: " in message
    assert problem in message
    assert CANARY not in message


def test_out_of_range_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_RECONCILER__WORKERS", "0")
    monkeypatch.setenv("POSTURE_HTTP__PORT", "70000")
    message = settings_error()
    assert "POSTURE_RECONCILER__WORKERS: Input should be greater than or equal to 1" in message
    assert "POSTURE_HTTP__PORT: Input should be less than or equal to 65535" in message


def test_malformed_json_for_a_section_does_not_echo_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_HTTP", "{" + CANARY)
    message = settings_error()
    assert message.startswith("invalid settings")
    assert CANARY not in message


def test_unknown_top_level_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_FOO", CANARY)
    monkeypatch.setenv("POSTURE_RECONCILLER__WORKERS", "4")
    message = settings_error()
    assert message == "unknown setting(s): POSTURE_FOO, POSTURE_RECONCILLER__WORKERS"


def test_unknown_nested_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_HTTP__PROT", "8080")
    message = settings_error()
    assert "POSTURE_HTTP__PROT: Extra inputs are not permitted" in message


def test_unknown_env_settings_helper() -> None:
    env = {
        "POSTURE_HTTP__PORT": "1",
        "POSTURE_NOPE": "1",
        "posture_typo__x": "1",
        "PATH": "/usr/bin",
        "POSTURE_CONFIG_FILE": "/x",
    }
    assert unknown_env_settings(env) == ["POSTURE_NOPE", "posture_typo__x"]


# --- sharding ------------------------------------------------------------------------------------


def test_shard_index_from_statefulset_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_SHARD__POD_NAME", "posture-daemon-2")
    monkeypatch.setenv("POSTURE_SHARD__COUNT", "3")
    s = load_settings()
    assert s.shard.index is None
    assert s.shard.resolved_index == 2


def test_explicit_index_wins_over_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_SHARD__POD_NAME", "posture-daemon-2")
    monkeypatch.setenv("POSTURE_SHARD__COUNT", "3")
    monkeypatch.setenv("POSTURE_SHARD__INDEX", "0")
    assert load_settings().shard.resolved_index == 0


def test_out_of_range_shard_index_from_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_SHARD__POD_NAME", "posture-daemon-2")
    monkeypatch.setenv("POSTURE_SHARD__COUNT", "2")
    message = settings_error()
    assert "POSTURE_SHARD: " in message
    assert "shard index 2 is outside 0..1" in message


def test_out_of_range_explicit_shard_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_SHARD__INDEX", "1")
    assert "shard index 1 is outside 0..0" in settings_error()


def test_pod_name_without_ordinal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_SHARD__POD_NAME", "posture-daemon")
    monkeypatch.setenv("POSTURE_SHARD__COUNT", "2")
    assert "has no ordinal suffix" in settings_error()


def test_shard_settings_directly() -> None:
    assert ShardSettings(count=4, pod_name="posture-daemon-3").resolved_index == 3
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        ShardSettings(count=4, pod_name="posture-daemon-4")


# --- config file ---------------------------------------------------------------------------------


def test_yaml_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(
        "reconciler:\n  workers: 3\n  interval_seconds: 60\n"
        "http:\n  port: 9999\n"
        "metrics:\n  resource_series_limit: 500\n"
    )
    monkeypatch.setenv("POSTURE_CONFIG_FILE", str(path))
    monkeypatch.setenv("POSTURE_HTTP__PORT", "1234")  # the environment wins over the file
    s = load_settings()
    assert s.reconciler.workers == 3
    assert s.reconciler.interval_seconds == 60
    assert s.metrics.resource_series_limit == 500
    assert s.http.port == 1234
    assert s.config_file == path


def test_invalid_value_in_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(f"reconciler:\n  workers: {CANARY}\n")
    monkeypatch.setenv("POSTURE_CONFIG_FILE", str(path))
    message = settings_error()
    assert "POSTURE_RECONCILER__WORKERS: " in message
    assert CANARY not in message


def test_unreadable_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    monkeypatch.setenv("POSTURE_CONFIG_FILE", str(missing))
    message = settings_error()
    assert message == f"POSTURE_CONFIG_FILE={missing}: cannot read: No such file or directory"


def test_config_file_that_is_a_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POSTURE_CONFIG_FILE", str(tmp_path))
    assert "cannot read" in settings_error()


def test_config_file_that_is_not_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("reconciler: {workers: [\n")
    monkeypatch.setenv("POSTURE_CONFIG_FILE", str(path))
    assert settings_error().startswith("invalid settings: ")


# --- secrets -------------------------------------------------------------------------------------


def test_external_id_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTURE_AWS__EXTERNAL_ID", CANARY)
    s = load_settings()
    assert isinstance(s.aws.external_id, SecretStr)
    assert s.aws.external_id.get_secret_value() == CANARY
    assert CANARY not in repr(s)
    assert CANARY not in str(s)
    assert CANARY not in repr(s.aws)
    assert CANARY not in s.model_dump_json()


# --- the daemon refuses to start -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "file_text", "expected"),
    [
        pytest.param(
            {"POSTURE_RECONCILER__WORKERS": "many"},
            None,
            "POSTURE_RECONCILER__WORKERS: Input should be a valid integer",
            id="wrong-type",
        ),
        pytest.param(
            {"POSTURE_RECONCILER__WORKRS": "4"},
            None,
            "POSTURE_RECONCILER__WORKRS: Extra inputs are not permitted",
            id="unknown-nested-key",
        ),
        pytest.param(
            {"POSTURE_NOPE": CANARY}, None, "unknown setting(s): POSTURE_NOPE", id="unknown-key"
        ),
        pytest.param(
            {},
            "reconciler:\n  workerz: 3\n",
            "POSTURE_RECONCILER__WORKERZ: Extra inputs",
            id="file-key",
        ),
        pytest.param(
            {}, f"http:\n  port: {CANARY}\n", "POSTURE_HTTP__PORT: Input should be", id="file-type"
        ),
        pytest.param({}, "\0", "cannot read", id="unreadable-file"),
    ],
)
def test_run_exits_2_at_start_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    file_text: str | None,
    expected: str,
) -> None:
    from daemon.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if file_text is not None:
        path = tmp_path / "settings.yaml"
        if file_text == "\0":
            path = tmp_path / "missing.yaml"  # unreadable: it does not exist
        else:
            path.write_text(file_text)
        monkeypatch.setenv("POSTURE_CONFIG_FILE", str(path))
    assert main(["run", "--policy", str(tmp_path / "policy.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("posture-daemon: ")
    assert expected in err
    assert CANARY not in err and "Traceback" not in err
