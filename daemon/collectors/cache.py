"""The per-resource detail cache: re-read a resource's sub-resources only when it changed.

A sweep always lists (ListFunctions, DescribeRepositories, ...): the list answer carries a *change
key* per resource (Lambda: RevisionId, CodeSha256, LastModified and the published versions). The
details behind it (policy, URL, aliases, invoke config, repository policy, ...) cost one call each
and are cached under that key. They are read again when

- the change key differs (the resource changed), or
- the resource's rolling refresh is due: AWS does not document every operation that changes a
  RevisionId (aliases, URLs, invoke configs and tags do not), so no detail is served older than
  `max_age`. Each resource has a fixed phase in [0, max_age) derived from its ARN; its detail is
  re-read in the sweep before it crosses its next phase boundary. Boundaries are uniform over the
  period, so refreshes are spread evenly over the sweeps -- from the first cold sweep on -- instead
  of the whole estate expiring at once; or
- it was invalidated (the event fast path saw a change), or the last read recorded an error
  (unknown is never cached: an aspect that could not be read is read again next sweep).

`Lookups` applies the same rules to the account-region lookups no listing versions (code signing
configs, log groups, layer listings, AWS Config and CloudTrail posture, KMS keys, security groups):
each is read again when its input changes (`key`: the log groups, keys or groups asked about),
when the cached answer cannot serve this sweep (`usable`), after a change event in its
account-region, or on its rolling refresh -- instead of every sweep.

Time is passed in (`now`, unix seconds), so the tests need no clock; the reads are passed in too.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Scope = tuple[str, str]  # (account id, region)


def phase(resource: str) -> float:
    """A stable fraction in [0, 1) for a resource (its place in the refresh period)."""
    # blake2b, not crc32: CRC is linear, so names that differ in a digit cluster together
    digest = hashlib.blake2b(resource.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def refresh_due(
    resource: str, fetched_at: float, now: float, max_age: float, lookahead: float = 0.0
) -> bool:
    """Whether the resource's detail (read at `fetched_at`) must be re-read now.

    Due when a phase boundary of the resource lies in (fetched_at + lookahead, now + lookahead].
    `lookahead` is the sweep interval: a boundary before the next sweep is taken now (and not
    again by that next sweep), so with sweeps every `lookahead` seconds a served detail is always
    younger than max_age. max_age <= 0: always due (no cache).
    """
    if max_age <= 0:
        return True
    offset = phase(resource) * max_age
    return math.floor((now + lookahead + offset) / max_age) > math.floor(
        (fetched_at + lookahead + offset) / max_age
    )


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    key: Hashable  # the change key the detail was read under
    value: T
    fetched_at: float  # unix seconds


class DetailCache(Generic[T]):
    """Details by (account, region) and resource; one instance per collector, for its lifetime."""

    def __init__(self, max_age: float, lookahead: float = 0.0) -> None:
        self.max_age = max_age
        self.lookahead = lookahead
        self._entries: dict[Scope, dict[str, Entry[T]]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, scope: Scope, resource: str, key: Hashable, now: float) -> Entry[T] | None:
        """The cached detail when it is still valid for `key` at `now`; None: read it again."""
        entry = self._entries.get(scope, {}).get(resource)
        if (
            entry is None
            or entry.key != key
            or refresh_due(resource, entry.fetched_at, now, self.max_age, self.lookahead)
        ):
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, scope: Scope, resource: str, key: Hashable, value: T, now: float) -> Entry[T]:
        entry = Entry(key, value, now)
        if self.max_age > 0:
            self._entries.setdefault(scope, {})[resource] = entry
        return entry

    def discard(self, scope: Scope, resource: str) -> None:
        self._entries.get(scope, {}).pop(resource, None)

    def invalidate(self, scope: Scope, resource: str | None = None) -> None:
        """Forget one resource's detail (None: the whole scope), e.g. after a change event."""
        if resource is None:
            self._entries.pop(scope, None)
        else:
            self.discard(scope, resource)

    def retain(self, scope: Scope, resources: Iterable[str]) -> None:
        """Keep only the resources still listed (deleted ones are forgotten)."""
        entries = self._entries.get(scope)
        if not entries:
            return
        keep = set(resources)
        for gone in [r for r in entries if r not in keep]:
            del entries[gone]

    def size(self, scope: Scope | None = None) -> int:
        if scope is not None:
            return len(self._entries.get(scope, {}))
        return sum(len(e) for e in self._entries.values())


def digest(items: Iterable[str]) -> bytes:
    """A short fingerprint of a lookup's input (log group names, key ids, ...), so a cache entry
    keeps 16 bytes of it instead of the whole list."""
    h = hashlib.blake2b(digest_size=16)
    for item in items:
        h.update(item.encode())
        h.update(b"\0")
    return h.digest()


def _always(_: Any) -> bool:
    return True


class Lookups:
    """Account-region lookups cached under max_data_age; one instance per collector.

    An answer that recorded an error (`ok` false) is never cached: unknown is read again next
    sweep, as for details. A failing read (an exception: throttled, 5xx) caches nothing either.
    """

    def __init__(self, max_age: float, lookahead: float = 0.0) -> None:
        self._cache: DetailCache[Any] = DetailCache(max_age, lookahead)

    async def read(
        self,
        scope: Scope,
        name: str,
        now: float,
        fetch: Callable[[], Awaitable[T]],
        *,
        key: Hashable = None,
        ok: Callable[[T], bool] = _always,
        usable: Callable[[T], bool] = _always,
    ) -> tuple[T, float]:
        """The lookup's answer and the unix time it was read (earlier sweeps: from the cache)."""
        # the phase (when the rolling refresh is due) differs per account-region and lookup
        resource = f"{scope[0]}/{scope[1]}/{name}"
        entry = self._cache.get(scope, resource, key, now)
        if entry is not None and usable(entry.value):
            return entry.value, entry.fetched_at
        value = await fetch()
        if ok(value):
            self._cache.put(scope, resource, key, value, now)
        else:
            self._cache.discard(scope, resource)
        return value, now

    def invalidate(self, scope: Scope) -> None:
        """Forget every lookup of an account-region (a change event there)."""
        self._cache.invalidate(scope)

    def size(self, scope: Scope | None = None) -> int:
        return self._cache.size(scope)
