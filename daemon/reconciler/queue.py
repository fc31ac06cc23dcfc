"""A work queue for reconcile keys, after client-go's workqueue.

- A key waiting in the queue is not added twice (dedup).
- A key being processed is never handed to a second worker; if it is added meanwhile it is queued
  again when the first worker calls `done` (per-key serialisation).
- `add_after` schedules a key; an earlier schedule for the same key wins.
- `add_rate_limited` backs a key off exponentially per failure; `forget` resets it.
- `shutdown` makes `get` return None so workers stop taking new work.
Single event loop, no threads: plain data structures, one Event to wake waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Backoff:
    def __init__(
        self, base: float, cap: float, jitter: float = 0.2, rng: random.Random | None = None
    ):
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.rng = rng or random.Random()

    def delay(self, failures: int) -> float:
        raw = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return float(raw * (1 + self.rng.uniform(-self.jitter, self.jitter)))


class WorkQueue(Generic[K]):
    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self.clock = clock
        self._ready: deque[K] = deque()
        self._ready_since: dict[K, float] = {}
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []
        self._delayed_at: dict[K, float] = {}
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self._wake = asyncio.Event()
        self._shutdown = False

    # --- adding -----------------------------------------------------------------------------------
    def add(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._delayed_at.pop(key, None)
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.append(key)
            self._ready_since[key] = self.clock()
            self._wake.set()

    def add_after(self, key: K, delay: float) -> None:
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        at = self.clock() + delay
        current = self._delayed_at.get(key)
        if current is not None and current <= at:
            return
        self._delayed_at[key] = at
        heapq.heappush(self._delayed, (at, next(self._seq), key))
        self._wake.set()

    def add_rate_limited(self, key: K) -> float:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = self.backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def remove(self, key: K) -> None:
        """Drop a key that is no longer wanted (a worker holding it finishes normally)."""
        self._dirty.discard(key)
        self._delayed_at.pop(key, None)
        self._failures.pop(key, None)
        if key in self._ready_since:
            self._ready_since.pop(key)
            self._ready.remove(key)

    # --- taking -----------------------------------------------------------------------------------
    def _promote_due(self) -> float | None:
        """Move due delayed keys to ready; return seconds until the next one (None: none)."""
        now = self.clock()
        while self._delayed:
            at, _, key = self._delayed[0]
            if self._delayed_at.get(key) != at:
                heapq.heappop(self._delayed)  # superseded or removed
                continue
            if at > now:
                return at - now
            heapq.heappop(self._delayed)
            del self._delayed_at[key]
            self.add(key)
        return None

    async def get(self) -> K | None:
        while True:
            if self._shutdown:
                return None
            wait = self._promote_due()
            if self._ready:
                key = self._ready.popleft()
                self._ready_since.pop(key, None)
                self._dirty.discard(key)
                self._processing.add(key)
                return key
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty and key not in self._ready_since:
            self._ready.append(key)
            self._ready_since[key] = self.clock()
            self._wake.set()

    def shutdown(self) -> None:
        self._shutdown = True
        self._wake.set()

    # --- introspection ----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._ready)

    @property
    def scheduled(self) -> int:
        return len(self._delayed_at)

    def longest_wait(self) -> float:
        if not self._ready_since:
            return 0.0
        return max(0.0, self.clock() - min(self._ready_since.values()))

    def is_processing(self, key: K) -> bool:
        return key in self._processing
