"""Token buckets and AIMD with an injected clock: no sleeping, exact accounting."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from prometheus_client import CollectorRegistry

from daemon.aws import pacing
from daemon.aws.pacing import Pacer, TokenBucket, bucket_for
from daemon.config import PacingSettings, SettingsError, load_settings
from daemon.metrics.health import HealthMetrics


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds  # a sleeping caller lets time pass


def test_lambda_operations_map_to_their_quota_buckets() -> None:
    assert bucket_for("lambda", "GetFunction") == "lambda-get-function"
    assert bucket_for("lambda", "GetPolicy") == "lambda-get-policy"
    for op in ("ListFunctions", "ListAliases", "GetFunctionUrlConfig", "ListVersionsByFunction"):
        assert bucket_for("lambda", op) == "lambda-control"
    assert bucket_for("iam", "GetPolicy") == "iam"  # IAM's GetPolicy is not Lambda's
    assert bucket_for("kms", "DescribeKey") == "default"
    assert pacing.QUOTAS["lambda-get-function"].rate == 100
    assert pacing.QUOTAS["lambda-control"].rate == 15


def test_a_global_service_has_one_bucket_per_account_whatever_the_region() -> None:
    clock = Clock()
    pacer = Pacer({"iam": 10.0, "lambda-control": 10.0}, 1.0, clock=clock, sleep=clock.sleep)

    async def calls() -> None:
        for region in ("us-east-1", "eu-west-1", "ap-south-1"):
            for _ in range(10):
                await pacer.acquire("111111111111", region, "iam", "GetRole")
                await pacer.acquire("111111111111", region, "lambda", "ListFunctions")

    start = clock.t
    asyncio.run(calls())
    keys = set(pacer.buckets())
    assert ("111111111111", "global", "iam") in keys
    assert not [k for k in keys if k[2] == "iam" and k[1] != "global"]
    assert len([k for k in keys if k[2] == "lambda-control"]) == 3  # Lambda meters per region
    iam = pacer.buckets()[("111111111111", "global", "iam")]
    assert iam.granted == 30
    # 30 IAM calls through one 10/s bucket (a burst of 10, then 20 at 10/s): about 2 s, where a
    # bucket per region would have let all 30 through in the burst
    assert clock.t - start == pytest.approx(2.0, abs=0.2)
    pacer.feedback("111111111111", "eu-west-1", "iam", "GetRole", throttled=True)
    assert iam.rate == pytest.approx(5.0)


def test_bucket_spaces_calls_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(7.5, clock)
    # a full bucket lets a burst of one second's worth through at once ...
    delays = [bucket.reserve() for _ in range(7)]
    assert delays == [0.0] * 7
    # ... then each caller is given its place in line, 1/rate apart
    queued = [bucket.reserve() for _ in range(15)]
    gaps = [b - a for a, b in itertools.pairwise(queued)]
    assert all(g == pytest.approx(1 / 7.5) for g in gaps)
    assert queued[-1] == pytest.approx((7 + 15 - 7.5) / 7.5)
    assert bucket.granted == 22


def test_pacer_holds_calls_to_the_configured_rate_over_a_window() -> None:
    """Count the calls let through in 60 s of (injected) time: share x quota, plus the burst."""
    clock = Clock()
    rates = PacingSettings().rates()
    pacer = Pacer(rates, 0.5, clock=clock, sleep=clock.sleep)
    start = clock.t
    let_through = 0

    async def run() -> None:
        nonlocal let_through
        while True:
            await pacer.acquire("111111111111", "eu-west-1", "lambda", "ListAliases")
            if clock.t - start > 60:
                return
            let_through += 1

    asyncio.run(run())
    allowed = 15 * 0.5
    assert let_through == pytest.approx(60 * allowed + allowed, abs=2)
    # other buckets and other account-regions are untouched
    assert set(pacer.buckets()) == {("111111111111", "eu-west-1", "lambda-control")}


def test_aimd_halves_on_throttle_once_per_cooldown_and_recovers_additively() -> None:
    clock = Clock()
    bucket = TokenBucket(50.0, clock)
    assert bucket.throttled() is True
    assert bucket.rate == 25.0
    # concurrent throttles within the cooldown are one congestion signal
    assert bucket.throttled() is False
    assert bucket.rate == 25.0
    clock.t += pacing.COOLDOWN_SECONDS
    bucket.throttled()
    assert bucket.rate == 12.5
    # a storm never takes the rate below the floor
    for _ in range(20):
        clock.t += pacing.COOLDOWN_SECONDS
        bucket.throttled()
    assert bucket.rate == pytest.approx(50.0 * pacing.FLOOR_FRACTION)
    assert bucket.throttles == 23 and bucket.decreases == 22
    # successes add a fixed step back, never above the ceiling
    before = bucket.rate
    bucket.succeeded()
    assert bucket.rate == pytest.approx(before + 50.0 * pacing.INCREASE_FRACTION)
    steps = 0
    while bucket.succeeded():
        steps += 1
    assert bucket.rate == 50.0
    assert steps < 1 / pacing.INCREASE_FRACTION


def test_a_lowered_rate_spaces_calls_further() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock)
    for _ in range(10):
        bucket.reserve()  # empty the burst
    bucket.throttled()
    assert bucket.rate == 5.0
    first, second = bucket.reserve(), bucket.reserve()
    assert second - first == pytest.approx(1 / 5.0)


def test_feedback_updates_the_rate_gauge_per_account_region_and_bucket() -> None:
    clock = Clock()
    metrics = HealthMetrics(CollectorRegistry())
    pacer = Pacer({"lambda-get-policy": 15.0}, 0.5, gauge=metrics.rate_limit, clock=clock)
    asyncio.run(pacer.acquire("111111111111", "us-east-1", "lambda", "GetPolicy"))

    def rate() -> float | None:
        return metrics.registry.get_sample_value(
            "posture_aws_rate_limit",
            {
                "aws_account_id": "111111111111",
                "aws_region": "us-east-1",
                "bucket": "lambda-get-policy",
            },
        )

    assert rate() == 7.5
    pacer.feedback("111111111111", "us-east-1", "lambda", "GetPolicy", throttled=True)
    assert rate() == 3.75
    pacer.feedback("111111111111", "us-east-1", "lambda", "GetPolicy", throttled=False)
    assert rate() == pytest.approx(3.75 + 7.5 * pacing.INCREASE_FRACTION)
    # an answer for a bucket no paced call used is ignored (no new series)
    pacer.feedback("222222222222", "us-east-1", "lambda", "GetPolicy", throttled=True)
    assert len(pacer.buckets()) == 1
    pacer.forget_account("111111111111")
    assert rate() is None


def test_sts_and_disabled_pacing_never_wait() -> None:
    clock = Clock()
    pacer = Pacer({"default": 0.001}, 1.0, clock=clock, sleep=clock.sleep)
    asyncio.run(pacer.acquire("111111111111", "us-east-1", "sts", "AssumeRole"))
    off = Pacer({"default": 0.001}, 1.0, clock=clock, sleep=clock.sleep, enabled=False)
    for _ in range(5):
        asyncio.run(off.acquire("111111111111", "us-east-1", "kms", "DescribeKey"))
    assert clock.t == 1000.0
    assert not pacer.buckets() and not off.buckets()


def test_pacing_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTURE_AWS__PACING__QUOTA_MULTIPLIER", raising=False)
    s = load_settings().aws.pacing
    assert s.enabled and s.share == 0.5
    assert s.rates()["lambda-get-function"] == 100
    monkeypatch.setenv("POSTURE_AWS__PACING__QUOTAS", '{"ecr": 50}')
    monkeypatch.setenv("POSTURE_AWS__PACING__SHARE", "0.25")
    s = load_settings().aws.pacing
    assert s.rates()["ecr"] == 50 and s.rates()["lambda-control"] == 15 and s.share == 0.25
    monkeypatch.setenv("POSTURE_AWS__PACING__QUOTAS", '{"lambda-typo": 5}')
    with pytest.raises(SettingsError, match="unknown quota bucket"):
        load_settings()
    monkeypatch.setenv("POSTURE_AWS__PACING__QUOTAS", "{}")
    monkeypatch.setenv("POSTURE_AWS__PACING__SHARE", "1.5")
    with pytest.raises(SettingsError, match="POSTURE_AWS__PACING__SHARE"):
        load_settings()
