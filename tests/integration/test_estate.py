"""The seeded estate (3 accounts reached by AssumeRole x 2 regions) through the real daemon.

One module fixture runs the daemon once (HTTP server, reconciler, moto over HTTP) and the `check`
command once, and keeps everything they produced; the tests below assert on it.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from daemon.cli import main as cli_main
from daemon.demo.estate import (
    DEMO_REGIONS,
    SEEDED_SECRETS,
    Violation,
    expected_violations,
    functions_in,
)
from daemon.logging import setup_logging
from daemon.metrics import names

from .conftest import policy_for
from .harness import Sample, get, parse_exposition, running_daemon, select, settings_for, value

LAMBDA_CONTROLS_MOTO_CANNOT_SEED = {"lambda-layers-trusted"}


@dataclass
class EstateRun:
    accounts: tuple[str, ...]
    exposition: str
    samples: list[Sample]
    readyz: tuple[int, str]
    livez: tuple[int, str]
    logs: str
    check_exit: int
    report: dict[str, Any]
    controls: set[str]


@pytest.fixture(scope="module")
def run(estate: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory) -> EstateRun:
    policy = policy_for(estate, tmp_path_factory.mktemp("estate"))
    logs = io.StringIO()
    setup_logging("debug", "json", stream=logs)
    settings = settings_for(policy, reconciler={"interval_seconds": 300})

    async def daemon_run() -> tuple[str, tuple[int, str], tuple[int, str], set[str]]:
        async with running_daemon(settings) as daemon:
            _, text = await get(daemon, "/metrics")
            return (
                text,
                await get(daemon, "/readyz"),
                await get(daemon, "/livez"),
                set(daemon.policy.current.controls),
            )

    text, readyz, livez, controls = asyncio.run(daemon_run())
    out = io.StringIO()
    code = cli_main(["check", "--policy", str(policy), "--output", "json"], out)
    setup_logging("info", "json")
    return EstateRun(
        estate,
        text,
        parse_exposition(text),
        readyz,
        livez,
        logs.getvalue(),
        code,
        json.loads(out.getvalue()),
        controls,
    )


def test_check_finds_exactly_the_seeded_violations(run: EstateRun) -> None:
    report = run.report
    assert run.check_exit == 1  # violations at or above the default --fail-on low
    assert {(t["aws_account_id"], t["aws_region"], t["status"]) for t in report["targets"]} == {
        (a, r, "ok") for a in run.accounts for r in DEMO_REGIONS
    }
    findings = report["findings"]
    got = {
        Violation(f["aws_account_id"], f["aws_region"], f["control"], f["resource"])
        for f in findings
        if f["status"] == "fail" and not f["exempted"]
    }
    assert got == expected_violations(run.accounts)
    assert report["summary"]["errors"] == 0
    required = {
        "resource",
        "resource_type",
        "aws_account_id",
        "aws_region",
        "control",
        "severity",
        "status",
        "exempted",
        "evidence",
    }
    assert all(required <= set(f) for f in findings)
    # the tag exemption applies (a failure, not a violation) ...
    partner = [
        f
        for f in findings
        if f["resource"].endswith(":function:partner-webhook") and f["control"] == "lambda-url-auth"
    ]
    assert len(partner) == len(run.accounts)
    assert all(
        f["status"] == "fail" and f["exempted"] and f["exemption_reason"] == "SEC-101"
        for f in partner
    )
    # ... and the expired one is reported without applying
    old = [
        f for f in findings if f["control"] == "lambda-runtime-supported" and f["status"] == "fail"
    ]
    assert old and all(f["exemption_expired"] and not f["exempted"] for f in old)


def test_metrics_show_every_seedable_lambda_control_violated(run: EstateRun) -> None:
    lambda_controls = {c for c in run.controls if c.startswith("lambda-")}
    violated = {s[1]["control"] for s in select(run.samples, "posture_violations") if s[2] > 0}
    assert violated == lambda_controls - LAMBDA_CONTROLS_MOTO_CANNOT_SEED


@pytest.mark.parametrize("region", DEMO_REGIONS)
def test_violation_counts_and_series_match_the_estate(run: EstateRun, region: str) -> None:
    account = run.accounts[0]
    expected = expected_violations([account], [region])
    for control in {c for c in run.controls if c.startswith("lambda-")}:
        rows = select(
            run.samples,
            "posture_violations",
            aws_account_id=account,
            aws_region=region,
            control=control,
        )
        assert rows, f"no zero-initialised series for {control}"
        assert sum(r[2] for r in rows) == sum(1 for v in expected if v.control == control), control
    per_resource = {
        (s[1]["control"], s[1]["resource"])
        for s in select(
            run.samples, "posture_resource_violation", aws_account_id=account, aws_region=region
        )
    }
    assert per_resource == {(v.control, v.resource) for v in expected}
    assert value(run.samples, "posture_resource_series_dropped") == 0


def test_denominators_exemptions_and_inventory(run: EstateRun) -> None:
    s, account, region = run.samples, run.accounts[0], DEMO_REGIONS[0]
    target = {"aws_account_id": account, "aws_region": region, "aws_service": "lambda"}
    assert value(s, "posture_evaluated_resources", **target, control="lambda-xray-active") == 26
    assert (
        value(s, "posture_control_evaluation_errors", **target, control="lambda-xray-active") == 0
    )
    assert value(s, "posture_exemptions", **target, control="lambda-url-auth", state="active") == 1
    assert (
        value(
            s, "posture_exemptions", **target, control="lambda-runtime-supported", state="expired"
        )
        == 1
    )
    assert value(s, "posture_resources", **target, resource_type="lambda-function") == 26
    assert value(s, "posture_resources", **target, resource_type="lambda-layer-version") == 2
    info = select(s, "posture_account_info", aws_account_id=account)
    assert [i[1]["account_name"] for i in info] == ["acct-111"]
    titles = {i[1]["control"]: i[1]["title"] for i in select(s, "posture_control_info")}
    assert titles["lambda-xray-active"] == "X-Ray active tracing is on"


def test_daemon_health_metrics(run: EstateRun) -> None:
    s = run.samples
    for a in run.accounts:
        assert value(s, "posture_account_up", aws_account_id=a) == 1
        for r in DEMO_REGIONS:
            labels = {"aws_account_id": a, "aws_region": r, "aws_service": "lambda"}
            assert value(s, "posture_target_up", **labels) == 1
            assert value(s, "posture_target_last_success_timestamp_seconds", **labels) > 1.7e9
            assert value(s, "posture_target_consecutive_failures", **labels) == 0
    assert value(s, "posture_build_info") == 1
    assert value(s, "posture_total_shards") == 1 and value(s, "posture_shard_ordinal") == 0
    assert value(s, "posture_reconciles_total", aws_service="lambda", result="success") == 6
    assert value(s, "posture_reconciles_total", aws_service="lambda", result="failure") == 0
    assert value(s, "posture_reconcile_duration_seconds_count", aws_service="lambda") == 6
    assert value(s, "posture_targets", aws_service="lambda") == 6
    calls = {
        x[1]["operation"]: x[2]
        for x in select(s, "posture_aws_api_requests_total", aws_service="lambda")
    }
    functions = sum(len(functions_in(r)) for r in DEMO_REGIONS) * len(run.accounts)
    assert calls["ListFunctions"] == 6  # one page per target
    assert calls["GetFunction"] == functions  # one per function
    assert value(s, "posture_policy_reload_failures_total") == 0
    assert run.readyz[0] == 200 and run.livez[0] == 200


def test_every_exposed_family_is_in_the_contract(run: EstateRun) -> None:
    assert {s[0] for s in run.samples} <= names.exposed_names()


def test_exposition_passes_promtool(run: EstateRun) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus; .ci/run installs it)"
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=run.exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (
        proc.stdout + proc.stderr
    )


def test_logs_are_json_lines_with_target_context(run: EstateRun) -> None:
    lines = [json.loads(line) for line in run.logs.splitlines() if line.strip()]
    reconciled = [e for e in lines if e.get("event") == "reconciled"]
    assert len(reconciled) == 6
    assert all(
        {"aws_account_id", "aws_region", "aws_service", "target", "timestamp", "level"} <= set(e)
        for e in reconciled
    )


def test_seeded_secret_values_never_leave(run: EstateRun) -> None:
    """Here for a clean run of the whole estate; test_secrets.py scans a run with faults (error
    paths, renewed credentials) for credentials and the ExternalId as well."""
    everything = run.exposition + run.logs + json.dumps(run.report)
    assert "payments-webhook" in everything  # the function is reported ...
    assert any(
        f["control"] == "lambda-env-no-plaintext-secrets" and "DB_PASSWORD" in f["evidence"]
        for f in run.report["findings"]
    )
    for secret in SEEDED_SECRETS:  # ... its secret values never are
        assert secret not in everything
