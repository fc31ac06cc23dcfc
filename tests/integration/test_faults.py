"""Reliability under the faults real AWS produces, injected by a real HTTP proxy in front of moto.

Every test here runs the real daemon (HTTP server, reconciler, botocore over HTTP) against the
fault proxy (tests/integration/faultproxy.py) in front of the moto server. Each test seeds
accounts of its own, so the shared estate and the other tests are not affected.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.demo.estate import (
    PRIMARY,
    SECONDARY,
    Violation,
    expected_violations,
    function_arn,
    seed_estate,
)
from daemon.logging import setup_logging
from daemon.model import Target

from .conftest import policy_for
from .faultproxy import (
    AccessDenied,
    Call,
    Choice,
    ExpireCredentials,
    FaultProxy,
    Hang,
    Latency,
    Malformed,
    Reset,
    Rewrite,
    ServerError,
    Throttle,
    Truncate,
)
from .harness import (
    Sample,
    get,
    running_daemon,
    scrape,
    select,
    settings_for,
    value,
    wait_for,
    wait_for_sweeps,
)

LAMBDA = "lambda"


def target_of(daemon: Daemon, account: str, region: str = PRIMARY) -> Target:
    return next(
        t for t in daemon.store.view().targets if t.account_id == account and t.region == region
    )


def labels(account: str, region: str = PRIMARY) -> dict[str, str]:
    return {"aws_account_id": account, "aws_region": region, "aws_service": LAMBDA}


def posture(samples: list[Sample], account: str, region: str = PRIMARY) -> dict[str, Any]:
    """What the daemon claims about a target's compliance (the series that must not flip)."""
    t = labels(account, region)
    return {
        "violations": {
            (s[1]["control"], s[1]["severity"]): s[2]
            for s in select(samples, "posture_violations", **t)
        },
        "evaluated": {
            s[1]["control"]: s[2] for s in select(samples, "posture_evaluated_resources", **t)
        },
        "resources": {
            (s[1]["control"], s[1]["resource"])
            for s in select(samples, "posture_resource_violation", **t)
        },
    }


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The daemon's log lines (JSON, debug level) during the test."""
    stream = io.StringIO()
    setup_logging("debug", "json", stream=stream)
    yield stream
    setup_logging("info", "json")


def nth(n: int) -> Callable[[Call], bool]:
    """A rule condition true for the n-th matching call only."""
    seen = itertools.count(1)
    return lambda _call: next(seen) == n


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def assert_no_crash(stream: io.StringIO, proxy: FaultProxy) -> None:
    """No traceback, no internal error, and no credential the proxy saw in the daemon's logs.

    moto runs in this process and logs through the same root logger ("werkzeug"): its own
    errors are the simulated AWS failing (it answers 500), not the daemon, and are left out.
    """
    daemon_events = [e for e in events(stream) if e.get("logger") != "werkzeug"]
    text = "\n".join(json.dumps(e) for e in daemon_events)
    assert "Traceback" not in text
    assert not [e for e in daemon_events if e.get("error_kind") == "internal"]
    for secret in proxy.credentials:
        assert secret not in stream.getvalue()


# --- throttling storm ----------------------------------------------------------------------------


async def test_throttling_storm_on_one_account_region(
    proxy: FaultProxy, tmp_path: Path, logs: io.StringIO
) -> None:
    stormy, calm = "910000000001", "910000000002"
    await seed_estate(
        [stormy, calm], [PRIMARY, SECONDARY], only=["orders-api", "untraced", "no-reservation"]
    )
    settings = settings_for(
        policy_for([stormy, calm], tmp_path, regions=[PRIMARY, SECONDARY]),
        reconciler={"interval_seconds": 1, "backoff_base_seconds": 0.5, "backoff_max_seconds": 2},
        aws={"max_attempts": 2},
    )
    async with running_daemon(settings) as daemon:
        healthy = posture(await scrape(daemon), stormy)
        assert healthy["violations"][("lambda-xray-active", "low")] == 1
        assert healthy["resources"]
        storm_target = target_of(daemon, stormy)
        others = [t for t in daemon.store.view().targets if t != storm_target]
        assert len(others) == 3

        # the storm: Lambda answers 429 TooManyRequestsException, the other services 400
        # ThrottlingException, for every call of that one account-region
        storm = [
            proxy.add(Throttle(429), account=stormy, region=PRIMARY, service="lambda"),
            proxy.add(
                Throttle(400),
                account=stormy,
                region=PRIMARY,
                service=["logs", "ec2", "config", "cloudtrail", "apigateway"],
            ),
        ]
        started = time.monotonic()
        failures: list[tuple[int, float]] = []  # (consecutive failures, last attempt) transitions
        successes: dict[Target, list[float]] = {t: [] for t in others}
        during: list[dict[str, Any]] = []
        last_scrape = 0.0

        def storm_seen() -> bool:
            # the storm lasts until the throttled target failed twice and every other target
            # succeeded four times (about 7 s on an idle machine); a loaded machine gets longer
            return (
                len(failures) >= 2
                and len(during) >= 2
                and all(len(times) >= 4 for times in successes.values())
            )

        while not storm_seen() and time.monotonic() - started < 30:
            view = daemon.store.view()
            h = view.health[storm_target]
            if h.consecutive_failures and (
                not failures or failures[-1][0] != h.consecutive_failures
            ):
                failures.append((h.consecutive_failures, h.last_attempt))
            for t in others:
                s = view.health[t].last_success
                if not successes[t] or successes[t][-1] != s:
                    successes[t].append(s)
            if time.monotonic() - last_scrape > 0.5:
                samples = await scrape(daemon)
                during.append(posture(samples, stormy))
                assert value(samples, "posture_target_up", **labels(stormy)) == (
                    0 if failures else value(samples, "posture_target_up", **labels(stormy))
                )
                last_scrape = time.monotonic()
            await asyncio.sleep(0.05)
        mid = await scrape(daemon)
        for rule in storm:
            proxy.remove(rule)
        await wait_for(lambda: daemon.store.view().health[storm_target].up, 30, "recovery")
        await wait_for_sweeps(daemon, 1)
        recovered = await scrape(daemon)

    # the throttled target failed, again and again, and backed off: the account-region's quota
    # buckets halve their rate (AIMD), the work queue spaces the reconciles
    assert value(mid, "posture_target_up", **labels(stormy)) == 0
    assert len(failures) >= 2, failures
    # each retry waited out its backoff (base 0.5 s, doubling, +-20% jitter), read from the
    # "backing off" log lines (retry_in_s, rounded to 0.1 s) of the failures in order
    backing_off = [e for e in events(logs) if e["event"] == "backing off"]
    assert backing_off and all(e["target"] == storm_target.key for e in backing_off)
    delays = [float(e["retry_in_s"]) for e in backing_off]
    assert delays[0] <= 0.65 and delays[1] >= 0.75, delays  # 0.5 s, then 1 s
    for (count, at), (_, next_at) in itertools.pairwise(failures):
        assert next_at - at >= delays[count - 1] - 0.06, (failures, delays)
    storm_calls = [
        r for r in proxy.calls(account=stormy, region=PRIMARY) if r.outcome == "throttle"
    ]
    assert 2 <= len(storm_calls) <= 25, len(storm_calls)  # a healthy sweep makes ~25 calls a second
    # ... while no series about it flipped to zero or to compliant
    assert during and all(p == healthy for p in during)
    assert value(mid, "posture_target_consecutive_failures", **labels(stormy)) == len(failures)
    assert value(mid, "posture_aws_api_throttles_total", **labels(stormy)) > 0
    codes = {
        s[1]["error_code"]: s[2] for s in select(mid, "posture_aws_api_errors_total") if s[2] > 0
    }
    assert codes.get("TooManyRequestsException", 0) > 0
    # the other targets (the same account in another region, another account) kept their interval
    for t, times in successes.items():
        assert len(times) >= 4, (t, times)
        # a 1 s interval plus the sweep itself (over a second on a loaded machine); a target
        # held up by the storm would wait out the storm's retries and backoff (7 s and more)
        assert max(b - a for a, b in itertools.pairwise(times)) < 5, (t, times)
        assert value(mid, "posture_target_up", **labels(t.account_id, t.region)) == 1
    # after the storm: up again, same results
    assert value(recovered, "posture_target_up", **labels(stormy)) == 1
    assert value(recovered, "posture_target_consecutive_failures", **labels(stormy)) == 0
    assert posture(recovered, stormy) == healthy
    assert_no_crash(logs, proxy)


# --- 5xx, resets and cut bodies on 30% of calls --------------------------------------------------


def _per_resource(v: Violation) -> bool:
    """Functions and layers. The account-region's own controls (concurrency headroom, Config,
    CloudTrail) depend on the whole estate being seeded, which these tests do not do."""
    return ":function:" in v.resource or ":layer:" in v.resource


def seeded_violations(account: str, region: str, only: list[str]) -> set[Violation]:
    """The estate's violations for a subset of functions (and the layers)."""
    functions = {function_arn(account, region, name) for name in only}
    return {
        v
        for v in expected_violations([account], [region], only=only)
        if _per_resource(v) and (":function:" not in v.resource or v.resource in functions)
    }


def violations_found(daemon: Daemon, target: Target) -> set[Violation]:
    result = daemon.store.view().results[target]
    return {
        v
        for f in result.findings
        if f.status.value == "fail" and not f.exempted
        for v in [Violation(f.account_id, f.region, f.control, f.resource)]
        if _per_resource(v)
    }


async def test_server_errors_and_resets_on_30_percent_of_calls(
    proxy: FaultProxy, tmp_path: Path, logs: io.StringIO
) -> None:
    account = "920000000001"
    only = ["orders-api", "untraced", "open-invoke", "unsigned"]
    await seed_estate([account], [PRIMARY], only=only)
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]),
        reconciler={"interval_seconds": 1},
        aws={"max_attempts": 8, "read_timeout_seconds": 2},
    )
    # two answers that never come: botocore's read timeout fires and the call is retried
    hangs = proxy.add(Hang(), account=account, operation="GetFunction", count=2)
    rule = proxy.add(
        Choice(ServerError(500), ServerError(503), Reset(), Truncate()),
        account=account,
        probability=0.3,
    )
    async with running_daemon(settings) as daemon:
        target = target_of(daemon, account)
        first = violations_found(daemon, target)
        await wait_for_sweeps(daemon, 2, timeout=90)
        last = violations_found(daemon, target)
        samples = await scrape(daemon)

    # every sweep completed, through retries, with exactly the seeded violations
    expected = seeded_violations(account, PRIMARY, only)
    assert first == expected and last == expected
    assert value(samples, "posture_reconciles_total", aws_service=LAMBDA, result="failure") == 0
    assert value(samples, "posture_reconciles_total", aws_service=LAMBDA, result="success") >= 3
    assert value(samples, "posture_target_up", **labels(account)) == 1
    # about 30% of the account's calls since the rule (not the seeding's) hit a fault, and every
    # failed attempt was counted
    calls = [r for r in proxy.calls(account=account) if r.at >= rule.installed_at]
    faulted = [r for r in calls if r.outcome != "forwarded"]
    assert hangs.hits == 2
    assert rule.hits == len(faulted) - 2 > 15
    assert 0.2 < (len(faulted) - 2) / len(calls) < 0.4
    errors: Counter[str] = Counter()
    for s in select(samples, "posture_aws_api_errors_total"):
        errors[s[1]["error_code"]] += int(s[2])
    by_fault = Counter(r.outcome for r in faulted)
    # each 500/503 answer is one counted error, in the code of the service's protocol
    server_errors = ("InternalFailure", "InternalError", "ServiceUnavailableException")
    assert (
        sum(errors[c] for c in (*server_errors, "ServiceUnavailable")) == by_fault["server_error"]
    )
    # a body cut short is a ConnectionClosedError; a reset one too, or EndpointConnectionError,
    # unless it hit an idle keep-alive connection: aiohttp then retries a GET once by itself
    connection = errors["ConnectionClosedError"] + errors["EndpointConnectionError"]
    assert by_fault["truncate"] <= connection <= by_fault["truncate"] + by_fault["reset"]
    assert errors["ReadTimeoutError"] >= 2  # (moto itself may be slow on a busy machine)
    assert_no_crash(logs, proxy)


# --- a hung endpoint -----------------------------------------------------------------------------


async def test_hung_endpoint_fires_the_call_and_target_deadlines_and_never_stalls_the_daemon(
    proxy: FaultProxy, tmp_path: Path, logs: io.StringIO
) -> None:
    hung, slow, fine = "930000000001", "930000000002", "930000000003"
    only = ["orders-api", "untraced", "no-reservation", "unsigned"]
    await seed_estate([hung, slow, fine], [PRIMARY], only=only)
    settings = settings_for(
        policy_for([hung, slow, fine], tmp_path, regions=[PRIMARY]),
        # no cache: every sweep reads each function's details, so `slow`'s reconcile is long
        reconciler={
            "interval_seconds": 1,
            "target_timeout_seconds": 4,
            "max_data_age_seconds": 0,
        },
        aws={"call_timeout_seconds": 2, "read_timeout_seconds": 60},
    )
    async with running_daemon(settings) as daemon:
        await wait_for_sweeps(daemon, 1)
        healthy = {a: posture(await scrape(daemon), a) for a in (hung, slow)}
        assert all(p["resources"] for p in healthy.values())
        # `hung` never answers ListFunctions; every Lambda call of `slow` takes 1 s: each call is
        # within its deadline, the whole reconcile (7 calls in a row per function) is not
        before = len(events(logs))  # a cold first sweep on a busy machine may be slow itself
        proxy.add(Hang(), account=hung, operation="ListFunctions")
        proxy.add(Latency(1.0), account=slow, service="lambda")
        t_hung, t_slow, t_fine = (target_of(daemon, a) for a in (hung, slow, fine))
        started = time.monotonic()
        probe_times: list[float] = []
        while time.monotonic() - started < 7:
            for path in ("/livez", "/metrics", "/readyz"):
                t0 = time.monotonic()
                status, _ = await get(daemon, path)
                probe_times.append(time.monotonic() - t0)
                assert status == 200, path
            await asyncio.sleep(0.2)
        health = daemon.store.view().health
        samples = await scrape(daemon)
        fine_before = health[t_fine].last_success
        await wait_for(
            lambda: daemon.store.view().health[t_fine].last_success > fine_before, 5, "fine"
        )

    assert max(probe_times) < 1.0, max(probe_times)
    assert health[t_hung].last_error == "CallTimeout" and not health[t_hung].up
    assert health[t_slow].last_error == "TargetTimeout" and not health[t_slow].up
    assert health[t_hung].consecutive_failures >= 2 and health[t_slow].consecutive_failures >= 1
    assert health[t_fine].up and health[t_fine].consecutive_failures == 0
    for account in (hung, slow):
        assert posture(samples, account) == healthy[account]  # last known state kept
    hung_calls = [r for r in proxy.calls(account=hung) if r.outcome == "hang"]
    assert len(hung_calls) >= 2  # every retry of the reconcile was cut by the call deadline
    errors = {
        (s[1]["operation"], s[1]["error_code"])
        for s in select(samples, "posture_aws_api_errors_total")
        if s[2]
    }
    assert ("ListFunctions", "CallTimeout") in errors
    failed = [e for e in events(logs)[before:] if e["event"].startswith("reconcile failed")]
    assert {e["error_code"] for e in failed if e["aws_account_id"] == hung} == {"CallTimeout"}
    assert {e["error_code"] for e in failed if e["aws_account_id"] == slow} == {"TargetTimeout"}
    assert_no_crash(logs, proxy)


# --- expired credentials mid-sweep ---------------------------------------------------------------


async def test_expired_credentials_mid_sweep_are_renewed_and_the_sweep_goes_on(
    proxy: FaultProxy, tmp_path: Path, logs: io.StringIO
) -> None:
    account = "940000000001"
    only = ["orders-api", "untraced", "open-invoke", "no-reservation", "unsigned", "no-logs"]
    await seed_estate([account], [PRIMARY], only=only)
    # no detail cache: every sweep reads each function's details, so GetFunctions are in flight
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]),
        reconciler={"interval_seconds": 1, "max_data_age_seconds": 0},
    )
    role = f"arn:aws:iam::{account}:role/PostureDaemonReader"
    async with running_daemon(settings) as daemon:
        target = target_of(daemon, account)
        assumed_before = len(proxy.calls(operation="AssumeRole", detail=role))
        # the third GetFunction of a sweep (8 in flight at once): the account's keys expire
        rule = proxy.add(
            ExpireCredentials(), account=account, operation="GetFunction", count=1, when=nth(3)
        )
        await wait_for(lambda: rule.hits == 1, 20, "the credentials to expire")
        await wait_for_sweeps(daemon, 2)
        health = daemon.store.view().health[target]
        samples = await scrape(daemon)

    expired = [r for r in proxy.calls(account=account) if r.outcome == "expired_token"]
    assert expired  # the calls in flight with the old keys were told so ...
    assert len(proxy.calls(operation="AssumeRole", detail=role)) == assumed_before + 1  # ... once
    assert health.up and health.consecutive_failures == 0  # and the sweep went on
    assert value(samples, "posture_reconciles_total", aws_service=LAMBDA, result="failure") == 0
    assert violations_found(daemon, target) == seeded_violations(account, PRIMARY, only)
    assert_no_crash(logs, proxy)


async def test_paginated_listing_resumes_at_the_page_whose_token_expired(
    proxy: FaultProxy,
) -> None:
    """AwsApi.pages(): ExpiredToken on page 3 -> AssumeRole again, then page 3 again (not 1).

    DescribeLogGroups, because moto 5 ignores MaxItems on Lambda ListFunctions (one page only).
    """
    from prometheus_client import CollectorRegistry

    from daemon.aws.api import AwsGateway
    from daemon.config import load_settings
    from daemon.metrics.health import HealthMetrics

    account = "940000000002"
    names = ["orders-api", "untraced", "open-invoke", "no-reservation", "unsigned", "s3-trigger"]
    await seed_estate([account], [PRIMARY], only=names)
    gateway = AwsGateway(load_settings().aws, HealthMetrics(CollectorRegistry()))
    api = gateway.api(account, PRIMARY)
    rule = proxy.add(
        ExpireCredentials(), account=account, operation="DescribeLogGroups", count=1, when=nth(3)
    )
    try:
        seen = [
            g["logGroupName"]
            async for page in api.pages(
                "logs", "describe_log_groups", PaginationConfig={"PageSize": 2}
            )
            for g in page["logGroups"]
        ]
    finally:
        await gateway.close()
    assert rule.hits == 1
    # every group once: no page lost, none repeated
    assert seen == sorted(f"/aws/lambda/{n}" for n in names)
    listing = [r.outcome for r in proxy.calls(account=account, operation="DescribeLogGroups")]
    assert listing == ["forwarded", "forwarded", "expired_token", "forwarded"]
    role = f"arn:aws:iam::{account}:role/PostureDaemonReader"
    assert len(proxy.calls(operation="AssumeRole", detail=role)) == 2  # first use, renewal


# --- AccessDenied on one operation ---------------------------------------------------------------


async def test_access_denied_on_one_operation_makes_its_controls_unevaluated_never_passed(
    proxy: FaultProxy, tmp_path: Path, logs: io.StringIO
) -> None:
    account = "950000000001"
    await seed_estate([account], [PRIMARY], only=["orders-api", "open-invoke"])
    # Lambda GetPolicy (REST: resolved from the request path) and IAM GetRolePolicy (query)
    proxy.add(AccessDenied(), account=account, operation="GetPolicy", service="lambda")
    proxy.add(AccessDenied(), account=account, operation="GetRolePolicy")
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]), reconciler={"interval_seconds": 1}
    )
    t = labels(account)
    async with running_daemon(settings) as daemon:
        await wait_for_sweeps(daemon, 2)
        samples = await scrape(daemon)
        stored = daemon.store.view().results[target_of(daemon, account)]
    findings = stored.findings  # the store keeps every finding but the passes ...

    def metric(name: str, control: str) -> float:
        return sum(s[2] for s in select(samples, name, **t, control=control))

    # the resource policy and the role's inline policy could not be read: neither pass nor fail
    for control in (
        "lambda-resource-policy-restricted",
        "lambda-api-waf",
        "lambda-role-least-privilege",
    ):
        assert metric("posture_control_evaluation_errors", control) == 2, control
        assert metric("posture_evaluated_resources", control) == 0, control
        assert metric("posture_violations", control) == 0, control
        # ... and counts them in `evaluated`: none passed or failed, both functions are errors
        assert (stored.evaluated[control], stored.errors[control]) == (0, 2), control
        statuses = [f.status.value for f in findings if f.control == control]
        assert statuses == ["error", "error"], (control, statuses)
    denied = [f for f in findings if f.control == "lambda-resource-policy-restricted"]
    assert all("AccessDeniedException" in f.evidence for f in denied)
    # everything else about those functions is still evaluated, and the target is up
    assert metric("posture_evaluated_resources", "lambda-xray-active") == 2
    assert metric("posture_evaluated_resources", "lambda-url-auth") == 2
    assert value(samples, "posture_target_up", **t) == 1
    errors = {
        (s[1]["operation"], s[1]["error_code"])
        for s in select(samples, "posture_aws_api_errors_total")
        if s[2]
    }
    assert ("GetPolicy", "AccessDeniedException") in errors
    assert ("GetRolePolicy", "AccessDenied") in errors
    assert_no_crash(logs, proxy)


# --- malformed data ------------------------------------------------------------------------------


def _odd_configuration(call: Call, document: Any) -> None:
    """ListFunctions answers with fields missing and values no documentation lists."""
    for fn in document.get("Functions", []):
        if fn["FunctionName"] == "untraced":
            for name in ("Timeout", "MemorySize", "Runtime", "Handler", "TracingConfig"):
                fn.pop(name, None)
        if fn["FunctionName"] == "orders-api":
            fn["PackageType"] = "Wasm"
            fn["TracingConfig"] = {"Mode": "Sampled"}
            fn["Architectures"] = ["riscv64"]


def _bad_policy(call: Call, document: Any) -> None:
    if "/functions/open-invoke/" in call.path:
        document["Policy"] = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",'


async def test_malformed_data_is_logged_once_and_the_rest_is_still_evaluated(
    proxy: FaultProxy, tmp_path: Path, logs: io.StringIO
) -> None:
    account = "960000000001"
    await seed_estate([account], [PRIMARY], only=["orders-api", "untraced", "open-invoke"])
    proxy.add(Rewrite(_odd_configuration), account=account, operation="ListFunctions")
    proxy.add(Rewrite(_bad_policy), account=account, operation="GetPolicy")
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]), reconciler={"interval_seconds": 1}
    )
    async with running_daemon(settings) as daemon:
        await wait_for_sweeps(daemon, 3)
        target = target_of(daemon, account)
        # one more sweep, for its outcome: the store keeps no passes, the outcome has them all
        outcomes = await daemon.reconciler.sweep_once()
        health = daemon.store.view().health[target]
    swept = [o.result for o in outcomes if o.target == target]
    assert len(swept) == 1 and swept[0] is not None, outcomes
    findings = swept[0].findings

    def statuses(function: str) -> dict[str, str]:
        arn = function_arn(account, PRIMARY, function)
        return {f.control: f.status.value for f in findings if f.resource == arn}

    assert health.up and health.consecutive_failures == 0
    # invalid JSON in the resource policy: the controls that read it are errors ...
    invoke = statuses("open-invoke")
    assert invoke["lambda-resource-policy-restricted"] == "error"
    assert invoke["lambda-api-waf"] == "error"
    # ... and everything else about the function is judged as before
    assert invoke["lambda-xray-active"] == "pass"
    assert invoke["lambda-url-auth"] == "pass"
    assert invoke["lambda-reserved-concurrency"] == "pass"
    # missing fields: what needs them is an error, never a pass; the rest is judged
    untraced = statuses("untraced")
    assert untraced["lambda-timeout-memory-bounds"] == "error"
    assert untraced["lambda-runtime-supported"] == "error"
    assert untraced["lambda-xray-active"] == "fail"  # no tracing config: not active
    assert untraced["lambda-env-cmk-encryption"] == "pass"
    assert untraced["lambda-role-least-privilege"] == "pass"
    # unexpected enum values: judged on what they say
    orders = statuses("orders-api")
    assert orders["lambda-xray-active"] == "fail"  # "Sampled" is not "Active"
    assert orders["lambda-runtime-supported"] == "pass"
    assert orders["lambda-timeout-memory-bounds"] == "pass"
    # each problem was logged once, not on every sweep
    odd = [e for e in events(logs) if e["event"] == "odd data from AWS"]
    problems = sorted((e["resource"].rsplit(":", 1)[-1], e["problem"]) for e in odd)
    assert [p for p in problems if p[0] == "untraced"] == [
        ("untraced", f"missing field {name}")
        for name in sorted(["Handler", "MemorySize", "Runtime", "Timeout", "TracingConfig"])
    ]
    assert [p for p in problems if p[0] == "orders-api"] == [
        ("orders-api", "unexpected Architectures value 'riscv64'"),
        ("orders-api", "unexpected PackageType 'Wasm'"),
        ("orders-api", "unexpected TracingConfig.Mode 'Sampled'"),
    ]
    assert len([p for p in problems if p[0] == "open-invoke"]) == 1
    assert_no_crash(logs, proxy)


async def test_malformed_or_cut_answers_are_never_read_as_an_empty_estate(
    proxy: FaultProxy, tmp_path: Path, logs: io.StringIO
) -> None:
    """botocore reads a JSON body that does not parse as an empty answer: a ListFunctions that
    says nothing would mean "no functions" and every series of the target would vanish."""
    account = "960000000002"
    await seed_estate([account], [PRIMARY], only=["orders-api", "untraced"])
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]),
        reconciler={"interval_seconds": 1},
        aws={"max_attempts": 2},
    )
    async with running_daemon(settings) as daemon:
        healthy = posture(await scrape(daemon), account)
        target = target_of(daemon, account)
        for fault in (Malformed(), Truncate()):
            rule = proxy.add(fault, account=account, operation="ListFunctions")
            before = daemon.store.view().health[target].consecutive_failures
            await wait_for(
                lambda b=before: daemon.store.view().health[target].consecutive_failures >= b + 2,
                30,
                f"{fault.name} failures",
            )
            during = await scrape(daemon)
            assert value(during, "posture_target_up", **labels(account)) == 0
            assert posture(during, account) == healthy  # nothing vanished, nothing passed
            proxy.remove(rule)
            await wait_for(lambda: daemon.store.view().health[target].up, 30, "recovery")
        samples = await scrape(daemon)

    errors = {
        s[1]["error_code"]: s[2]
        for s in select(samples, "posture_aws_api_errors_total", operation="ListFunctions")
    }
    assert errors["MalformedResponse"] >= 2
    assert errors["ConnectionClosedError"] >= 2
    assert posture(samples, account) == healthy
    failed = [e for e in events(logs) if e["event"].startswith("reconcile failed")]
    assert {e["error_code"] for e in failed} == {"MalformedResponse", "ConnectionClosedError"}
    assert_no_crash(logs, proxy)
