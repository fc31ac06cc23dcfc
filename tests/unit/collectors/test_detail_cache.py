"""The per-resource detail cache: change detection and the rolling refresh, with injected `now`."""

from __future__ import annotations

import math

import pytest

from daemon.collectors import kms
from daemon.collectors.awslambda import change_key
from daemon.collectors.cache import DetailCache, Lookups, digest, phase, refresh_due
from daemon.model.kms import KmsKey

from .recorded import FakeApi, context, error

SCOPE = ("111111111111", "eu-west-1")
HOUR = 3600.0


def arns(n: int) -> list[str]:
    return [f"arn:aws:lambda:eu-west-1:111111111111:function:fn-{i}" for i in range(n)]


def test_a_detail_is_served_until_its_change_key_differs() -> None:
    cache: DetailCache[str] = DetailCache(HOUR)
    cache.put(SCOPE, "a", ("rev-1",), "detail", now=0.0)
    hit = cache.get(SCOPE, "a", ("rev-1",), now=0.5)
    assert hit is not None and hit.value == "detail" and hit.fetched_at == 0.0
    assert cache.get(SCOPE, "a", ("rev-2",), now=0.5) is None  # changed
    assert cache.get(("222222222222", "eu-west-1"), "a", ("rev-1",), now=0.5) is None
    cache.invalidate(SCOPE, "a")  # a change event
    assert cache.get(SCOPE, "a", ("rev-1",), now=0.5) is None
    assert cache.hits == 1 and cache.misses == 3


def test_no_detail_is_served_older_than_max_age() -> None:
    interval = 300.0
    for resource in arns(200):
        fetched = 12345.0
        t = fetched
        while not refresh_due(resource, fetched, t, HOUR, lookahead=interval):
            t += interval
        # refreshed in the sweep before its boundary: the detail it replaced was at most
        # max_age old, and it was not refreshed needlessly early (within one period)
        assert t - fetched <= HOUR
        assert t - fetched >= 0


def test_refreshes_are_spread_evenly_over_the_sweeps() -> None:
    """Cold sweep at 0 reads 2,000 functions; then sweeps every 300 s for 3 hours.

    Every sweep refreshes about the same share (interval / max_age of the estate), instead of
    everything at once when the hour is up; and each function is refreshed about once per hour.
    """
    interval, n = 300.0, 2000
    cache: DetailCache[int] = DetailCache(HOUR, lookahead=interval)
    resources = arns(n)
    for r in resources:
        cache.put(SCOPE, r, "k", 0, now=0.0)
    refreshed_per_sweep = []
    oldest = 0.0
    for sweep in range(1, 37):
        now = sweep * interval
        count = 0
        for r in resources:
            entry = cache.get(SCOPE, r, "k", now)
            if entry is None:
                cache.put(SCOPE, r, "k", sweep, now)
                count += 1
            else:
                oldest = max(oldest, now - entry.fetched_at)
        refreshed_per_sweep.append(count)
    expected = n * interval / HOUR  # ~167
    assert all(abs(c - expected) < expected * 0.35 for c in refreshed_per_sweep), (
        refreshed_per_sweep
    )
    assert sum(refreshed_per_sweep) == 3 * n  # once per hour each
    assert oldest < HOUR  # served detail never reached max_age


def test_max_age_zero_disables_the_cache() -> None:
    cache: DetailCache[str] = DetailCache(0)
    cache.put(SCOPE, "a", "k", "v", now=0.0)
    assert cache.size() == 0
    assert cache.get(SCOPE, "a", "k", now=0.0) is None
    assert refresh_due("a", 0.0, 0.0, 0.0)


def test_retain_forgets_deleted_resources() -> None:
    cache: DetailCache[str] = DetailCache(HOUR)
    for r in ("a", "b", "c"):
        cache.put(SCOPE, r, "k", r, now=0.0)
    cache.retain(SCOPE, ["a", "c"])
    assert cache.size(SCOPE) == 2
    cache.invalidate(SCOPE)
    assert cache.size() == 0


def test_phases_are_stable_and_uniform() -> None:
    values = [phase(r) for r in arns(4000)]
    assert values == [phase(r) for r in arns(4000)]
    assert all(0 <= v < 1 for v in values)
    deciles = [sum(1 for v in values if math.floor(v * 10) == d) for d in range(10)]
    assert all(300 < c < 500 for c in deciles), deciles


def test_lambda_change_key_follows_what_list_functions_returns() -> None:
    raw = {
        "FunctionName": "orders",
        "RevisionId": "r1",
        "CodeSha256": "abc",
        "LastModified": "2026-01-01T00:00:00.000+0000",
    }
    versions = [{"Version": "1", "RevisionId": "v1", "CodeSha256": "abc"}]
    key = change_key(raw, versions)
    assert key == change_key(dict(raw), list(reversed(versions)))
    assert key != change_key({**raw, "RevisionId": "r2"}, versions)
    assert key != change_key({**raw, "LastModified": "2026-01-02T00:00:00.000+0000"}, versions)
    published = [*versions, {"Version": "2", "RevisionId": "v2", "CodeSha256": "def"}]
    assert key != change_key(raw, published)  # a new published version


class Reads:
    """A lookup's read, counted; `answer` is what the next read returns (or raises)."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.count = 0

    async def __call__(self) -> object:
        self.count += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_a_lookup_is_read_once_until_its_input_changes_or_it_is_invalidated() -> None:
    lookups = Lookups(HOUR, lookahead=60.0)
    read = Reads({"/aws/lambda/a": 14})
    key = digest(["/aws/lambda/a"])
    assert await lookups.read(SCOPE, "log-groups", 0.0, read, key=key) == (read.answer, 0.0)
    # later sweeps are served the first answer, with the time it was read
    assert await lookups.read(SCOPE, "log-groups", 60.0, read, key=key) == (read.answer, 0.0)
    assert read.count == 1
    # other account-regions and other lookups have their own entries
    await lookups.read(("222222222222", "eu-west-1"), "log-groups", 60.0, read, key=key)
    await lookups.read(SCOPE, "subnets", 60.0, read, key=key)
    assert read.count == 3
    # the input changed (a function with another log group): read again
    bigger = digest(["/aws/lambda/a", "/aws/lambda/b"])
    assert await lookups.read(SCOPE, "log-groups", 120.0, read, key=bigger) == (read.answer, 120.0)
    assert read.count == 4
    assert digest(["a", "b"]) != digest(["ab"]) != digest(["a", "b", ""])
    # a change event in the account-region forgets its lookups, not the others'
    lookups.invalidate(SCOPE)
    assert lookups.size(SCOPE) == 0 and lookups.size() == 1
    await lookups.read(SCOPE, "log-groups", 180.0, read, key=bigger)
    assert read.count == 5


async def test_a_lookup_is_never_older_than_max_age_and_refreshes_spread() -> None:
    interval = 300.0
    lookups = Lookups(HOUR, lookahead=interval)
    scopes = [(f"{100000000000 + i}", "eu-west-1") for i in range(120)]
    reads = {scope: Reads(scope) for scope in scopes}
    for scope in scopes:
        await lookups.read(scope, "region-posture", 0.0, reads[scope])
    per_sweep = []
    for sweep in range(1, 25):
        before = sum(r.count for r in reads.values())
        for scope in scopes:
            _, fetched_at = await lookups.read(
                scope, "region-posture", sweep * interval, reads[scope]
            )
            assert sweep * interval - fetched_at < HOUR
        per_sweep.append(sum(r.count for r in reads.values()) - before)
    # each lookup is read again once per hour, spread over the sweeps (120 / 12 = 10 on average)
    assert sum(per_sweep) == 2 * len(scopes)
    assert max(per_sweep) <= 25, per_sweep


async def test_unknown_is_never_cached_and_an_unusable_answer_is_read_again() -> None:
    lookups = Lookups(HOUR)
    # an answer that recorded an error is read again next sweep
    denied = Reads(({}, "AccessDeniedException"))
    for now in (0.0, 60.0):
        await lookups.read(SCOPE, "log-groups", now, denied, ok=lambda v: v[1] is None)
    assert denied.count == 2
    # a failing read (throttled) propagates and caches nothing
    failing = Reads(RuntimeError("Throttling"))
    with pytest.raises(RuntimeError):
        await lookups.read(SCOPE, "layers", 0.0, failing)
    failing.answer = ("layer:1",)
    assert await lookups.read(SCOPE, "layers", 60.0, failing) == (("layer:1",), 60.0)
    # an answer that cannot serve this sweep (a function uses a layer version it lacks)
    assert await lookups.read(SCOPE, "layers", 120.0, failing) == (("layer:1",), 60.0)
    failing.answer = ("layer:1", "layer:2")
    got = await lookups.read(SCOPE, "layers", 180.0, failing, usable=lambda v: "layer:2" in v)
    assert got == (("layer:1", "layer:2"), 180.0)
    assert failing.count == 3
    # a cache of max_age 0 reads every time
    none = Lookups(0)
    for now in (0.0, 1.0):
        await none.read(SCOPE, "layers", now, failing)
    assert failing.count == 5


async def test_kms_keys_are_a_lookup_and_a_denied_key_is_read_again() -> None:
    good = "arn:aws:kms:eu-west-1:111111111111:key/good"
    denied = "arn:aws:kms:eu-west-1:111111111111:key/denied"

    def describe(params: dict[str, object]) -> object:
        if params["KeyId"] == denied:
            return error("AccessDeniedException", "DescribeKey")
        return {"KeyMetadata": {"KeyId": "good", "Arn": good, "KeyManager": "CUSTOMER"}}

    api = FakeApi({("kms", "describe_key"): describe}, *SCOPE)
    lookups = Lookups(HOUR, lookahead=60.0)
    ctx = context(api, "rds")
    first = await kms.cached_keys(ctx, lookups, [good, "", good])
    key = first[good]
    assert isinstance(key, KmsKey) and key.key_manager == "CUSTOMER"
    assert await kms.cached_keys(ctx, lookups, [good]) == first
    assert api.count("kms", "describe_key") == 1  # one key, asked once; "" never
    # unknown is never cached: a denied key is asked again next time
    for _ in range(2):
        assert (await kms.cached_keys(ctx, lookups, [good, denied]))[
            denied
        ] == "AccessDeniedException"
    assert api.count("kms", "describe_key") == 5
