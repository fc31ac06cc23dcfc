"""Lambda concurrency headroom: region-level controls and the gauges behind them.

The seed guidance caps concurrency to contain abuse; an SRE also needs to see how close each
account-region runs to its limit before Lambda throttles. The controls read the account-region's
`LambdaConcurrency` (GetAccountSettings, one batched GetMetricData, the functions' reservations);
the measures export the same figures as gauges, rendered at scrape time.

Arithmetic edges, decided once here:
- no CloudWatch datapoints (an idle account-region): the peak is 0 and the datapoints gauge says
  0 — headroom is the whole limit, and nothing pretends it was measured;
- ClaimedAccountConcurrency is not emitted everywhere: its peak is absent without datapoints;
- a limit of 0 (or any limit) with no functions in the account-region cannot throttle anything:
  the unreserved-pool control does not apply there (new accounts start at a limit of 10);
- a part that could not be read has no series and makes the controls that need it `error`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from pydantic import Field

from daemon.controls.registry import (
    EvalContext,
    Outcome,
    Params,
    control,
    errored,
    failed,
    passed,
)
from daemon.measures import Sample, policy_measure, sample, target_measure
from daemon.metrics import names as n
from daemon.model import EMPTY_TAGS, Severity, Snapshot
from daemon.model import awslambda as m
from daemon.policy.compiled import Policy

SERVICE = "lambda"
HEADROOM = "lambda-concurrency-headroom"
UNRESERVED = "lambda-unreserved-concurrency"
RESERVED_FRACTION = "lambda-reserved-concurrency-fraction"
AWS_MIN_UNRESERVED = 100  # PutFunctionConcurrency must leave this much unreserved
DOCS = "https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html"
MONITORING_DOCS = "https://docs.aws.amazon.com/lambda/latest/dg/monitoring-concurrency.html"


def _minutes(usage: m.ConcurrencyUsage) -> str:
    return f"{usage.window.lookback_seconds // 60} min"


def _budget(region: m.RegionPosture) -> m.LambdaConcurrency | None:
    return region.lambda_concurrency


def _has_functions(ctx: EvalContext) -> bool:
    snapshot = ctx.snapshot
    return isinstance(snapshot, m.LambdaSnapshot) and bool(snapshot.functions)


# --- headroom ------------------------------------------------------------------------------------


class HeadroomParams(Params):
    min_headroom_ratio: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Least share of the account concurrency limit left free at the peak of "
        "ConcurrentExecutions in the lookback window (the policy's concurrency section).",
    )


@control(
    id=HEADROOM,
    service=SERVICE,
    resource_type=m.ACCOUNT_REGION,
    title="Concurrency peak leaves headroom below the account limit",
    severity=Severity.HIGH,
    rationale="""When the functions of an account-region together reach its concurrency limit,
    Lambda throttles every function without a reservation: synchronous callers get 429 errors and
    asynchronous events queue up or are dropped. A peak close to the limit is the warning that the
    next burst, retry storm or abuse will cause an outage.""",
    remediation="""Request a higher "Concurrent executions" quota in Service Quotas for the
    region, cap the functions that drive the peak with reserved concurrency, or move load to
    another account or region.""",
    params=HeadroomParams,
    requires=(m.ASPECT_ACCOUNT_SETTINGS, m.ASPECT_CONCURRENCY_METRICS),
    references=(MONITORING_DOCS,),
)
def concurrency_headroom(
    region: m.RegionPosture, p: HeadroomParams, ctx: EvalContext
) -> Outcome | None:
    budget = _budget(region)
    if budget is None or budget.settings is None or budget.usage is None:
        return errored("concurrency data was not collected")
    limit = budget.settings.concurrency_limit
    usage = budget.usage
    window = _minutes(usage)
    if limit <= 0:
        if not _has_functions(ctx):
            return None
        return failed(f"concurrency limit is {limit}: every invocation is throttled")
    peak = usage.concurrent.value
    if usage.concurrent.datapoints == 0:
        return passed(
            f"no ConcurrentExecutions datapoints in the last {window} (idle): "
            f"headroom {limit} of {limit}"
        )
    ratio = (limit - peak) / limit  # as posture:lambda_concurrency_headroom_ratio computes it
    claimed = f" (claimed peak {usage.claimed.value:g})" if usage.claimed.datapoints else ""
    text = (
        f"peak {peak:g} of limit {limit} concurrent executions in the last {window}: "
        f"headroom {limit - peak:g} ({ratio:.0%})"
    )
    if ratio < p.min_headroom_ratio:
        return failed(f"{text}, below {p.min_headroom_ratio:.0%}{claimed}")
    return passed(text + claimed)


# --- unreserved pool -----------------------------------------------------------------------------


class UnreservedParams(Params):
    min_unreserved: int = Field(
        default=150,
        ge=0,
        description="Least unreserved concurrency (AWS refuses reservations below 100; the "
        "margin above it keeps room for unreserved functions and new reservations).",
    )


@control(
    id=UNRESERVED,
    service=SERVICE,
    resource_type=m.ACCOUNT_REGION,
    title="Unreserved concurrency pool is large enough",
    severity=Severity.MEDIUM,
    rationale="""Every function without a reservation shares the unreserved pool: the limit minus
    all reservations. When reservations shrink it toward AWS's floor of 100, a modest burst of any
    unreserved function throttles all of them, and no further reservation can be made.""",
    remediation="""Lower or remove reservations that are larger than the function's measured
    peak, or request a higher concurrency quota so the unreserved pool grows.""",
    params=UnreservedParams,
    requires=(m.ASPECT_ACCOUNT_SETTINGS,),
    references=(DOCS,),
)
def unreserved_pool(
    region: m.RegionPosture, p: UnreservedParams, ctx: EvalContext
) -> Outcome | None:
    budget = _budget(region)
    if budget is None or budget.settings is None:
        return errored("account settings were not collected")
    if not _has_functions(ctx):
        return None  # nothing to starve; new accounts show a limit of 10
    s = budget.settings
    text = (
        f"unreserved pool {s.unreserved_concurrency} of limit {s.concurrency_limit} "
        f"({s.concurrency_limit - s.unreserved_concurrency} reserved)"
    )
    if s.unreserved_concurrency < p.min_unreserved:
        floor = (
            f"; at AWS's floor of {AWS_MIN_UNRESERVED}, no further reservation is possible"
            if s.unreserved_concurrency <= AWS_MIN_UNRESERVED
            else ""
        )
        return failed(f"{text}, below {p.min_unreserved}{floor}")
    return passed(text)


# --- reservations against the limit -------------------------------------------------------------


class ReservedFractionParams(Params):
    max_reserved_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Largest share of the account concurrency limit that reservations may take.",
    )


@control(
    id=RESERVED_FRACTION,
    service=SERVICE,
    resource_type=m.ACCOUNT_REGION,
    title="Reservations do not take most of the account concurrency limit",
    severity=Severity.MEDIUM,
    rationale="""Reserved concurrency contains abuse per function, but capacity reserved is
    capacity no other function can use. When reservations add up to most of the limit, the
    account is committed on paper: unreserved functions starve and the limit cannot absorb a
    burst.""",
    remediation="""Size reservations from each function's measured peak (CloudWatch
    ConcurrentExecutions by function) instead of round numbers, or raise the account quota.""",
    params=ReservedFractionParams,
    requires=(m.ASPECT_ACCOUNT_SETTINGS, m.ASPECT_RESERVATIONS),
    references=(DOCS,),
)
def reserved_fraction(
    region: m.RegionPosture, p: ReservedFractionParams, ctx: EvalContext
) -> Outcome | None:
    budget = _budget(region)
    if budget is None or budget.settings is None or budget.reserved_total is None:
        return errored("reservations or account settings were not collected")
    total = budget.reserved_total
    limit = budget.settings.concurrency_limit
    if total == 0:
        return passed("no reserved concurrency")
    if limit <= 0:
        return failed(f"{total} reserved with a concurrency limit of {limit}")
    share = total / limit
    text = (
        f"{total} of limit {limit} reserved ({share:.0%}) by {budget.reserved_functions} "
        f"function(s){_largest(ctx)}"
    )
    if share > p.max_reserved_fraction:
        return failed(f"{text}, above {p.max_reserved_fraction:.0%}")
    return passed(text)


def _largest(ctx: EvalContext, limit: int = 3) -> str:
    snapshot = ctx.snapshot
    if not isinstance(snapshot, m.LambdaSnapshot):
        return ""
    top = sorted(
        (f for f in snapshot.functions if f.reserved_concurrency),
        key=lambda f: (-(f.reserved_concurrency or 0), f.name),
    )[:limit]
    return "; largest: " + ", ".join(f"{f.name} ({f.reserved_concurrency})" for f in top)


# --- measures ------------------------------------------------------------------------------------


@target_measure(SERVICE)
def concurrency_figures(snapshot: Snapshot, policy: Policy, now: dt.datetime) -> Iterator[Sample]:
    """The concurrency gauges of one account-region (only what AWS actually answered)."""
    if not isinstance(snapshot, m.LambdaSnapshot):
        return
    for f in snapshot.functions:
        if f.reserved_concurrency is not None:
            yield sample(n.LAMBDA_FUNCTION_RESERVED.name, f.reserved_concurrency, function=f.name)
        for pc in f.provisioned:
            labels = {"function": f.name, "qualifier": pc.qualifier}
            yield sample(n.LAMBDA_PROVISIONED.name, pc.requested, **labels)
            yield sample(n.LAMBDA_PROVISIONED_ALLOCATED.name, pc.allocated, **labels)
    budget = snapshot.region.lambda_concurrency
    if budget is None:
        return
    if budget.reserved_total is not None:
        yield sample(n.LAMBDA_RESERVED.name, budget.reserved_total)
    settings, usage = budget.settings, budget.usage
    if settings is not None:
        yield sample(n.LAMBDA_CONCURRENCY_LIMIT.name, settings.concurrency_limit)
        yield sample(n.LAMBDA_UNRESERVED.name, settings.unreserved_concurrency)
    if usage is None:
        return
    yield sample(n.LAMBDA_CONCURRENT_PEAK.name, usage.concurrent.value)
    yield sample(n.LAMBDA_UNRESERVED_PEAK.name, usage.unreserved.value)
    if usage.claimed.datapoints:
        yield sample(n.LAMBDA_CLAIMED_PEAK.name, usage.claimed.value)
    if settings is not None:
        yield sample(n.LAMBDA_HEADROOM.name, settings.concurrency_limit - usage.concurrent.value)
    yield sample(n.LAMBDA_THROTTLES.name, usage.throttles.value)
    for name, throttles in usage.function_throttles:
        yield sample(n.LAMBDA_FUNCTION_THROTTLES.name, throttles.value, function=name)
    for metric, figure in (
        ("ConcurrentExecutions", usage.concurrent),
        ("UnreservedConcurrentExecutions", usage.unreserved),
        ("ClaimedAccountConcurrency", usage.claimed),
        ("Throttles", usage.throttles),
    ):
        yield sample(n.LAMBDA_DATAPOINTS.name, figure.datapoints, metric=metric)


@target_measure(SERVICE)
def concurrency_thresholds(
    snapshot: Snapshot, policy: Policy, now: dt.datetime
) -> Iterator[Sample]:
    """The thresholds in force for this account-region, so alert rules compare against the policy
    (with its per-account and per-region overrides) instead of repeating its numbers."""
    t = snapshot.target
    for control_id, metric, param in (
        (HEADROOM, n.LAMBDA_MIN_HEADROOM_RATIO, "min_headroom_ratio"),
        (UNRESERVED, n.LAMBDA_MIN_UNRESERVED, "min_unreserved"),
        (RESERVED_FRACTION, n.LAMBDA_MAX_RESERVED_FRACTION, "max_reserved_fraction"),
    ):
        compiled = policy.controls.get(control_id)
        if compiled is None:
            continue
        eff = compiled.resolve(t.account_id, t.region, EMPTY_TAGS)
        if eff.enabled:
            yield sample(metric.name, getattr(eff.params, param))


@policy_measure
def concurrency_window(policy: Policy) -> Iterator[Sample]:
    yield sample(n.LAMBDA_LOOKBACK.name, policy.document.concurrency.lookback_minutes * 60)
