"""Steady-state efficiency and pacing against moto server, counted by the daemon's own metrics.

- A second sweep with no change reads no per-function detail: only the listings (and the
  account-region lookups) are called again; the detail served is as old as the cold sweep.
- A change (UpdateFunctionConfiguration: a new RevisionId and LastModified in ListFunctions) is
  detected: that one function is read again and its compliance changes.
- The account-region lookups (layers, code signing, log groups, Config, CloudTrail) are cached
  too: read again only when a change may show in them, or when the cached answer cannot serve.
- Pacing: every paced call took a token of its bucket, and the shared Lambda bucket let calls
  through no faster than share x quota (asserted on the bucket's accounting, not on timing).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from daemon.app import Daemon
from daemon.aws.pacing import bucket_for
from daemon.demo.estate import PRIMARY, _zip, seed_estate
from daemon.demo.moto_server import EmbeddedMoto

from .conftest import policy_for
from .faultproxy import FaultProxy, Throttle
from .harness import (
    Sample,
    aws_client,
    running_daemon,
    scrape,
    select,
    settings_for,
    value,
    wait_for_sweeps,
)

FUNCTIONS = ["orders-api", "untraced", "no-reservation"]
PER_FUNCTION = {
    "GetFunction",
    "GetPolicy",
    "GetFunctionUrlConfig",
    "ListAliases",
    "GetFunctionEventInvokeConfig",
    "ListProvisionedConcurrencyConfigs",
}
# account-region lookups of the Lambda target (the first call of each)
LOOKUPS = {
    ("lambda", "ListLayers"),
    ("lambda", "ListCodeSigningConfigs"),
    ("logs", "DescribeLogGroups"),
    ("config", "DescribeConfigurationRecorders"),
    ("cloudtrail", "DescribeTrails"),
}


def calls(samples: list[Sample]) -> Counter[tuple[str, str]]:
    return Counter(
        {
            (s[1]["aws_service"], s[1]["operation"]): int(s[2])
            for s in select(samples, "posture_aws_api_requests_total")
        }
    )


def target_labels(account: str) -> dict[str, str]:
    return {"aws_account_id": account, "aws_region": PRIMARY, "aws_service": "lambda"}


async def test_steady_state_reads_only_listings_and_detects_a_change(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    account = "909000000001"
    await seed_estate([account], [PRIMARY], only=FUNCTIONS)
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]),
        reconciler={
            "interval_seconds": 1,
            # the rolling refresh re-reads each detail and lookup once per max_data_age at a
            # wall-clock phase of its own: with an hour, a ~10 s test crossed one now and then
            # (a lookup read in the steady window); with 30 days, practically never
            "max_data_age_seconds": 30 * 86400,
            "cloudwatch_interval_seconds": 86400,
        },
    )
    async with running_daemon(settings) as daemon:
        await wait_for_sweeps(daemon, 1)
        cold = await scrape(daemon)
        cold_calls = calls(cold)
        lam = target_labels(account)
        xray = value(
            cold, "posture_violations", **lam, control="lambda-xray-active", severity="low"
        )
        assert xray == 1  # "untraced"
        cold_sweep = value(cold, "posture_target_last_success_timestamp_seconds", **lam)

        # (a scrape may fall in the middle of a sweep: count from one taken a sweep later)
        await wait_for_sweeps(daemon, 1)
        settled = calls(await scrape(daemon))
        await wait_for_sweeps(daemon, 2)
        warm = await scrape(daemon)
        # per sweep: the listings are read again, no per-function detail is
        warm_calls = calls(warm) - settled
        assert warm_calls[("lambda", "ListFunctions")] >= 2
        for op in PER_FUNCTION:
            assert warm_calls[("lambda", op)] == 0, (op, warm_calls)
        per_sweep = sum(warm_calls.values()) / 2
        cold_per_function = sum(cold_calls[("lambda", op)] for op in PER_FUNCTION)
        assert cold_per_function >= 4 * len(FUNCTIONS)
        # the account-region lookups no listing versions are cached too (max_data_age) ...
        for op in LOOKUPS:
            assert warm_calls[op] == 0, (op, warm_calls)
        # ... but not the concurrency settings, which catch changed reservations
        assert warm_calls[("lambda", "GetAccountSettings")] >= 2
        # CloudWatch, billed per metric, at most once per cloudwatch_interval_seconds
        assert cold_calls[("cloudwatch", "GetMetricData")] == 1
        assert warm_calls[("cloudwatch", "GetMetricData")] == 0
        # what remains per sweep is ListFunctions, GetAccountSettings, and two reads of the
        # opt-in log export and the API Gateway stages (per API, not per function) -- four
        # calls (the window may hold a third sweep's)
        assert per_sweep <= 6, warm_calls
        # the detail served is the cold sweep's: the oldest fetch is no later than it
        oldest = value(warm, "posture_data_oldest_fetch_timestamp_seconds", **lam)
        assert oldest <= cold_sweep
        assert value(warm, "posture_data_age_seconds_count", aws_service="lambda") >= 9
        assert (
            value(warm, "posture_violations", **lam, control="lambda-xray-active", severity="low")
            == 1
        )

        # A reservation shows in no listing, but GetAccountSettings' unreserved concurrency (read
        # every sweep) no longer matches the cached reservations: every detail is read again.
        reserved = {"control": "lambda-reserved-concurrency", "severity": "low"}
        assert value(warm, "posture_violations", **lam, **reserved) == 1  # "no-reservation"
        before = calls(await scrape(daemon))
        async with aws_client("lambda", account, PRIMARY) as client:
            await client.put_function_concurrency(
                FunctionName="no-reservation", ReservedConcurrentExecutions=5
            )
        await until_violations(daemon, lam, reserved, 0)
        assert (calls(await scrape(daemon)) - before)[("lambda", "GetFunction")] >= len(FUNCTIONS)

        # A public URL shows in no listing either: served from the cache (no older than
        # max_data_age -- or sooner with the event fast path) ...
        url = {"control": "lambda-url-auth", "severity": "high"}
        assert value(await scrape(daemon), "posture_violations", **lam, **url) == 0
        async with aws_client("lambda", account, PRIMARY) as client:
            await client.create_function_url_config(FunctionName="orders-api", AuthType="NONE")
            await wait_for_sweeps(daemon, 2)
            assert value(await scrape(daemon), "posture_violations", **lam, **url) == 0
            # ... until the function changes in a way ListFunctions shows (new code: CodeSha256)
            before = calls(await scrape(daemon))
            await client.update_function_code(
                FunctionName="orders-api", ZipFile=_zip("def handler(e, c):\n    return 2\n")
            )
        await until_violations(daemon, lam, url, 1)
        after = calls(await scrape(daemon)) - before
        # only the changed function was read again
        assert after[("lambda", "GetFunctionUrlConfig")] == 1, after
        assert after[("lambda", "GetFunction")] == after[("lambda", "GetPolicy")] == 1
        # the change may show in a lookup (a code signing config put with it): those re-read
        assert after[("lambda", "ListCodeSigningConfigs")] >= 1, after
        assert after[("lambda", "ListLayers")] == 0, after

        # A layer version published and put on a function at once: the cached layer listing
        # lacks it, so it is read again -- a version that exists never shows as deleted.
        layers = {"control": "lambda-layer-versions-exist", "severity": "high"}
        assert value(await scrape(daemon), "posture_violations", **lam, **layers) == 0
        before = calls(await scrape(daemon))
        async with aws_client("lambda", account, PRIMARY) as client:
            fresh = await client.publish_layer_version(
                LayerName="fresh", Content={"ZipFile": _zip("X = 1\n")}
            )
            await client.update_function_configuration(
                FunctionName="untraced", Layers=[fresh["LayerVersionArn"]]
            )
        await wait_for_sweeps(daemon, 2)
        assert value(await scrape(daemon), "posture_violations", **lam, **layers) == 0
        after = calls(await scrape(daemon)) - before
        assert after[("lambda", "ListLayers")] >= 1, after


async def until_violations(
    daemon: Daemon, target: dict[str, str], control: dict[str, str], expected: float
) -> None:
    deadline = time.monotonic() + 30
    while value(await scrape(daemon), "posture_violations", **target, **control) != expected:
        assert time.monotonic() < deadline, f"{control} never reached {expected}"
        await asyncio.sleep(0.1)


async def test_pacing_holds_the_shared_lambda_budget(moto: EmbeddedMoto, tmp_path: Path) -> None:
    """Real Lambda quotas (no multiplier), a quarter share: the shared control-plane bucket is
    3.75 requests/s. One cold sweep of three functions; the bucket's accounting shows every call
    waited for its token, and the sweep took at least as long as the budget implies."""
    account = "909000000002"
    await seed_estate([account], [PRIMARY], only=FUNCTIONS)
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]),
        reconciler={"interval_seconds": 3600},
        aws={"pacing": {"quota_multiplier": 1, "share": 0.25}},
    )
    async with running_daemon(settings) as daemon:
        samples = await scrape(daemon)
        pacer = daemon.gateway.pacer
        bucket = pacer.buckets()[(account, PRIMARY, "lambda-control")]
        assert bucket.ceiling == 15 * 0.25
        assert (
            value(
                samples,
                "posture_aws_rate_limit",
                aws_account_id=account,
                aws_region=PRIMARY,
                bucket="lambda-control",
            )
            == 3.75
        )
        # every shared-bucket call the daemon made took a token (retries aside: none here)
        made = sum(
            int(s[2])
            for s in select(samples, "posture_aws_api_requests_total", aws_service="lambda")
            if bucket_for("lambda", s[1]["operation"]) == "lambda-control"
        )
        assert bucket.granted == made
        assert made >= 10
        # the tokens beyond the first second's burst came at 3.75/s at most
        duration = value(samples, "posture_reconcile_duration_seconds_sum", aws_service="lambda")
        assert duration >= (made - bucket.capacity) / bucket.ceiling * 0.9, (duration, made)
        # GetFunction has a bucket of its own, at 25/s
        assert pacer.buckets()[(account, PRIMARY, "lambda-get-function")].ceiling == 25


async def test_throttles_are_absorbed_and_lower_the_rate(proxy: FaultProxy, tmp_path: Path) -> None:
    """30% of GetPolicy calls answer 429 TooManyRequestsException: no target fails (botocore's
    retries), and the GetPolicy bucket of that account-region slowed down (AIMD) while the
    others kept their rate."""
    account = "909000000003"
    await seed_estate([account], [PRIMARY], only=FUNCTIONS)
    proxy.add(Throttle(429), account=account, operation="GetPolicy", probability=0.3)
    settings = settings_for(
        policy_for([account], tmp_path, regions=[PRIMARY]),
        reconciler={"interval_seconds": 3600, "max_data_age_seconds": 0},
        aws={"max_attempts": 5},
    )
    async with running_daemon(settings) as daemon:
        for _ in range(2):
            outcomes = await daemon.reconciler.sweep_once()
            assert all(o.error is None for o in outcomes), outcomes
            assert all(o.result is not None for o in outcomes)
        before = daemon.store.view().results
        # as the benchmark sweeps: no result is held beyond the store's
        outcomes = await daemon.reconciler.sweep_once(keep_results=False)
        assert all(o.error is None and o.result is None for o in outcomes), outcomes
        after = daemon.store.view().results
        assert set(after) == set(before) == {o.target for o in outcomes}
        assert all(after[t].evaluated_at > before[t].evaluated_at for t in after)
        samples = await scrape(daemon)
        buckets = daemon.gateway.pacer.buckets()
    throttled = [r for r in proxy.calls(account=account) if r.outcome == "throttle"]
    assert throttled
    assert value(samples, "posture_reconciles_total", aws_service="lambda", result="failure") == 0
    policy = buckets[(account, PRIMARY, "lambda-get-policy")]
    assert policy.decreases >= 1
    assert policy.rate < policy.ceiling
    rate = value(
        samples,
        "posture_aws_rate_limit",
        aws_account_id=account,
        aws_region=PRIMARY,
        bucket="lambda-get-policy",
    )
    assert rate == round(policy.rate, 3)
    other = buckets[(account, PRIMARY, "lambda-get-function")]
    assert other.rate == other.ceiling and other.decreases == 0
