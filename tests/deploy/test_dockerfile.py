"""The Dockerfile: lint-clean, shaped as reviewers expect, and its build steps really work.

No container engine runs here, so the build stage's own RUN steps are replayed in a fresh
directory holding only what its COPY instructions copy (a missing COPY fails), with the stage's
ENV and the image's paths moved under a temporary directory. The venv they build then runs the
daemon with the final stage's environment, and must not write into its own install tree (the
image's root filesystem is read-only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon.config import HttpSettings

from .dockerfile import Stage, parse

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent
IMAGE_VENV = "/opt/posture-daemon"
DEV_ONLY = ("moto", "pytest", "ruff", "mypy", "hypothesis", "pip", "setuptools")


def _hadolint(path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-fail", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout)
    return findings


def test_hadolint_reports_nothing_above_info(tmp_path: Path) -> None:
    findings = _hadolint(DOCKERFILE)
    above_info = [f for f in findings if f["level"] in ("error", "warning")]
    assert not above_info, json.dumps(above_info, indent=2)
    # the linter really runs: a careless Dockerfile is flagged
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    codes = {f["code"] for f in _hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3002"} <= codes


def _stages() -> tuple[dict[str, str], Stage, Stage]:
    args, stages = parse(DOCKERFILE)
    assert len(stages) == 2, "a build stage and a runtime stage"
    return args, stages[0], stages[1]


def test_final_stage_is_slim_non_root_and_exec_form() -> None:
    args, build, final = _stages()
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base  # the Python constraints are for
    assert build.base == final.base == "${PYTHON_IMAGE}"
    assert build.name == "build"

    (user,) = final.all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0, user.args

    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint.exec_form() == ["posture-daemon", "run"]
    assert not final.all("CMD")
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "/livez" in healthcheck.args and "CMD [" in healthcheck.args

    labels = " ".join(i.args for i in final.all("LABEL"))
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels

    env = final.env()
    assert env["HOME"] == "/tmp" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith(f"{IMAGE_VENV}/bin:")
    (expose,) = final.all("EXPOSE")
    assert int(expose.args) == HttpSettings().port

    # nothing is built or installed in the final stage; it only receives the venv
    for run in final.all("RUN"):
        assert not re.search(r"\b(install|apt|gcc|make|build)\b", run.args.replace("uninstall", ""))
    copies = final.all("COPY")
    assert [c.args for c in copies] == [f"--from=build {IMAGE_VENV} {IMAGE_VENV}"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file()
    }


def _copy_context(build: Stage, src: Path) -> None:
    """What the build stage's COPY instructions put into its WORKDIR (and nothing else)."""
    (workdir,) = build.all("WORKDIR")
    assert workdir.args == "/src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for copy in build.all("COPY"):
        assert not copy.args.startswith("--"), copy.args
        *sources, dest = copy.args.split()
        target = src / dest
        for source in sources:
            path = ROOT / source.rstrip("/")
            if path.is_dir():
                shutil.copytree(path, target, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Replay the build stage: same commands, same ENV, same constraints, a fresh venv."""
    _, build, _ = _stages()
    tmp = tmp_path_factory.mktemp("image")
    src = tmp / "src"
    src.mkdir()
    _copy_context(build, src)
    venv = tmp / IMAGE_VENV.lstrip("/")
    venv.parent.mkdir(parents=True)
    shims = tmp / "shims"  # `python` is the base image's interpreter (3.11, outside any venv)
    shims.mkdir()
    (shims / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "POSTURE_"))
    }
    env.update(build.env())
    env.pop("PIP_NO_CACHE_DIR", None)  # the image keeps no cache; the test may reuse pip's
    env["PATH"] = f"{shims}:{env['PATH']}"
    runs = build.all("RUN")
    assert runs
    for run in runs:
        command = run.args.replace(IMAGE_VENV, str(venv))
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            check=False,
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"RUN {run.args}\n{result.stdout}\n{result.stderr}"
    return venv


def _venv_python(venv: Path, code: str) -> str:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_build_stage_installs_exactly_the_pinned_runtime_dependencies(image_venv: Path) -> None:
    installed = json.loads(
        _venv_python(
            image_venv,
            "import json, importlib.metadata as m;"
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        )
    )
    pins = _pins()
    names = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in installed.items()}
    assert names.pop("posture-daemon")
    unpinned = sorted(n for n in names if n not in pins)
    assert not unpinned, f"installed without a pin in constraints.txt: {unpinned}"
    drift = {n: (v, pins[n]) for n, v in names.items() if pins[n] != v}
    assert not drift, f"installed versions differ from constraints.txt: {drift}"
    present = [n for n in DEV_ONLY if n in names]
    assert not present, f"build tools or dev dependencies in the image: {present}"
    # the code the image runs imports with the runtime dependencies alone
    _venv_python(image_venv, "import daemon.app, daemon.cli, daemon.server, daemon.reconciler")


def test_image_venv_runs_the_daemon_without_writing_to_its_install_tree(
    image_venv: Path, tmp_path: Path
) -> None:
    _, _, final = _stages()
    image_env = final.env()
    before = _tree(image_venv)
    validate = subprocess.run(
        [
            str(image_venv / "bin" / "posture-daemon"),
            "validate",
            str(ROOT / "daemon/demo/policy.yaml"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validate.returncode == 0, validate.stderr

    port = _free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nscope:\n  accounts:\n    static: [{id: '111111111111'}]\n"
        "  regions: [us-east-1]\n"
    )
    env = {
        "PATH": image_env["PATH"]
        .replace(IMAGE_VENV, str(image_venv))
        .replace("$PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),  # /tmp in the image
        "PYTHONDONTWRITEBYTECODE": image_env["PYTHONDONTWRITEBYTECODE"],
        "PYTHONUNBUFFERED": "1",
        "POSTURE_LOG__FORMAT": image_env["POSTURE_LOG__FORMAT"],
        "POSTURE_POLICY_FILE": str(policy),
        "POSTURE_HTTP__HOST": "127.0.0.1",
        "POSTURE_HTTP__PORT": str(port),
        # no AWS here: every call fails fast, the daemon stays up and unready
        "AWS_ACCESS_KEY_ID": "image-test",
        "AWS_SECRET_ACCESS_KEY": "image-test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "POSTURE_AWS__MAX_ATTEMPTS": "1",
    }
    (entry, *args) = final.all("ENTRYPOINT")[0].exec_form() or []
    proc = subprocess.Popen(
        [shutil.which(entry, path=env["PATH"]) or entry, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while _get(f"http://127.0.0.1:{port}/livez") != 200:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the daemon did not serve /livez"
            time.sleep(0.1)
        # AWS is unreachable: the first reconcile fails, and the daemon reports it
        while _get(f"http://127.0.0.1:{port}/readyz") != 200:
            assert time.monotonic() < deadline, "no first reconcile"
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'posture_target_up{aws_account_id="111111111111"' in metrics
        assert re.search(r"^posture_target_up\{[^}]*\} 0\.0$", metrics, re.MULTILINE)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert _tree(image_venv) == before, "the daemon wrote into its install tree"
    # JSON logs, as the image asks for
    assert all(line.startswith("{") for line in output.splitlines() if line.strip()), output
