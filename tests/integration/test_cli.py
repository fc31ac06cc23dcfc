"""The command line as users and CI pipelines run it: exit codes, messages, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.demo.estate import PRIMARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto

from .conftest import policy_for


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


GOOD = """\
version: 1
scope:
  accounts:
    static:
      - id: "111111111111"
  regions: [us-east-1]
"""


def test_validate_accepts_a_good_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    proc = cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout


@pytest.mark.parametrize(
    ("mutation", "line", "fragment"),
    [
        ('      - id: "111111111111"\n', 5, "scope.accounts.static[0].id"),
        ("  regions: [us-east-1]\n", 6, "scope.regions"),
        (
            "controls:\n  lambda-xray-active:\n    params: {nope: 1}\n",
            9,
            "controls.lambda-xray-active.params.nope",
        ),
        ("controls:\n  lambda-unknown: {}\n", 8, "controls.lambda-unknown: unknown control id"),
        ("scope: [\n", None, "not valid YAML"),
    ],
)
def test_validate_names_the_field_and_line(
    tmp_path: Path, mutation: str, line: int | None, fragment: str
) -> None:
    text = GOOD
    if mutation.startswith("      - id"):
        text = text.replace(mutation, "      - id: 1234\n")
    elif mutation.startswith("  regions"):
        text = text.replace(mutation, "  regions: [us-east-1, atlantis]\n")
    elif mutation.startswith("scope: ["):
        text = "version: 1\nscope: [\n"
    else:
        text = text + mutation
    path = tmp_path / "p.yaml"
    path.write_text(text)
    proc = cli("validate", str(path))
    assert proc.returncode == 2
    assert fragment in proc.stderr
    if line is not None:
        assert f"line {line}:" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli("validate", str(tmp_path / "absent.yaml"))
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"POSTURE_RECONCILER__WORKERS": "many-secret-value"}, "POSTURE_RECONCILER__WORKERS"),
        ({"POSTURE_INTERVAL": "5"}, "unknown setting(s): POSTURE_INTERVAL"),
        ({"POSTURE_SHARD__COUNT": "2", "POSTURE_SHARD__INDEX": "2"}, "outside 0..1"),
    ],
)
def test_invalid_settings_exit_2_without_echoing_values(
    tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    proc = cli("check", "--policy", str(path), env=env)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "many-secret-value" not in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_check_exit_codes_and_json(moto: EmbeddedMoto, tmp_path: Path) -> None:
    account = "121212121212"
    await seed_estate([account], [PRIMARY], only=["orders-api", "untraced"])
    path = policy_for([account], tmp_path, regions=[PRIMARY])

    proc = cli("check", "--policy", str(path), "--output", "json")
    assert proc.returncode == 1, proc.stderr  # a low-severity violation exists (X-Ray)
    report = json.loads(proc.stdout)
    assert report["summary"]["violations_by_severity"]["low"] == 1
    # the seeded primary region also holds a publicly shared layer version (high)...
    controls = {f["control"] for f in report["findings"] if f["status"] == "fail"}
    assert controls == {"lambda-xray-active", "lambda-layer-not-public"}

    # ...so nothing at or above critical
    proc = cli("check", "--policy", str(path), "--fail-on", "critical")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lambda-xray-active" in proc.stdout and "untraced" in proc.stdout

    proc = cli("check", "--policy", str(path), "--fail-on", "high")
    assert proc.returncode == 1  # the public layer is high


async def test_check_reports_unreachable_targets_as_incomplete(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    path = policy_for(["131313131313"], tmp_path, regions=[PRIMARY])
    # an endpoint nobody listens on: every call fails after retries
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "POSTURE_AWS__MAX_ATTEMPTS": "1"}
    proc = cli("check", "--policy", str(path), "--fail-on", "none", env=env)
    assert proc.returncode == 3
    assert "FAILED" in proc.stdout and "Traceback" not in proc.stderr
