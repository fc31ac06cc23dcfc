"""The evaluation engine with real compiled policies and real Lambda snapshots."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import textwrap
from typing import Any

import pytest

from daemon.controls.awslambda import EnvSecretsParams
from daemon.controls.engine import Evaluation, evaluate, evaluate_steps
from daemon.controls.registry import all_controls
from daemon.model import Finding, Severity, Status, Target, region_resource_id
from daemon.model import awslambda as m
from daemon.policy import Policy, parse_policy_text

ACCOUNT = "111111111111"
REGION = "us-east-1"
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
TARGET = Target(ACCOUNT, REGION, "lambda")
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/shared-role"

LAMBDA_CONTROLS = {  # enabled by default (opt-in controls are off unless the policy says so)
    cid for cid, c in all_controls().items() if c.service == "lambda" and c.default_enabled
}


def policy(body: str = "", scope_accounts: str = "{own_account: true}") -> Policy:
    head = f"""\
version: 1
scope:
  accounts: {scope_accounts}
  regions: [us-east-1, eu-west-1]
"""
    return parse_policy_text(head + textwrap.dedent(body))


def make_fn(name: str, **overrides: Any) -> m.LambdaFunction:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "name": name,
        "account_id": ACCOUNT,
        "region": REGION,
        "runtime": "python3.12",
        "package_type": "Zip",
        "handler": "app.handler",
        "role_arn": ROLE_ARN,
        "memory_mb": 256,
        "timeout_s": 30,
        "code_sha256": "n8bW1mFv0VMhpt0HlcVEOgSxm6kOzGk2Yx3mSr8bDYo=",
        "last_modified": NOW - dt.timedelta(days=3),
        "revision_id": "rev-1",
        "log_group_name": f"/aws/lambda/{name}",
    }
    fields.update(overrides)
    return m.LambdaFunction(**fields)


def snapshot(*functions: m.LambdaFunction, target: Target = TARGET) -> m.LambdaSnapshot:
    return m.LambdaSnapshot(
        target=target,
        collected_at=NOW,
        functions=functions,
        layer_versions=(),
        region=m.RegionPosture(
            arn=region_resource_id(target.account_id, target.region),
            account_id=target.account_id,
            region=target.region,
        ),
    )


def findings_of(ev: Evaluation, control: str, resource: str | None = None) -> list[Finding]:
    return [
        f
        for f in ev.findings
        if f.control == control and (resource is None or f.resource == resource)
    ]


def only(ev: Evaluation, control: str, resource: str | None = None) -> Finding:
    found = findings_of(ev, control, resource)
    assert len(found) == 1, found
    return found[0]


# --- findings and aspects ------------------------------------------------------------------------


def test_findings_carry_target_and_control_metadata() -> None:
    fn = make_fn("orders", tracing_mode="PassThrough")
    ev = evaluate(snapshot(fn), policy(), NOW)
    f = only(ev, "lambda-xray-active")
    assert (f.resource, f.resource_type) == (fn.arn, "lambda-function")
    assert (f.account_id, f.region, f.service) == (ACCOUNT, REGION, "lambda")
    assert f.status is Status.FAIL and f.severity is Severity.LOW and f.violating
    assert "PassThrough" in f.evidence
    assert ev.problems == ()


def test_not_applicable_controls_produce_no_finding() -> None:
    ev = evaluate(snapshot(make_fn("plain")), policy(), NOW)
    assert findings_of(ev, "lambda-env-cmk-encryption") == []  # no environment
    assert findings_of(ev, "lambda-vpc-multi-az") == []  # not in a VPC
    assert findings_of(ev, "lambda-api-waf") == []  # not web-triggered
    # still listed as evaluated controls (zero violations, not "missing")
    assert {"lambda-env-cmk-encryption", "lambda-vpc-multi-az"} <= {c for c, _ in ev.controls}


def test_unreadable_aspect_gives_error_naming_the_aspect() -> None:
    fn = make_fn("orders", errors={m.ASPECT_ROLE: "AccessDenied"})
    ev = evaluate(snapshot(fn), policy(), NOW)
    for control in ("lambda-role-least-privilege", "lambda-logging"):
        f = only(ev, control)
        assert f.status is Status.ERROR
        assert "role (AccessDenied)" in f.evidence
        assert not f.violating
    # controls that do not need the role are evaluated normally
    assert only(ev, "lambda-xray-active").status is Status.FAIL


def test_environment_unreadable_after_kms_denial_is_an_error() -> None:
    """Environment `Error` from KMS-denied decryption (moto never returns it)."""
    fn = make_fn("orders", errors={m.ASPECT_ENV: "KMSAccessDeniedException"})
    ev = evaluate(snapshot(fn), policy(), NOW)
    f = only(ev, "lambda-env-no-plaintext-secrets")
    assert f.status is Status.ERROR
    assert f.evidence == "could not read environment (KMSAccessDeniedException)"


def test_several_missing_aspects_are_all_named() -> None:
    """Malformed policy JSON (moto stores only valid policies): the collector marks the aspect."""
    errors = {m.ASPECT_POLICY: "MalformedPolicy", m.ASPECT_WEB: "AccessDenied"}
    ev = evaluate(snapshot(make_fn("orders", errors=errors)), policy(), NOW)
    f = only(ev, "lambda-api-waf")
    assert f.status is Status.ERROR
    assert "policy (MalformedPolicy)" in f.evidence and "web_stages (AccessDenied)" in f.evidence
    assert only(ev, "lambda-resource-policy-restricted").status is Status.ERROR


def test_error_findings_are_never_exempted() -> None:
    body = """\
    exemptions:
      - controls: ["*"]
        accounts: ["111111111111"]
        reason: everything in this account is a sandbox
        expires: 2099-12-31
    """
    fn = make_fn("orders", errors={m.ASPECT_ROLE: "AccessDenied"})
    f = only(evaluate(snapshot(fn), policy(body), NOW), "lambda-role-least-privilege")
    assert f.status is Status.ERROR
    assert (f.exempted, f.exemption_reason, f.exemption_expired) == (False, None, False)


def test_a_control_that_raises_gives_error_and_a_problem() -> None:
    """A real control raising on real input: an invalid regular expression in name_patterns
    makes lambda-env-no-plaintext-secrets raise re.error (the parameters are built with
    model_construct, so the test does not depend on whether the loader rejects such patterns)."""
    base = policy()
    cc = base.controls["lambda-env-no-plaintext-secrets"]
    bad = EnvSecretsParams.model_construct(name_patterns=["(unclosed"])
    broken = dataclasses.replace(cc, base=dataclasses.replace(cc.base, params=bad))
    pol = dataclasses.replace(
        base, controls={**base.controls, "lambda-env-no-plaintext-secrets": broken}
    )
    fn_a = make_fn("a", env_vars=(m.EnvVar("STAGE"),))
    fn_b = make_fn("b", tracing_mode="Active")
    ev = evaluate(snapshot(fn_a, fn_b), pol, NOW)
    for fn in (fn_a, fn_b):
        f = only(ev, "lambda-env-no-plaintext-secrets", fn.arn)
        assert f.status is Status.ERROR
        assert f.evidence == f"evaluation failed ({re.error.__name__})"
    assert len(ev.problems) == 2
    assert all(
        p.startswith("lambda-env-no-plaintext-secrets on arn:aws:lambda:") for p in ev.problems
    )
    assert any(fn_a.arn in p for p in ev.problems)
    # the other controls still ran on the same resources
    assert only(ev, "lambda-xray-active", fn_b.arn).status is Status.PASS


# --- enabling, overrides -------------------------------------------------------------------------


def test_disabled_control_is_skipped_and_not_listed() -> None:
    body = """\
    controls:
      lambda-xray-active:
        enabled: false
    """
    ev = evaluate(snapshot(make_fn("orders")), policy(body), NOW)
    assert findings_of(ev, "lambda-xray-active") == []
    assert "lambda-xray-active" not in {c for c, _ in ev.controls}


def test_severity_setting_changes_finding_severity() -> None:
    body = """\
    controls:
      lambda-xray-active:
        severity: high
    """
    ev = evaluate(snapshot(make_fn("orders")), policy(body), NOW)
    assert only(ev, "lambda-xray-active").severity is Severity.HIGH
    assert ("lambda-xray-active", Severity.HIGH) in ev.controls
    assert ("lambda-xray-active", Severity.LOW) not in ev.controls


def test_params_change_the_verdict() -> None:
    fn = make_fn("batch", timeout_s=600)
    default = evaluate(snapshot(fn), policy(), NOW)
    assert only(default, "lambda-timeout-memory-bounds").status is Status.FAIL
    body = """\
    controls:
      lambda-timeout-memory-bounds:
        params: {max_timeout_seconds: 900}
    """
    relaxed = evaluate(snapshot(fn), policy(body), NOW)
    assert only(relaxed, "lambda-timeout-memory-bounds").status is Status.PASS


TAG_OVERRIDES = """\
controls:
  lambda-timeout-memory-bounds:
    params: {max_timeout_seconds: 60}
    overrides:
      - match: {tags: {env: "dev*"}}
        params: {max_timeout_seconds: 900}
        severity: medium
      - match: {tags: {env: "*"}}
        severity: high
"""


def test_override_by_tag_changes_params_and_severity() -> None:
    dev = make_fn("dev-job", timeout_s=600, tags={"env": "development"})
    prod = make_fn("prod-job", timeout_s=600, tags={"env": "prod"})
    untagged = make_fn("other-job", timeout_s=600)
    ev = evaluate(snapshot(dev, prod, untagged), policy(TAG_OVERRIDES), NOW)
    f_dev = only(ev, "lambda-timeout-memory-bounds", dev.arn)
    assert (f_dev.status, f_dev.severity) == (Status.PASS, Severity.MEDIUM)
    # the first matching override wins; the second one keeps the base params (60 s)
    f_prod = only(ev, "lambda-timeout-memory-bounds", prod.arn)
    assert (f_prod.status, f_prod.severity) == (Status.FAIL, Severity.HIGH)
    assert "outside [1, 60]" in f_prod.evidence
    f_other = only(ev, "lambda-timeout-memory-bounds", untagged.arn)
    assert (f_other.status, f_other.severity) == (Status.FAIL, Severity.LOW)
    severities = {s for c, s in ev.controls if c == "lambda-timeout-memory-bounds"}
    assert severities == {Severity.LOW, Severity.MEDIUM, Severity.HIGH}


def test_override_by_account() -> None:
    body = """\
    controls:
      lambda-xray-active:
        overrides:
          - match: {accounts: ["222222222222"]}
            enabled: false
    """
    pol = policy(body)
    mine = evaluate(snapshot(make_fn("orders")), pol, NOW)
    assert only(mine, "lambda-xray-active").status is Status.FAIL
    other = Target("222222222222", REGION, "lambda")
    fn = make_fn("orders", arn=f"arn:aws:lambda:{REGION}:222222222222:function:orders")
    theirs = evaluate(snapshot(fn, target=other), pol, NOW)
    assert findings_of(theirs, "lambda-xray-active") == []


def test_override_by_account_changes_params_and_severity() -> None:
    body = """\
    controls:
      lambda-timeout-memory-bounds:
        overrides:
          - match: {accounts: ["222222222222"]}
            params: {max_timeout_seconds: 900}
            severity: critical
    """
    pol = policy(body)
    mine = only(
        evaluate(snapshot(make_fn("batch", timeout_s=600)), pol, NOW),
        "lambda-timeout-memory-bounds",
    )
    assert (mine.status, mine.severity) == (Status.FAIL, Severity.LOW)
    other = Target("222222222222", REGION, "lambda")
    fn = make_fn("batch", timeout_s=600, arn=f"arn:aws:lambda:{REGION}:222222222222:function:batch")
    fn_big = make_fn(
        "huge", memory_mb=8192, arn=f"arn:aws:lambda:{REGION}:222222222222:function:huge"
    )
    ev = evaluate(snapshot(fn, fn_big, target=other), pol, NOW)
    theirs = only(ev, "lambda-timeout-memory-bounds", fn.arn)
    assert (theirs.status, theirs.severity) == (Status.PASS, Severity.CRITICAL)
    big = only(ev, "lambda-timeout-memory-bounds", fn_big.arn)
    assert (big.status, big.severity) == (Status.FAIL, Severity.CRITICAL)
    assert big.account_id == "222222222222"


def test_override_by_region() -> None:
    body = """\
    controls:
      lambda-xray-active:
        overrides:
          - match: {regions: [eu-west-1]}
            severity: critical
    """
    pol = policy(body)
    us = evaluate(snapshot(make_fn("orders")), pol, NOW)
    assert only(us, "lambda-xray-active").severity is Severity.LOW
    eu_target = Target(ACCOUNT, "eu-west-1", "lambda")
    eu_fn = make_fn("orders", arn=f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:orders")
    eu = evaluate(snapshot(eu_fn, target=eu_target), pol, NOW)
    assert only(eu, "lambda-xray-active").severity is Severity.CRITICAL
    assert only(eu, "lambda-xray-active").region == "eu-west-1"


def test_control_disabled_at_base_runs_where_an_override_enables_it() -> None:
    body = """\
    controls:
      lambda-vpc-attached:
        enabled: false
        overrides:
          - match: {tags: {data: restricted}}
            enabled: true
    """
    restricted = make_fn("ledger", tags={"data": "restricted"})
    public = make_fn("web")
    ev = evaluate(snapshot(restricted, public), policy(body), NOW)
    assert [f.resource for f in findings_of(ev, "lambda-vpc-attached")] == [restricted.arn]
    assert ("lambda-vpc-attached", Severity.MEDIUM) in ev.controls


# --- exemptions ----------------------------------------------------------------------------------

EXEMPTIONS = """\
exemptions:
  - id: SEC-1
    controls: [lambda-xray-active]
    resources: ["arn:aws:lambda:*:111111111111:function:legacy-*"]
    reason: legacy functions are being retired
    expires: 2099-12-31
  - id: SEC-2
    controls: [lambda-reserved-concurrency]
    resources: ["arn:aws:lambda:*:*:function:legacy-*"]
    reason: expired waiver
    expires: 2025-01-31
  - controls: ["*"]
    tags: {team: "data-*"}
    reason: data platform sandbox, reviewed
    expires: 2025-06-01
"""


def test_active_exemption_marks_failure_exempted() -> None:
    fn = make_fn("legacy-billing")
    f = only(evaluate(snapshot(fn), policy(EXEMPTIONS), NOW), "lambda-xray-active")
    assert f.status is Status.FAIL
    assert f.exempted and not f.violating
    assert f.exemption_reason == "SEC-1"
    assert not f.exemption_expired


def test_expired_exemption_is_recorded_but_not_applied() -> None:
    fn = make_fn("legacy-billing")
    f = only(evaluate(snapshot(fn), policy(EXEMPTIONS), NOW), "lambda-reserved-concurrency")
    assert f.status is Status.FAIL
    assert not f.exempted and f.violating
    assert f.exemption_expired
    assert f.exemption_reason == "SEC-2"


def test_exemption_never_applies_to_passing_findings() -> None:
    fn = make_fn("legacy-billing", tracing_mode="Active")
    f = only(evaluate(snapshot(fn), policy(EXEMPTIONS), NOW), "lambda-xray-active")
    assert f.status is Status.PASS
    assert (f.exempted, f.exemption_reason, f.exemption_expired) == (False, None, False)


def test_resource_glob_must_match() -> None:
    fn = make_fn("billing-legacy")
    f = only(evaluate(snapshot(fn), policy(EXEMPTIONS), NOW), "lambda-xray-active")
    assert f.violating and f.exemption_reason is None


def test_tag_glob_exemption_for_every_control_expires_at_end_of_day() -> None:
    fn = make_fn("etl", tags={"team": "data-eng"})
    ev = evaluate(snapshot(fn), policy(EXEMPTIONS), NOW)  # expires == today: still active
    failures = [f for f in ev.findings if f.resource == fn.arn and f.status is Status.FAIL]
    assert failures
    assert all(
        f.exempted and f.exemption_reason == "data platform sandbox, reviewed" for f in failures
    )
    tomorrow = NOW + dt.timedelta(days=1)
    later = evaluate(snapshot(fn), policy(EXEMPTIONS), tomorrow)
    failures = [f for f in later.findings if f.resource == fn.arn and f.status is Status.FAIL]
    assert failures and all(f.exemption_expired and f.violating for f in failures)


def test_tag_exemption_needs_the_tag_to_match() -> None:
    fn = make_fn("etl", tags={"team": "payments"})
    ev = evaluate(snapshot(fn), policy(EXEMPTIONS), NOW)
    assert all(not f.exempted for f in ev.findings)


def test_active_exemption_wins_over_an_earlier_expired_one() -> None:
    body = """\
    exemptions:
      - id: OLD
        controls: [lambda-xray-active]
        resources: ["*"]
        reason: first waiver
        expires: 2024-12-31
      - id: NEW
        controls: [lambda-xray-active]
        resources: ["*"]
        reason: renewed waiver
        expires: 2026-12-31
    """
    f = only(evaluate(snapshot(make_fn("orders")), policy(body), NOW), "lambda-xray-active")
    assert f.exempted and f.exemption_reason == "NEW" and not f.exemption_expired


def test_account_scoped_exemption() -> None:
    body = """\
    exemptions:
      - controls: [lambda-xray-active]
        accounts: ["222222222222"]
        reason: other account only
        expires: 2099-12-31
    """
    f = only(evaluate(snapshot(make_fn("orders")), policy(body), NOW), "lambda-xray-active")
    assert f.violating and f.exemption_reason is None


def test_region_resources_can_be_exempted_by_arn() -> None:
    body = """\
    exemptions:
      - controls: [lambda-config-recording]
        resources: ["arn:aws::*:111111111111:account-region"]
        reason: Config is recorded by the central account
        expires: 2099-12-31
    """
    ev = evaluate(snapshot(), policy(body), NOW)
    assert only(ev, "lambda-config-recording").exempted
    assert only(ev, "lambda-cloudtrail-management-events").violating


# --- the controls tuple --------------------------------------------------------------------------


def test_controls_lists_every_enabled_control_even_without_resources() -> None:
    ev = evaluate(snapshot(), policy(), NOW)
    assert {c for c, _ in ev.controls} == LAMBDA_CONTROLS
    assert len(ev.controls) == len(LAMBDA_CONTROLS)
    # only the region-wide controls have a resource to report on
    assert {f.control for f in ev.findings} == {
        "lambda-config-recording",
        "lambda-cloudtrail-management-events",
        "lambda-concurrency-headroom",
        "lambda-unreserved-concurrency",
        "lambda-reserved-concurrency-fraction",
    }
    # a snapshot without concurrency data (not collected) never passes the concurrency controls
    assert {f.status for f in ev.findings if "concurrency" in f.control} == {Status.ERROR}
    default_severity = {cid: c.severity for cid, c in all_controls().items()}
    assert all(default_severity[c] is s for c, s in ev.controls)


def test_findings_cover_every_function_and_applicable_control() -> None:
    fns = tuple(make_fn(f"fn-{i}") for i in range(3))
    ev = evaluate(snapshot(*fns), policy(), NOW)
    for fn in fns:
        assert only(ev, "lambda-vpc-attached", fn.arn).status is Status.FAIL
    assert len(findings_of(ev, "lambda-vpc-attached")) == 3
    assert not findings_of(ev, "lambda-layer-not-public")  # no layer versions


def test_evaluate_steps_pauses_once_per_control_and_ends_with_the_same_evaluation() -> None:
    """The stepwise form the reconciler drives (one control per step of its event loop) yields
    once per control of the service and returns exactly what `evaluate` returns."""
    p = policy()
    snap = snapshot(make_fn("a"), make_fn("b", timeout_s=900, memory_mb=10240))
    steps = evaluate_steps(snap, p, NOW)
    pauses = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            stepped: Evaluation = done.value
            break
        pauses += 1
    assert pauses == len(p.controls_for("lambda")) > 1
    assert stepped == evaluate(snap, p, NOW)
    assert {make_fn("a").arn, make_fn("b").arn} <= {f.resource for f in stepped.findings}


async def test_the_reconciler_lets_other_tasks_run_between_controls() -> None:
    from daemon.reconciler.reconciler import _evaluate

    p = policy()
    snap = snapshot(*(make_fn(f"fn-{i}") for i in range(20)))
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running
    before = ticks
    evaluation = await _evaluate(snap, p, NOW)
    done.set()
    await task
    assert evaluation == evaluate(snap, p, NOW)
    # the ticker ran about once per control while the target was evaluated
    assert ticks - before >= len(p.controls_for("lambda")) - 1


async def test_targets_take_turns_to_be_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the reconciler's lock, concurrent targets are evaluated one after the other (their
    findings are not all held half-built at once); without it they interleave."""
    from daemon.reconciler import reconciler

    log: list[str] = []
    real = reconciler.evaluate_steps

    def logged(snap: m.LambdaSnapshot, p: Policy, now: dt.datetime) -> Any:
        name = snap.functions[0].name
        log.append(f"{name} starts")
        result = yield from real(snap, p, now)
        log.append(f"{name} ends")
        return result

    monkeypatch.setattr(reconciler, "evaluate_steps", logged)
    p = policy()
    snaps = [snapshot(make_fn("a")), snapshot(make_fn("b"))]
    for turn, expected in (
        (asyncio.Lock(), ["a starts", "a ends", "b starts", "b ends"]),
        (None, ["a starts", "b starts", "a ends", "b ends"]),
    ):
        log.clear()
        results = await asyncio.gather(*(reconciler._evaluate(s, p, NOW, turn) for s in snaps))
        assert log == expected
        assert list(results) == [evaluate(s, p, NOW) for s in snaps]
