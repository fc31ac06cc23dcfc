"""Which replica owns an account: FNV-1a 64 of the account id, then Jump Consistent Hash.

Pure and stable: every replica computes the same owner for an account without talking to the
others, and changing the shard count moves only about 1/N of the accounts.
"""

from __future__ import annotations

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME) & _MASK
    return h


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014)."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    key &= _MASK
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def shard_of(account_id: str, shard_count: int) -> int:
    return jump_hash(fnv1a_64(account_id.encode()), shard_count)


def owns(account_id: str, shard_index: int, shard_count: int) -> bool:
    return shard_count <= 1 or shard_of(account_id, shard_count) == shard_index
