"""Lambda concurrency headroom: the collector's pure parts, the controls and the measures.

Response shapes are botocore's (lambda GetAccountSettings, ListProvisionedConcurrencyConfigs,
cloudwatch GetMetricData); moto implements none of the Lambda ones (the shim answers them in the
integration tests) and aggregates dimensions differently from CloudWatch, so the arithmetic edges
are proven here: a limit of 0 in a new account, no datapoints, no ClaimedAccountConcurrency,
provisioned concurrency on aliases and versions, and unreadable parts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from daemon.collectors import awslambda as lambda_collector
from daemon.collectors import concurrency as cc
from daemon.controls.engine import evaluate
from daemon.controls.registry import EvalContext, Outcome, all_controls, get_control
from daemon.measures import measure_policy, measure_target
from daemon.metrics import names as n
from daemon.model import Status, Target, region_resource_id
from daemon.model import awslambda as m
from daemon.policy import PolicyError, parse_policy_text

ACCOUNT, REGION = "111111111111", "us-east-1"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TARGET = Target(ACCOUNT, REGION, "lambda")
WINDOW = m.ConcurrencyWindow(900, 60, 10)
DEFAULT_SETTINGS = m.AccountSettings(1000, 900)
POLICY = """\
version: 1
scope:
  accounts: {static: [{id: "111111111111"}]}
  regions: [us-east-1]
"""

# botocore's shape of a GetAccountSettings answer (an account with AWS's default limit)
ACCOUNT_SETTINGS = {
    "AccountLimit": {
        "TotalCodeSize": 80530636800,
        "CodeSizeUnzipped": 262144000,
        "CodeSizeZipped": 52428800,
        "ConcurrentExecutions": 1000,
        "UnreservedConcurrentExecutions": 900,
    },
    "AccountUsage": {"TotalCodeSize": 1234567, "FunctionCount": 12},
}


def fn(name: str, reserved: int | None = None, **kw: Any) -> m.LambdaFunction:
    return m.LambdaFunction(
        arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        name=name,
        account_id=ACCOUNT,
        region=REGION,
        runtime="python3.12",
        package_type="Zip",
        handler="app.handler",
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/r",
        memory_mb=128,
        timeout_s=3,
        code_sha256="x",
        last_modified=NOW,
        revision_id=None,
        reserved_concurrency=reserved,
        **kw,
    )


def usage(
    concurrent: tuple[int, float] = (0, 0.0),
    unreserved: tuple[int, float] = (0, 0.0),
    claimed: tuple[int, float] = (0, 0.0),
    throttles: tuple[int, float] = (0, 0.0),
    functions: tuple[tuple[str, m.MetricWindow], ...] = (),
) -> m.ConcurrencyUsage:
    return m.ConcurrencyUsage(
        WINDOW,
        m.MetricWindow(*concurrent),
        m.MetricWindow(*unreserved),
        m.MetricWindow(*claimed),
        m.MetricWindow(*throttles),
        functions,
    )


def snapshot(
    functions: tuple[m.LambdaFunction, ...] = (),
    settings: m.AccountSettings | None = DEFAULT_SETTINGS,
    use: m.ConcurrencyUsage | None = None,
    errors: dict[str, str] | None = None,
    collected: bool = True,
) -> m.LambdaSnapshot:
    total, count, problem = cc.reservations(functions)
    budget = m.LambdaConcurrency(settings, use or usage(), total, count) if collected else None
    errs = dict(errors or {})
    if problem:
        errs[m.ASPECT_RESERVATIONS] = problem
    region = m.RegionPosture(
        arn=region_resource_id(ACCOUNT, REGION),
        account_id=ACCOUNT,
        region=REGION,
        errors=errs,
        lambda_concurrency=budget,
    )
    return m.LambdaSnapshot(TARGET, NOW, functions, (), region)


def run(control_id: str, snap: m.LambdaSnapshot, **params: Any) -> Outcome | None:
    ctrl = get_control(control_id)
    ctx = EvalContext(now=NOW, target=TARGET, snapshot=snap)
    return ctrl.evaluate(snap.region, ctrl.params_model(**params), ctx)


def figures(snap: m.LambdaSnapshot, policy_text: str = POLICY) -> dict[tuple[str, str], float]:
    """{(metric, "label=value,...")} of the measures, for readable assertions."""
    out = {}
    for s in measure_target(snap, parse_policy_text(policy_text), NOW):
        if not s.metric.startswith("posture_lambda_"):
            continue  # the backup gauges of the same functions: tests/unit/controls/test_backup.py
        key = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[(s.metric, key)] = s.value
    return out


# --- collector: request and response shapes -----------------------------------------------------


def test_one_request_batches_account_queries_and_top_functions_by_reservation() -> None:
    functions = [
        fn("small", 5),
        fn("big", 200),
        fn("none"),
        fn("tie-b", 50),
        fn("tie-a", 50),
        fn("off", 0),
    ]
    top = [f.name for f in cc.top_reserved(functions, 4)]
    assert top == ["big", "tie-a", "tie-b", "small"]  # largest first, ties by name
    assert [f.name for f in cc.top_reserved(functions, 10)][-1] == "off"  # 0 is a reservation
    assert cc.top_reserved(functions, 0) == []
    queries = cc.metric_queries(top, 60)
    assert [q["Id"] for q in queries] == [
        "concurrent",
        "unreserved",
        "claimed",
        "throttles",
        "fn0",
        "fn1",
        "fn2",
        "fn3",
    ]
    account = [q["MetricStat"] for q in queries[:4]]
    assert [(s["Metric"]["MetricName"], s["Stat"]) for s in account] == [
        ("ConcurrentExecutions", "Maximum"),
        ("UnreservedConcurrentExecutions", "Maximum"),
        ("ClaimedAccountConcurrency", "Maximum"),
        ("Throttles", "Sum"),
    ]
    assert all(s["Metric"]["Dimensions"] == [] and s["Period"] == 60 for s in account)
    assert all(s["Metric"]["Namespace"] == "AWS/Lambda" for s in account)
    assert queries[4]["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": "big"}
    ]
    assert all("Expression" not in q for q in queries)  # moto returns nothing for math


def test_usage_takes_the_maximum_of_gauges_and_the_sum_of_throttles() -> None:
    results = {
        "concurrent": [12.0, 40.0, 33.0],
        "unreserved": [5.0, 9.0],
        "claimed": [],  # not emitted in this account-region
        "throttles": [2.0, 3.0],
        "fn0": [3.0],
        "fn1": [],
    }
    got = cc.parse_usage(results, ["a", "b"], WINDOW)
    assert got.concurrent == m.MetricWindow(3, 40.0)
    assert got.unreserved == m.MetricWindow(2, 9.0)
    assert got.claimed == m.MetricWindow(0, 0.0)
    assert got.throttles == m.MetricWindow(2, 5.0)
    assert got.function_throttles == (("a", m.MetricWindow(1, 3.0)), ("b", m.MetricWindow(0, 0.0)))


def test_account_settings_shape_and_odd_answers() -> None:
    assert cc.parse_account_settings(ACCOUNT_SETTINGS) == m.AccountSettings(1000, 900, 12)
    new_account = {
        "AccountLimit": {"ConcurrentExecutions": 10, "UnreservedConcurrentExecutions": 10}
    }
    assert cc.parse_account_settings(new_account) == m.AccountSettings(10, 10, None)
    assert cc.parse_account_settings({"AccountUsage": {"FunctionCount": 1}}) is None
    assert cc.parse_account_settings({"AccountLimit": {"ConcurrentExecutions": "lots"}}) is None


def test_reservations_sum_is_unknown_when_one_function_could_not_be_read() -> None:
    assert cc.reservations([fn("a", 10), fn("b"), fn("c", 0)]) == (10, 2, None)
    broken = fn("d", errors={m.ASPECT_FUNCTION: "AccessDeniedException"})
    assert cc.reservations([fn("a", 10), broken]) == (None, 0, "AccessDeniedException")


def test_provisioned_configs_on_aliases_and_versions() -> None:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders"
    raw = [  # ListProvisionedConcurrencyConfigs entries, as botocore parses them
        {
            "FunctionArn": f"{base}:live",
            "RequestedProvisionedConcurrentExecutions": 20,
            "AvailableProvisionedConcurrentExecutions": 20,
            "AllocatedProvisionedConcurrentExecutions": 20,
            "Status": "READY",
            "LastModified": "2026-02-27T10:00:00+0000",
        },
        {
            "FunctionArn": f"{base}:7",
            "RequestedProvisionedConcurrentExecutions": 50,
            "AvailableProvisionedConcurrentExecutions": 0,
            "AllocatedProvisionedConcurrentExecutions": 0,
            "Status": "IN_PROGRESS",
        },
    ]
    assert lambda_collector._provisioned(raw) == (
        m.ProvisionedConcurrency("7", 50, 0, 0, "IN_PROGRESS"),
        m.ProvisionedConcurrency("live", 20, 20, 20, "READY"),
    )


# --- controls ------------------------------------------------------------------------------------


def test_every_concurrency_control_has_tests_here() -> None:
    registered = {
        cid
        for cid, c in all_controls().items()
        if c.evaluate.__module__ == "daemon.controls.concurrency"
    }
    assert registered == {
        "lambda-concurrency-headroom",
        "lambda-unreserved-concurrency",
        "lambda-reserved-concurrency-fraction",
    }
    assert all(all_controls()[c].resource_type == m.ACCOUNT_REGION for c in registered)


def test_headroom_fails_below_the_ratio_and_names_the_figures() -> None:
    busy = snapshot(
        (fn("a", 10),), m.AccountSettings(390, 100), usage((3, 352.0), claimed=(3, 382))
    )
    out = run("lambda-concurrency-headroom", busy)
    assert out is not None and out.status is Status.FAIL
    assert out.evidence == (
        "peak 352 of limit 390 concurrent executions in the last 15 min: headroom 38 (10%), "
        "below 20% (claimed peak 382)"
    )
    # exactly at the threshold is enough; a looser policy passes the same peak
    at = snapshot((fn("a"),), m.AccountSettings(1000, 1000), usage((1, 800.0)))
    assert run("lambda-concurrency-headroom", at).status is Status.PASS  # type: ignore[union-attr]
    loose = run("lambda-concurrency-headroom", busy, min_headroom_ratio=0.05)
    assert loose is not None and loose.status is Status.PASS
    assert "claimed peak 382" in loose.evidence


def test_no_datapoints_is_idle_headroom_is_the_limit_and_it_says_so() -> None:
    idle = snapshot((fn("a", 10),), m.AccountSettings(1000, 990), usage())
    out = run("lambda-concurrency-headroom", idle)
    assert out is not None and out.status is Status.PASS
    assert "no ConcurrentExecutions datapoints in the last 15 min (idle)" in out.evidence
    f = figures(idle)
    assert f[(n.LAMBDA_CONCURRENT_PEAK.name, "")] == 0
    assert f[(n.LAMBDA_HEADROOM.name, "")] == 1000
    assert f[(n.LAMBDA_DATAPOINTS.name, "metric=ConcurrentExecutions")] == 0
    assert f[(n.LAMBDA_THROTTLES.name, "")] == 0
    assert (n.LAMBDA_CLAIMED_PEAK.name, "") not in f  # not emitted: absent, not 0


def test_limit_zero_in_a_new_account() -> None:
    empty = snapshot((), m.AccountSettings(0, 0))
    assert run("lambda-concurrency-headroom", empty) is None  # nothing to run, nothing throttled
    assert run("lambda-unreserved-concurrency", empty) is None
    assert run("lambda-reserved-concurrency-fraction", empty).status is Status.PASS  # type: ignore[union-attr]
    with_fn = snapshot((fn("a"),), m.AccountSettings(0, 0))
    out = run("lambda-concurrency-headroom", with_fn)
    assert out is not None and out.status is Status.FAIL
    assert out.evidence == "concurrency limit is 0: every invocation is throttled"
    f = figures(with_fn)
    assert f[(n.LAMBDA_CONCURRENCY_LIMIT.name, "")] == 0
    assert f[(n.LAMBDA_HEADROOM.name, "")] == 0  # the ratio is left to PromQL, which drops it


def test_new_account_limit_of_ten() -> None:
    empty = snapshot((), m.AccountSettings(10, 10))
    assert run("lambda-unreserved-concurrency", empty) is None
    assert run("lambda-concurrency-headroom", empty).status is Status.PASS  # type: ignore[union-attr]
    used = snapshot((fn("a"),), m.AccountSettings(10, 10))
    out = run("lambda-unreserved-concurrency", used)
    assert out is not None and out.status is Status.FAIL
    assert out.evidence.startswith("unreserved pool 10 of limit 10 (0 reserved), below 150")


def test_unreserved_pool_at_the_aws_floor() -> None:
    snap = snapshot((fn("a", 290),), m.AccountSettings(390, 100))
    out = run("lambda-unreserved-concurrency", snap)
    assert out is not None and out.status is Status.FAIL
    assert out.evidence == (
        "unreserved pool 100 of limit 390 (290 reserved), below 150; at AWS's floor of 100, "
        "no further reservation is possible"
    )
    ok = run(
        "lambda-unreserved-concurrency", snapshot((fn("a", 850),), m.AccountSettings(1000, 150))
    )
    assert ok is not None and ok.status is Status.PASS


def test_reserved_fraction() -> None:
    functions = (fn("orders", 300), fn("batch", 150), fn("tiny", 60), fn("spare"))
    snap = snapshot(functions, m.AccountSettings(1000, 490))
    out = run("lambda-reserved-concurrency-fraction", snap)
    assert out is not None and out.status is Status.FAIL
    assert out.evidence == (
        "510 of limit 1000 reserved (51%) by 3 function(s); largest: orders (300), batch (150), "
        "tiny (60), above 50%"
    )
    ok = run("lambda-reserved-concurrency-fraction", snap, max_reserved_fraction=0.6)
    assert ok is not None and ok.status is Status.PASS
    none = run("lambda-reserved-concurrency-fraction", snapshot((fn("a"),)))
    assert none is not None and none.evidence == "no reserved concurrency"


@pytest.mark.parametrize(
    ("errors", "failing"),
    [
        (
            {m.ASPECT_ACCOUNT_SETTINGS: "404"},
            {
                "lambda-concurrency-headroom",
                "lambda-unreserved-concurrency",
                "lambda-reserved-concurrency-fraction",
            },
        ),
        ({m.ASPECT_CONCURRENCY_METRICS: "AccessDenied"}, {"lambda-concurrency-headroom"}),
        (
            {m.ASPECT_RESERVATIONS: "AccessDeniedException"},
            {"lambda-reserved-concurrency-fraction"},
        ),
    ],
)
def test_unreadable_parts_make_exactly_their_controls_error(
    errors: dict[str, str], failing: set[str]
) -> None:
    settings = None if m.ASPECT_ACCOUNT_SETTINGS in errors else m.AccountSettings(1000, 900)
    use = None if m.ASPECT_CONCURRENCY_METRICS in errors else usage((2, 10.0))
    snap = snapshot((fn("a", 100),), settings, errors=errors)
    if use is None:
        budget = snap.region.lambda_concurrency
        assert budget is not None
        region = m.RegionPosture(
            arn=snap.region.arn,
            account_id=ACCOUNT,
            region=REGION,
            errors=snap.region.errors,
            lambda_concurrency=m.LambdaConcurrency(settings, None, budget.reserved_total, 1),
        )
        snap = m.LambdaSnapshot(TARGET, NOW, snap.functions, (), region)
    findings = evaluate(snap, parse_policy_text(POLICY), NOW).findings
    concurrency = {f.control: f for f in findings if f.resource_type == m.ACCOUNT_REGION}
    errored = {c for c, f in concurrency.items() if f.status is Status.ERROR}
    assert errored == failing
    for control in failing:
        assert next(iter(errors.values())) in concurrency[control].evidence


# --- measures ------------------------------------------------------------------------------------


def test_every_figure_of_a_busy_account_region() -> None:
    functions = (
        fn(
            "orders",
            50,
            provisioned=(
                m.ProvisionedConcurrency("7", 5, 5, 5, "READY"),
                m.ProvisionedConcurrency("live", 20, 12, 12, "IN_PROGRESS"),
            ),
        ),
        fn("batch", 0),
        fn("free"),
    )
    use = usage(
        (3, 352.0),
        (3, 92.0),
        (3, 382.0),
        (2, 24.0),
        (("orders", m.MetricWindow(2, 17.0)), ("batch", m.MetricWindow(0, 0.0))),
    )
    f = figures(snapshot(functions, m.AccountSettings(390, 340), use))
    assert f == {
        (n.LAMBDA_FUNCTION_RESERVED.name, "function=orders"): 50,
        (n.LAMBDA_FUNCTION_RESERVED.name, "function=batch"): 0,  # reserved 0: fully throttled
        (n.LAMBDA_PROVISIONED.name, "function=orders,qualifier=7"): 5,
        (n.LAMBDA_PROVISIONED_ALLOCATED.name, "function=orders,qualifier=7"): 5,
        (n.LAMBDA_PROVISIONED.name, "function=orders,qualifier=live"): 20,
        (n.LAMBDA_PROVISIONED_ALLOCATED.name, "function=orders,qualifier=live"): 12,
        (n.LAMBDA_RESERVED.name, ""): 50,
        (n.LAMBDA_CONCURRENCY_LIMIT.name, ""): 390,
        (n.LAMBDA_UNRESERVED.name, ""): 340,
        (n.LAMBDA_CONCURRENT_PEAK.name, ""): 352,
        (n.LAMBDA_UNRESERVED_PEAK.name, ""): 92,
        (n.LAMBDA_CLAIMED_PEAK.name, ""): 382,
        (n.LAMBDA_HEADROOM.name, ""): 38,
        (n.LAMBDA_THROTTLES.name, ""): 24,
        (n.LAMBDA_FUNCTION_THROTTLES.name, "function=orders"): 17,
        (n.LAMBDA_FUNCTION_THROTTLES.name, "function=batch"): 0,
        (n.LAMBDA_DATAPOINTS.name, "metric=ConcurrentExecutions"): 3,
        (n.LAMBDA_DATAPOINTS.name, "metric=UnreservedConcurrentExecutions"): 3,
        (n.LAMBDA_DATAPOINTS.name, "metric=ClaimedAccountConcurrency"): 3,
        (n.LAMBDA_DATAPOINTS.name, "metric=Throttles"): 2,
        (n.LAMBDA_MIN_HEADROOM_RATIO.name, ""): 0.2,
        (n.LAMBDA_MIN_UNRESERVED.name, ""): 150,
        (n.LAMBDA_MAX_RESERVED_FRACTION.name, ""): 0.5,
    }


def test_absent_parts_leave_absent_series_never_defaults() -> None:
    thresholds = {
        n.LAMBDA_MIN_HEADROOM_RATIO.name,
        n.LAMBDA_MIN_UNRESERVED.name,
        n.LAMBDA_MAX_RESERVED_FRACTION.name,
    }
    no_settings = {metric for metric, _ in figures(snapshot((fn("a", 5),), None))}
    assert not no_settings & {
        n.LAMBDA_CONCURRENCY_LIMIT.name,
        n.LAMBDA_UNRESERVED.name,
        n.LAMBDA_HEADROOM.name,
    }
    assert n.LAMBDA_CONCURRENT_PEAK.name in no_settings  # CloudWatch still answered
    no_usage = snapshot((fn("a", 5),))
    budget = no_usage.region.lambda_concurrency
    assert budget is not None
    region = m.RegionPosture(
        arn=no_usage.region.arn,
        account_id=ACCOUNT,
        region=REGION,
        lambda_concurrency=m.LambdaConcurrency(budget.settings, None, 5, 1),
    )
    got = {
        metric
        for metric, _ in figures(m.LambdaSnapshot(TARGET, NOW, no_usage.functions, (), region))
    }
    assert got == {
        n.LAMBDA_FUNCTION_RESERVED.name,
        n.LAMBDA_RESERVED.name,
        n.LAMBDA_CONCURRENCY_LIMIT.name,
        n.LAMBDA_UNRESERVED.name,
        *thresholds,
    }
    unknown_sum = figures(snapshot((fn("a", errors={m.ASPECT_FUNCTION: "AccessDenied"}),)))
    assert (n.LAMBDA_RESERVED.name, "") not in unknown_sum
    not_collected = {metric for metric, _ in figures(snapshot(collected=False))}
    assert not_collected == thresholds


def test_thresholds_follow_overrides_and_vanish_with_a_disabled_control() -> None:
    policy = (
        POLICY
        + """\
controls:
  lambda-concurrency-headroom:
    params: {min_headroom_ratio: 0.3}
    overrides:
      - match: {regions: [us-east-1]}
        params: {min_headroom_ratio: 0.1}
  lambda-unreserved-concurrency:
    overrides:
      - match: {accounts: ["111111111111"]}
        enabled: false
concurrency:
  lookback_minutes: 60
"""
    )
    f = figures(snapshot((fn("a"),)), policy)
    assert f[(n.LAMBDA_MIN_HEADROOM_RATIO.name, "")] == 0.1
    assert (n.LAMBDA_MIN_UNRESERVED.name, "") not in f
    assert f[(n.LAMBDA_MAX_RESERVED_FRACTION.name, "")] == 0.5
    parsed = parse_policy_text(policy)
    window = [
        (s.metric, s.value) for s in measure_policy(parsed) if s.metric.startswith("posture_l")
    ]
    assert window == [(n.LAMBDA_LOOKBACK.name, 3600)]
    assert parsed.document.concurrency.window() == m.ConcurrencyWindow(3600, 60, 10)


@pytest.mark.parametrize(
    ("section", "path", "message"),
    [
        ("  period_seconds: 90\n", "concurrency", "multiple of 60"),
        ("  lookback_minutes: 1\n  period_seconds: 120\n", "concurrency", "longer than"),
        ("  top_functions: 101\n", "concurrency.top_functions", "less than or equal to 100"),
        ("  window: 5\n", "concurrency.window", "Extra inputs"),
    ],
)
def test_concurrency_section_errors_name_the_field_and_line(
    section: str, path: str, message: str
) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(POLICY + "concurrency:\n" + section, source="policy.yaml")
    [problem] = info.value.problems
    assert problem.path == path and message in problem.message
    assert problem.line is not None and problem.line >= 5
