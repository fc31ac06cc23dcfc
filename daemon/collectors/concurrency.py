"""Lambda concurrency of an account-region: the account's limits and CloudWatch peaks.

Two calls per account-region, whatever the number of functions:
- `lambda:GetAccountSettings`, every sweep: the concurrency limit and the unreserved pool;
- one `cloudwatch:GetMetricData` request (billed per metric asked for, so read at most once per
  `cloudwatch_interval_seconds`, served from the cache in between) that batches every query: the
  account-level
  ConcurrentExecutions, UnreservedConcurrentExecutions and ClaimedAccountConcurrency (Maximum),
  Throttles (Sum) for the account and for the top functions by reserved concurrency. NextToken is
  followed only when CloudWatch splits the answer (more than 100,800 datapoints).

A failed part is recorded as an aspect error (the concurrency controls then report `error` and
its series are absent); it is never replaced by a default. Throttled or 5xx calls fail the target.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from daemon.aws.errors import AwsError
from daemon.collectors.base import CollectContext, Operation
from daemon.collectors.cache import Lookups, digest
from daemon.model import awslambda as m

OPERATIONS: tuple[Operation, ...] = (
    Operation("lambda", "GetAccountSettings", "lambda:GetAccountSettings"),
    Operation("cloudwatch", "GetMetricData", "cloudwatch:GetMetricData"),
)

NAMESPACE = "AWS/Lambda"
# query id -> (CloudWatch metric, statistic); ids must match ^[a-z][a-zA-Z0-9_]*$
ACCOUNT_QUERIES: Mapping[str, tuple[str, str]] = {
    "concurrent": ("ConcurrentExecutions", "Maximum"),
    "unreserved": ("UnreservedConcurrentExecutions", "Maximum"),
    "claimed": ("ClaimedAccountConcurrency", "Maximum"),
    "throttles": ("Throttles", "Sum"),
}
_OK_STATUS = frozenset({"Complete", "PartialData"})


def top_reserved(functions: Iterable[m.LambdaFunction], n: int) -> list[m.LambdaFunction]:
    """The n functions with the largest reservations (ties by name); unreserved ones never."""
    reserved = [f for f in functions if f.reserved_concurrency is not None]
    reserved.sort(key=lambda f: (-(f.reserved_concurrency or 0), f.name))
    return reserved[:n]


def metric_queries(function_names: Sequence[str], period: int) -> list[dict[str, Any]]:
    """The MetricDataQueries of the one GetMetricData request (MetricStat only: moto does not
    evaluate math expressions, and none is needed)."""

    def stat(qid: str, metric: str, statistic: str, dims: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "Id": qid,
            "MetricStat": {
                "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dims},
                "Period": period,
                "Stat": statistic,
            },
            "ReturnData": True,
        }

    queries = [stat(qid, metric, s, []) for qid, (metric, s) in ACCOUNT_QUERIES.items()]
    queries += [
        stat(f"fn{i}", "Throttles", "Sum", [{"Name": "FunctionName", "Value": name}])
        for i, name in enumerate(function_names)
    ]
    return queries


def _window(values: list[float], statistic: str) -> m.MetricWindow:
    if not values:
        return m.MetricWindow(0, 0.0)
    return m.MetricWindow(len(values), max(values) if statistic == "Maximum" else sum(values))


def parse_usage(
    results: Mapping[str, list[float]],
    function_names: Sequence[str],
    window: m.ConcurrencyWindow,
) -> m.ConcurrencyUsage:
    """Usage from the values of each query id (every id of `metric_queries` must be present)."""
    account = {
        qid: _window(results[qid], statistic) for qid, (_, statistic) in ACCOUNT_QUERIES.items()
    }
    return m.ConcurrencyUsage(
        window=window,
        concurrent=account["concurrent"],
        unreserved=account["unreserved"],
        claimed=account["claimed"],
        throttles=account["throttles"],
        function_throttles=tuple(
            (name, _window(results[f"fn{i}"], "Sum")) for i, name in enumerate(function_names)
        ),
    )


def parse_account_settings(raw: Mapping[str, Any]) -> m.AccountSettings | None:
    """None when the answer lacks the limits (odd data)."""
    limit = (raw.get("AccountLimit") or {}).get("ConcurrentExecutions")
    unreserved = (raw.get("AccountLimit") or {}).get("UnreservedConcurrentExecutions")
    count = (raw.get("AccountUsage") or {}).get("FunctionCount")
    if not isinstance(limit, int) or not isinstance(unreserved, int):
        return None
    return m.AccountSettings(limit, unreserved, count if isinstance(count, int) else None)


async def _account_settings(
    ctx: CollectContext, errors: dict[str, str]
) -> m.AccountSettings | None:
    try:
        raw = await ctx.api.call("lambda", "get_account_settings")
    except AwsError as err:
        if err.kind.retryable:
            raise
        # Not found is no answer here either: every account-region has settings.
        errors[m.ASPECT_ACCOUNT_SETTINGS] = err.code
        return None
    settings = parse_account_settings(raw)
    if settings is None:
        errors[m.ASPECT_ACCOUNT_SETTINGS] = "MalformedResponse"
        ctx.issue(ctx.target.key, m.ASPECT_ACCOUNT_SETTINGS, "AccountLimit without concurrency")
    return settings


async def _usage(
    ctx: CollectContext, functions: Sequence[m.LambdaFunction], errors: dict[str, str]
) -> m.ConcurrencyUsage | None:
    window = ctx.concurrency_window
    names = [f.name for f in top_reserved(functions, window.top_functions)]
    queries = metric_queries(names, window.period_seconds)
    end = ctx.now
    params: dict[str, Any] = {
        "MetricDataQueries": queries,
        "StartTime": end - dt.timedelta(seconds=window.lookback_seconds),
        "EndTime": end,
    }
    values: dict[str, list[float]] = {q["Id"]: [] for q in queries}
    seen: set[str] = set()
    try:
        while True:
            page = await ctx.api.call("cloudwatch", "get_metric_data", **params)
            for result in page.get("MetricDataResults") or []:
                qid = str(result.get("Id", ""))
                status = str(result.get("StatusCode", "Complete"))
                if qid not in values:
                    continue
                if status not in _OK_STATUS:
                    errors[m.ASPECT_CONCURRENCY_METRICS] = f"{status}:{qid}"
                    return None
                seen.add(qid)
                values[qid].extend(float(v) for v in result.get("Values") or [])
            token = page.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
    except AwsError as err:
        if err.kind.retryable:
            raise
        errors[m.ASPECT_CONCURRENCY_METRICS] = err.code
        return None
    missing = sorted(set(values) - seen)
    if missing:
        errors[m.ASPECT_CONCURRENCY_METRICS] = "MissingResults"
        ctx.issue(
            ctx.target.key,
            m.ASPECT_CONCURRENCY_METRICS,
            f"GetMetricData returned no result for {', '.join(missing)}",
        )
        return None
    return parse_usage(values, names, window)


def reservations(functions: Sequence[m.LambdaFunction]) -> tuple[int | None, int, str | None]:
    """(sum of reservations, functions with one, error) — the sum is unknown when GetFunction
    failed for any function."""
    for f in functions:
        if m.ASPECT_FUNCTION in f.errors:
            return None, 0, f.errors[m.ASPECT_FUNCTION]
    reserved = [f.reserved_concurrency for f in functions if f.reserved_concurrency is not None]
    return sum(reserved), len(reserved), None


async def collect_concurrency(
    ctx: CollectContext, functions: Sequence[m.LambdaFunction], metrics: Lookups | None = None
) -> tuple[m.LambdaConcurrency, dict[str, str]]:
    """The account-region's concurrency and the aspect errors to record on its resource.

    `metrics` caches the CloudWatch answer (None: asked every sweep); it is asked again when the
    functions queried or the window change, or when the cached answer is due (its max_age).
    """
    errors: dict[str, str] = {}
    settings = await _account_settings(ctx, errors)
    if metrics is None:
        usage = await _usage(ctx, functions, errors)
    else:
        window = ctx.concurrency_window
        names = [f.name for f in top_reserved(functions, window.top_functions)]
        usage = await ctx.lookup(
            metrics,
            "concurrency-metrics",
            lambda: _usage(ctx, functions, errors),
            key=(digest(names), window),
            ok=lambda found: found is not None,
        )
    total, count, problem = reservations(functions)
    if problem is not None:
        errors[m.ASPECT_RESERVATIONS] = problem
    return m.LambdaConcurrency(settings, usage, total, count), errors
