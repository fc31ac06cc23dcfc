"""Lambda concurrency headroom against moto server over HTTP, figure by figure.

The shared estate's first account is swept twice (both regions): the primary region runs near its
limit (a limit of 400 set through the shim, reservations leaving AWS's floor of 100 unreserved,
CloudWatch peaks and throttles written at seeding), the secondary region is idle. Expected figures
come from the estate's definition (`expected_concurrency`), never from the daemon.

moto gaps covered here: GetAccountSettings and the provisioned concurrency operations are answered
by the shim (daemon/demo/moto_server.py) from moto's own functions; the failure tests reproduce
both plain moto's answer to GetAccountSettings (HTTP 404) and an AccessDenied from CloudWatch.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from daemon.app import Daemon
from daemon.demo.estate import (
    DEMO_REGIONS,
    PRIMARY,
    SECONDARY,
    expected_concurrency,
    functions_in,
    seed_estate,
)
from daemon.demo.moto_server import EmbeddedMoto, ShimRequest, ShimResponse, json_error
from daemon.model import Finding
from daemon.policy import load_policy

from .conftest import ESTATE_ACCOUNTS, policy_for
from .harness import (
    Sample,
    parse_exposition,
    running_daemon,
    scrape,
    select,
    settings_for,
    value,
    wait_for,
)

ACCOUNT = ESTATE_ACCOUNTS[0]
SWEEPS = 2
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@dataclass
class Swept:
    samples: list[Sample]
    findings: list[Finding]


@pytest.fixture(scope="module")
def swept(estate: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory) -> Swept:
    policy = policy_for([ACCOUNT], tmp_path_factory.mktemp("concurrency"))
    # details and the CloudWatch answer cached for the whole test: no rolling refresh falls
    # between the sweeps
    settings = settings_for(
        policy,
        reconciler={
            "max_data_age_seconds": 30 * 86400,
            "cloudwatch_interval_seconds": 30 * 86400,
        },
    )
    daemon = Daemon(settings, load_policy(policy))

    async def sweeps() -> list[Finding]:
        try:
            findings: list[Finding] = []
            for _ in range(SWEEPS):
                outcomes = await daemon.reconciler.sweep_once()
                assert all(o.error is None for o in outcomes), outcomes
                findings = [f for o in outcomes if o.result for f in o.result.findings]
            return findings
        finally:
            await daemon.gateway.close()

    findings = asyncio.run(sweeps())
    return Swept(parse_exposition(generate_latest(daemon.registry).decode()), findings)


def figures(samples: list[Sample], region: str) -> dict[str, Any]:
    """The concurrency series of one account-region, shaped like `expected_concurrency`."""

    def one(name: str) -> float | None:
        found = select(samples, name, aws_account_id=ACCOUNT, aws_region=region)
        assert len(found) <= 1
        return found[0][2] if found else None

    def by(name: str, *labels: str) -> dict[Any, float]:
        rows = select(samples, name, aws_account_id=ACCOUNT, aws_region=region)
        key = (
            (lambda s: s[1][labels[0]])
            if len(labels) == 1
            else (lambda s: tuple(s[1][label] for label in labels))
        )
        return {key(s): s[2] for s in rows}

    return {
        "limit": one("posture_lambda_concurrency_limit"),
        "unreserved": one("posture_lambda_unreserved_concurrency"),
        "reserved": one("posture_lambda_reserved_concurrency"),
        "function_reserved": by("posture_lambda_function_reserved_concurrency", "function"),
        "provisioned": by("posture_lambda_provisioned_concurrency", "function", "qualifier"),
        "concurrent_peak": one("posture_lambda_concurrent_executions_peak"),
        "unreserved_peak": one("posture_lambda_unreserved_concurrent_executions_peak"),
        "claimed_peak": one("posture_lambda_claimed_concurrency_peak"),
        "headroom": one("posture_lambda_concurrency_headroom"),
        "throttles": one("posture_lambda_throttles"),
        "function_throttles": by("posture_lambda_function_throttles", "function"),
        "datapoints": by("posture_lambda_concurrency_datapoints", "metric"),
    }


@pytest.mark.parametrize("region", DEMO_REGIONS)
def test_every_figure_matches_the_seeded_estate(swept: Swept, region: str) -> None:
    expected = expected_concurrency(region)
    assert figures(swept.samples, region) == expected
    allocated = {
        (s[1]["function"], s[1]["qualifier"]): s[2]
        for s in select(
            swept.samples,
            "posture_lambda_provisioned_concurrency_allocated",
            aws_account_id=ACCOUNT,
            aws_region=region,
        )
    }
    assert allocated == expected["provisioned"]  # the shim reports allocation as done
    thresholds = {
        s[0]: s[2]
        for s in swept.samples
        if s[0].startswith("posture_lambda_concurrency_m") and s[1].get("aws_region") == region
    }
    assert thresholds == {
        "posture_lambda_concurrency_min_headroom_ratio": 0.2,
        "posture_lambda_concurrency_min_unreserved": 150,
        "posture_lambda_concurrency_max_reserved_fraction": 0.5,
    }
    assert value(swept.samples, "posture_lambda_concurrency_lookback_seconds") == 900


def test_the_figures_describe_one_busy_and_one_idle_region(swept: Swept) -> None:
    busy, idle = expected_concurrency(PRIMARY), expected_concurrency(SECONDARY)
    assert busy["headroom"] < 0.2 * busy["limit"] and busy["unreserved"] == 100
    assert busy["claimed_peak"] is not None and busy["throttles"] > 0
    assert busy["throttles"] > sum(busy["function_throttles"].values())  # untraced: not in top 10
    assert idle["concurrent_peak"] == 0 and set(idle["datapoints"].values()) == {0}
    assert idle["claimed_peak"] is None and idle["headroom"] == idle["limit"] == 1000


def test_one_batched_get_metric_data_per_cloudwatch_interval_and_settings_every_sweep(
    swept: Swept,
) -> None:
    calls = {
        (s[1]["aws_service"], s[1]["operation"]): s[2]
        for s in select(swept.samples, "posture_aws_api_requests_total")
    }
    targets = len(DEMO_REGIONS)
    # CloudWatch (billed per metric) once: the second sweep is served the first answer, and
    # its figures are the same (test_every_figure_matches_the_seeded_estate)
    assert calls[("cloudwatch", "GetMetricData")] == targets
    assert calls[("lambda", "GetAccountSettings")] == targets * SWEEPS
    # per-function details once (the first sweep; cached under the unchanged ListFunctions key)
    published = sum(1 for r in DEMO_REGIONS for f in functions_in(r) if f.publish)
    assert calls[("lambda", "ListProvisionedConcurrencyConfigs")] == published
    assert calls[("lambda", "GetFunction")] == sum(len(functions_in(r)) for r in DEMO_REGIONS)
    ours = {"GetMetricData", "GetAccountSettings", "ListProvisionedConcurrencyConfigs"}
    errors = select(swept.samples, "posture_aws_api_errors_total")
    assert not [e for e in errors if e[1]["operation"] in ours and e[2] > 0]


def test_controls_on_the_busy_and_the_idle_region(swept: Swept) -> None:
    found = {
        (f.region, f.control): f
        for f in swept.findings
        if f.resource_type == "account-region" and "concurrency" in f.control
    }
    statuses = {key: f.status.value for key, f in found.items()}
    assert statuses == {
        (PRIMARY, "lambda-concurrency-headroom"): "fail",
        (PRIMARY, "lambda-unreserved-concurrency"): "fail",
        (PRIMARY, "lambda-reserved-concurrency-fraction"): "fail",
        (SECONDARY, "lambda-concurrency-headroom"): "pass",
        (SECONDARY, "lambda-unreserved-concurrency"): "pass",
        (SECONDARY, "lambda-reserved-concurrency-fraction"): "pass",
    }
    assert found[(PRIMARY, "lambda-concurrency-headroom")].evidence == (
        "peak 352 of limit 400 concurrent executions in the last 15 min: headroom 48 (12%), "
        "below 20% (claimed peak 392)"
    )
    assert found[(PRIMARY, "lambda-unreserved-concurrency")].evidence.startswith(
        "unreserved pool 100 of limit 400 (300 reserved), below 150"
    )
    assert found[(PRIMARY, "lambda-reserved-concurrency-fraction")].evidence.startswith(
        "300 of limit 400 reserved (75%) by 35 function(s); largest: orders-api (50)"
    )
    assert "(idle)" in found[(SECONDARY, "lambda-concurrency-headroom")].evidence


def test_recording_rules_on_the_daemons_own_exposition(swept: Swept, tmp_path: Path) -> None:
    """promtool evaluates the shipped rules on the series the daemon actually exported."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    wanted = ("posture_lambda_", "posture_workers_")
    series = [
        {
            "series": _selector(name, {"job": "posture", "instance": "d:9717", **labels}),
            "values": f"{val!r}x5",
        }
        for name, labels, val in swept.samples
        if name.startswith(wanted)
    ]

    def ratio(name: str, region: str, v: float) -> dict[str, Any]:
        labels = {
            "job": "posture",
            "instance": "d:9717",
            "aws_account_id": ACCOUNT,
            "aws_region": region,
        }
        return {"labels": _selector(name, labels), "value": v}

    tests = []
    for name, compute in (
        ("posture:lambda_concurrency_headroom_ratio", lambda e: e["headroom"] / e["limit"]),
        (
            "posture:lambda_unreserved_concurrency_headroom_ratio",
            lambda e: (e["unreserved"] - e["unreserved_peak"]) / e["unreserved"],
        ),
        ("posture:lambda_reserved_concurrency_ratio", lambda e: e["reserved"] / e["limit"]),
    ):
        tests.append(
            {
                "expr": name,
                "eval_time": "2m",
                "exp_samples": [
                    ratio(name, r, compute(expected_concurrency(r))) for r in DEMO_REGIONS
                ],
            }
        )
    busy = expected_concurrency(PRIMARY)
    tests.append(  # the headroom alert of the README fires for the busy region only
        {
            "expr": "posture:lambda_concurrency_headroom_ratio"
            " < posture_lambda_concurrency_min_headroom_ratio",
            "eval_time": "2m",
            "exp_samples": [
                ratio(
                    "posture:lambda_concurrency_headroom_ratio",
                    PRIMARY,
                    busy["headroom"] / busy["limit"],
                )
            ],
        }
    )
    doc = {
        "rule_files": [str(DEPLOY / "concurrency.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "exposition.test.yml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _selector(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


# --- failures: the series are absent and the error is counted, never a guessed default ---------


def _account_of(request: ShimRequest) -> str:
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(request.access_key))


def moto_404_for_account_settings(account: str):  # type: ignore[no-untyped-def]
    """What plain moto 5 answers to GetAccountSettings (the shim's gap, reproduced)."""

    def rule(request: ShimRequest) -> ShimResponse | None:
        if "/account-settings" in request.path and _account_of(request) == account:
            return ShimResponse(
                "404 NOT FOUND", b"<!doctype html><title>404 Not Found</title>", "text/html"
            )
        return None

    return rule


def deny_get_metric_data(account: str):  # type: ignore[no-untyped-def]
    def rule(request: ShimRequest) -> ShimResponse | None:
        if (
            request.service == "monitoring"
            and b"MetricDataQueries" in request.body
            and _account_of(request) == account
        ):
            return json_error(
                "AccessDenied",
                "User is not authorized to perform: cloudwatch:GetMetricData",
                "403 Forbidden",
            )
        return None

    return rule


@pytest.fixture
def shim(moto: EmbeddedMoto):  # type: ignore[no-untyped-def]
    assert moto.shim is not None
    yield moto.shim
    moto.shim.clear_faults()


async def test_unavailable_account_settings_or_metrics_degrade_honestly(
    moto: EmbeddedMoto,
    shim,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    no_settings, no_metrics = "454545454545", "464646464646"
    await seed_estate([no_settings, no_metrics], [PRIMARY], only=["orders-api", "untraced"])
    shim.add_fault(moto_404_for_account_settings(no_settings))
    shim.add_fault(deny_get_metric_data(no_metrics))
    policy = policy_for([no_settings, no_metrics], tmp_path, regions=[PRIMARY])
    daemon = Daemon(settings_for(policy), load_policy(policy))
    try:
        outcomes = await daemon.reconciler.sweep_once()
    finally:
        await daemon.gateway.close()
    assert all(o.error is None for o in outcomes)  # a denied aspect never fails the target
    samples = parse_exposition(generate_latest(daemon.registry).decode())
    expected = expected_concurrency(PRIMARY, only=["orders-api", "untraced"])

    def present(account: str) -> set[str]:
        return {
            s[0]
            for s in samples
            if s[0].startswith("posture_lambda_") and s[1].get("aws_account_id") == account
        }

    # no settings: no limit, no pool, no headroom -- the CloudWatch figures are still there
    got = present(no_settings)
    assert not got & {
        "posture_lambda_concurrency_limit",
        "posture_lambda_unreserved_concurrency",
        "posture_lambda_concurrency_headroom",
    }
    assert (
        value(samples, "posture_lambda_concurrent_executions_peak", aws_account_id=no_settings)
        == expected["concurrent_peak"]
    )
    assert (
        value(samples, "posture_lambda_reserved_concurrency", aws_account_id=no_settings)
        == expected["reserved"]
    )
    # no metrics: no peaks, no headroom, no datapoints; the settings are there
    got = present(no_metrics)
    assert not got & {
        "posture_lambda_concurrent_executions_peak",
        "posture_lambda_unreserved_concurrent_executions_peak",
        "posture_lambda_claimed_concurrency_peak",
        "posture_lambda_concurrency_headroom",
        "posture_lambda_throttles",
        "posture_lambda_function_throttles",
        "posture_lambda_concurrency_datapoints",
    }
    assert value(samples, "posture_lambda_concurrency_limit", aws_account_id=no_metrics) == 400
    # the failures are counted ...
    errors = {
        (s[1]["operation"], s[1]["error_code"]): s[2]
        for s in select(samples, "posture_aws_api_errors_total")
    }
    assert errors[("GetAccountSettings", "404")] == 1
    assert errors[("GetMetricData", "AccessDenied")] == 1
    # ... and the controls that need the missing part are `error`, never pass
    status = {
        (f.account_id, f.control): (f.status.value, f.evidence)
        for o in outcomes
        if o.result
        for f in o.result.findings
        if "concurrency" in f.control and f.resource_type == "account-region"
    }
    assert status[(no_settings, "lambda-concurrency-headroom")] == (
        "error",
        "could not read account_settings (404)",
    )
    assert status[(no_settings, "lambda-unreserved-concurrency")][0] == "error"
    assert status[(no_settings, "lambda-reserved-concurrency-fraction")][0] == "error"
    assert status[(no_metrics, "lambda-concurrency-headroom")] == (
        "error",
        "could not read concurrency_metrics (AccessDenied)",
    )
    assert status[(no_metrics, "lambda-unreserved-concurrency")][0] == "pass"  # 400 - 60 = 340
    assert status[(no_metrics, "lambda-reserved-concurrency-fraction")][0] == "pass"
    errors_gauge = {
        (s[1]["aws_account_id"], s[1]["control"]): s[2]
        for s in select(samples, "posture_control_evaluation_errors")
        if "concurrency" in s[1]["control"]
    }
    assert errors_gauge[(no_settings, "lambda-concurrency-headroom")] == 1
    assert errors_gauge[(no_metrics, "lambda-concurrency-headroom")] == 1
    assert errors_gauge[(no_metrics, "lambda-unreserved-concurrency")] == 0


# --- the daemon's own headroom ------------------------------------------------------------------


def slow_list_functions(accounts: set[str], seconds: float):  # type: ignore[no-untyped-def]
    """Delay ListFunctions for the accounts (the request then goes on to moto)."""

    def rule(request: ShimRequest) -> ShimResponse | None:
        if (
            request.service == "lambda"
            and request.method == "GET"
            and request.path.rstrip("/").endswith("/functions")
            and _account_of(request) in accounts
        ):
            time.sleep(seconds)
        return None

    return rule


async def test_saturated_workers_show_queue_depth_and_a_growing_wait(
    moto: EmbeddedMoto,
    shim,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    accounts = ["474747474747", "484848484848"]  # empty accounts: only ListFunctions is slow
    shim.add_fault(slow_list_functions(set(accounts), 1.0))
    settings = settings_for(
        policy_for(accounts, tmp_path), reconciler={"workers": 1, "interval_seconds": 300}
    )
    seen: list[tuple[float, float, float]] = []  # (active, depth, longest wait) per scrape
    async with running_daemon(settings, ready=False) as daemon:
        await wait_for(daemon.reconciler.discovered.is_set, 30, "discovery")

        async def observe() -> None:
            while True:
                s = await scrape(daemon)
                seen.append(
                    (
                        value(s, "posture_workers_active"),
                        value(s, "posture_workqueue_depth"),
                        value(s, "posture_workqueue_longest_wait_seconds"),
                    )
                )
                assert value(s, "posture_workers_max") == 1
                if daemon.ready()[0] and seen[-1][1] == 0:
                    return
                await asyncio.sleep(0.25)

        await asyncio.wait_for(observe(), 60)
        final = await scrape(daemon)
    waiting = [x for x in seen if x[1] > 0]
    assert waiting, seen
    # 4 targets, 1 worker: 3 wait at first, and the oldest waits longer at every update
    assert max(x[1] for x in waiting) == 3
    assert all(x[0] == 1 for x in waiting)  # the one worker is busy while targets wait
    waits = [x[2] for x in waiting]
    assert waits[-1] >= 2.0 and max(waits) == waits[-1], waits
    assert sorted(set(waits)) == sorted(set(waits), key=waits.index)  # never shrinks
    assert value(final, "posture_workqueue_depth") == 0
    assert value(final, "posture_reconciles_total", aws_service="lambda", result="success") == 4
