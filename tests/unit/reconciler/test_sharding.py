"""Account sharding: FNV-1a 64 then Jump Consistent Hash, checked against published vectors."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from daemon.reconciler.sharding import fnv1a_64, jump_hash, owns, shard_of

# 10,000 synthetic, distinct 12-digit account ids (seeded: the test is deterministic).
_rng = random.Random(20240601)
ACCOUNTS = [f"{n:012d}" for n in _rng.sample(range(10**11, 10**12), 10_000)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0xCBF29CE484222325),
        (b"a", 0xAF63DC4C8601EC8C),
        (b"b", 0xAF63DF4C8601F1A5),
        (b"foobar", 0x85944171F73967E8),
    ],
)
def test_fnv1a_64_known_vectors(data: bytes, expected: int) -> None:
    assert fnv1a_64(data) == expected


def test_fnv1a_64_is_64_bit_and_order_sensitive() -> None:
    values = [fnv1a_64(a.encode()) for a in ACCOUNTS[:1000]]
    assert all(0 <= v < 2**64 for v in values)
    assert len(set(values)) == 1000
    assert fnv1a_64(b"ab") != fnv1a_64(b"ba")


@pytest.mark.parametrize(
    ("key", "buckets", "expected"),
    [
        # vectors shared by the reference implementations (Go, C, Python, Elixir ports)
        (1, 1, 0),
        (42, 57, 43),
        (0xDEAD10CC, 1, 0),
        (0xDEAD10CC, 666, 361),
        (256, 1024, 520),
        (2**64 - 1, 128, 92),
        (128, 100_000_000, 38_172_097),
    ],
)
def test_jump_hash_known_vectors(key: int, buckets: int, expected: int) -> None:
    assert jump_hash(key, buckets) == expected


def test_jump_hash_reduces_keys_to_64_bits() -> None:
    assert jump_hash(-42, 57) == jump_hash(2**64 - 42, 57) == 8
    assert jump_hash(2**64 + 42, 57) == jump_hash(42, 57)


def test_jump_hash_one_bucket_is_always_zero() -> None:
    assert {jump_hash(fnv1a_64(a.encode()), 1) for a in ACCOUNTS[:500]} == {0}


@pytest.mark.parametrize("buckets", [0, -1])
def test_jump_hash_rejects_no_buckets(buckets: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        jump_hash(123, buckets)


def test_jump_hash_result_is_in_range() -> None:
    keys = [fnv1a_64(a.encode()) for a in ACCOUNTS[:500]]
    for buckets in (1, 2, 3, 7, 64, 1000):
        assert all(0 <= jump_hash(k, buckets) < buckets for k in keys)


def test_jump_hash_growing_moves_keys_only_to_the_new_bucket() -> None:
    keys = [fnv1a_64(a.encode()) for a in ACCOUNTS[:2000]]
    for n in range(1, 12):
        for k in keys:
            before, after = jump_hash(k, n), jump_hash(k, n + 1)
            assert after in (before, n), (k, n)


def test_growing_from_three_to_four_shards_moves_about_a_quarter() -> None:
    moved = sum(1 for a in ACCOUNTS if shard_of(a, 3) != shard_of(a, 4))
    assert 0.22 < moved / len(ACCOUNTS) < 0.28


@pytest.mark.parametrize("shards", [2, 3])
def test_shard_of_spreads_accounts_evenly(shards: int) -> None:
    counts = Counter(shard_of(a, shards) for a in ACCOUNTS)
    assert set(counts) == set(range(shards))
    even = len(ACCOUNTS) / shards
    for shard, count in counts.items():
        assert abs(count - even) <= 0.1 * even, (shard, count)


def test_shard_of_is_stable_and_uses_the_text_of_the_id() -> None:
    assert shard_of("012345678901", 5) == jump_hash(fnv1a_64(b"012345678901"), 5)
    assert [shard_of(a, 7) for a in ACCOUNTS[:50]] == [shard_of(a, 7) for a in ACCOUNTS[:50]]


def test_owns_with_one_shard_owns_everything() -> None:
    assert all(owns(a, 0, 1) for a in ACCOUNTS[:200])


@pytest.mark.parametrize("shards", [2, 3, 5])
def test_exactly_one_replica_owns_each_account(shards: int) -> None:
    for account in ACCOUNTS[:500]:
        owners = [i for i in range(shards) if owns(account, i, shards)]
        assert owners == [shard_of(account, shards)]
