"""Quota-aware pacing: a token bucket per (account, region, quota bucket), with AIMD on throttling.

AWS meters most control-plane APIs per account and region, and the daemon shares those budgets with
the account's own deployments and tooling. So every call `AwsApi` makes first takes a token from
the bucket its operation is metered against, refilled at `share` x the AWS quota:

- Lambda: GetFunction 100/s, GetPolicy 15/s, and every other control-plane call one shared 15/s
  (documented by AWS; Lambda's cannot be raised).
- Other services: the published rate where AWS documents one, an estimate where it does not (see
  `QUOTAS`; each is a setting, `POSTURE_AWS__PACING__QUOTAS`).

AIMD: a throttling answer (seen by the botocore hook on every attempt, retries included) halves the
bucket's rate -- at most once per `cooldown` seconds, so a burst of concurrent throttles counts as
one congestion signal -- down to a floor; every success adds back a small fixed step, up to the
configured ceiling. `posture_aws_rate_limit{aws_account_id,aws_region,bucket}` is the current rate.

Everything here takes an injected clock (and sleeper), so the unit tests need no sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Gauge

Clock = Callable[[], float]
Sleeper = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Quota:
    rate: float  # requests per second per account and region
    source: str  # where the figure comes from ("AWS" or "estimate: ...")


# bucket -> the AWS quota (requests/s per account and region) the daemon paces against
QUOTAS: Mapping[str, Quota] = {
    "lambda-get-function": Quota(100, "AWS: Lambda GetFunction API requests"),
    "lambda-get-policy": Quota(15, "AWS: Lambda GetPolicy API requests"),
    "lambda-control": Quota(15, "AWS: Lambda control plane API requests (all others)"),
    "iam": Quota(20, "estimate: IAM publishes no read rate (per account, global)"),
    "ecr": Quota(20, "estimate: ECR publishes no rate for Describe*/Get* repository reads"),
    "ecs": Quota(20, "AWS: ECS token bucket refill rate for Describe*/List* (burst 50-100)"),
    "rds": Quota(20, "estimate: RDS throttles Describe* calls without a published rate"),
    "cloudwatch": Quota(50, "AWS: CloudWatch GetMetricData transactions per second"),
    "logs": Quota(5, "AWS: CloudWatch Logs DescribeLogGroups/DescribeSubscriptionFilters TPS"),
    "ec2": Quota(20, "AWS: EC2 non-mutating actions refill rate (bucket of 100)"),
    "apigateway": Quota(10, "AWS: API Gateway GET requests per account (burst 40)"),
    "default": Quota(10, "estimate: any other service"),
}

# operations metered apart from their service's main bucket
_OPERATION_BUCKETS: Mapping[tuple[str, str], str] = {
    ("lambda", "GetFunction"): "lambda-get-function",
    ("lambda", "GetPolicy"): "lambda-get-policy",
}
_SERVICE_BUCKETS: Mapping[str, str] = {
    "lambda": "lambda-control",
    "iam": "iam",
    "ecr": "ecr",
    "ecs": "ecs",
    "rds": "rds",
    "cloudwatch": "cloudwatch",
    "logs": "logs",
    "ec2": "ec2",
    "apigateway": "apigateway",
}
UNPACED_SERVICES = frozenset({"sts"})  # credentials: the hub's calls, never a member's quota
# Global services meter per account, whatever region the client names: one bucket per account.
GLOBAL_SERVICES = frozenset({"iam"})
GLOBAL_REGION = "global"  # the aws_region of a global service's bucket


def bucket_key(account_id: str, region: str, service: str, operation: str) -> tuple[str, str, str]:
    """(account, region, bucket) of an operation; a global service's region is "global"."""
    if service in GLOBAL_SERVICES:
        region = GLOBAL_REGION
    return account_id, region, bucket_for(service, operation)


def bucket_for(service: str, operation: str) -> str:
    """The quota bucket an operation (wire name, e.g. GetFunction) is metered against."""
    return _OPERATION_BUCKETS.get((service, operation)) or _SERVICE_BUCKETS.get(service, "default")


# AIMD parameters (per bucket). Not settings: they shape the control loop, not the budget.
DECREASE = 0.5  # multiplicative decrease on a throttle
INCREASE_FRACTION = 0.02  # additive increase per success, as a fraction of the ceiling
FLOOR_FRACTION = 0.05  # the rate never drops below this fraction of the ceiling
COOLDOWN_SECONDS = 1.0  # throttles closer together than this count as one signal
BURST_SECONDS = 1.0  # a full bucket holds this many seconds of calls (at least one)


class TokenBucket:
    """A token bucket whose refill rate follows AIMD. Time comes from `clock` (seconds)."""

    def __init__(self, ceiling: float, clock: Clock) -> None:
        if ceiling <= 0:
            raise ValueError("a bucket's rate must be positive")
        self.ceiling = ceiling
        self.floor = ceiling * FLOOR_FRACTION
        self.rate = ceiling
        self._clock = clock
        self._updated = clock()
        self._tokens = self.capacity
        self._last_decrease = float("-inf")
        self.granted = 0  # tokens handed out (accounting, for tests and the benchmark)
        self.throttles = 0  # throttling answers seen
        self.decreases = 0  # throttles that lowered the rate

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * BURST_SECONDS)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now

    def reserve(self) -> float:
        """Take a token; returns how long the caller must wait before using it (0: now).

        Tokens may go negative: each caller reserves its place in line and waits its delay, so
        concurrent callers are spread at the bucket's rate instead of waking together.
        """
        now = self._clock()
        self._refill(now)
        self._tokens -= 1.0
        self.granted += 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def throttled(self) -> bool:
        """A throttling answer: halve the rate (once per cooldown). True when it was lowered."""
        self.throttles += 1
        now = self._clock()
        if now - self._last_decrease < COOLDOWN_SECONDS:
            return False
        self._refill(now)
        self._last_decrease = now
        self.rate = max(self.floor, self.rate * DECREASE)
        self._tokens = min(self._tokens, self.capacity)
        self.decreases += 1
        return True

    def succeeded(self) -> bool:
        """A successful answer: add back a step of the ceiling. True when the rate changed."""
        if self.rate >= self.ceiling:
            return False
        self._refill(self._clock())
        self.rate = min(self.ceiling, self.rate + self.ceiling * INCREASE_FRACTION)
        return True


class Pacer:
    """The buckets of the whole daemon, created on first use."""

    def __init__(
        self,
        quotas: Mapping[str, float],
        share: float,
        gauge: Gauge | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleeper = asyncio.sleep,
        enabled: bool = True,
    ) -> None:
        self.quotas = dict(quotas)
        self.share = share
        self.enabled = enabled
        self._gauge = gauge
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}

    def bucket(self, account_id: str, region: str, name: str) -> TokenBucket:
        key = (account_id, region, name)
        found = self._buckets.get(key)
        if found is None:
            quota = self.quotas.get(name, self.quotas.get("default", QUOTAS["default"].rate))
            found = TokenBucket(quota * self.share, self._clock)
            self._buckets[key] = found
            self._publish(key, found)
        return found

    def buckets(self) -> Mapping[tuple[str, str, str], TokenBucket]:
        return self._buckets

    def _publish(self, key: tuple[str, str, str], bucket: TokenBucket) -> None:
        if self._gauge is not None:
            self._gauge.labels(*key).set(round(bucket.rate, 3))

    async def acquire(self, account_id: str, region: str, service: str, operation: str) -> None:
        """Wait for a token of the operation's bucket (no-op when pacing is off)."""
        if not self.enabled or service in UNPACED_SERVICES:
            return
        delay = self.bucket(*bucket_key(account_id, region, service, operation)).reserve()
        if delay > 0:
            await self._sleep(delay)

    def feedback(
        self, account_id: str, region: str, service: str, operation: str, *, throttled: bool
    ) -> None:
        """The answer to one attempt (called by the botocore hook): AIMD."""
        if not self.enabled or service in UNPACED_SERVICES:
            return
        key = bucket_key(account_id, region, service, operation)
        bucket = self._buckets.get(key)
        if bucket is None:
            return  # not a paced call (e.g. made outside AwsApi)
        changed = bucket.throttled() if throttled else bucket.succeeded()
        if changed:
            self._publish(key, bucket)

    def forget_account(self, account_id: str) -> None:
        """Drop an account's buckets (and their series) when it is no longer assigned."""
        for key in [k for k in self._buckets if k[0] == account_id]:
            del self._buckets[key]
            if self._gauge is not None:
                self._gauge.remove(*key)
