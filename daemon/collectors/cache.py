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

Pure logic: time is passed in (`now`, unix seconds), so the tests need no clock.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

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
