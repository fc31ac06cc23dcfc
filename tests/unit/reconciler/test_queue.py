"""The reconcile work queue and its backoff, driven by a fake clock wherever time matters."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from daemon.reconciler.queue import Backoff, WorkQueue


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue[str]:
    return WorkQueue(Backoff(base=1.0, cap=8.0, jitter=0.0), clock=clock)


async def get_now(q: WorkQueue[str]) -> str | None:
    """get() when something is (or should be) ready: it must not wait."""
    return await asyncio.wait_for(q.get(), timeout=1.0)


async def nothing_ready(q: WorkQueue[str]) -> bool:
    """True if get() finds nothing within a few milliseconds."""
    try:
        await asyncio.wait_for(q.get(), timeout=0.01)
    except TimeoutError:
        return True
    return False


# --- Backoff -------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_and_is_capped() -> None:
    b = Backoff(base=5.0, cap=60.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert b.delay(0) == 5.0  # no failure yet counts like the first
    assert b.delay(200) == 60.0  # no overflow for long failure streaks


def test_backoff_jitter_stays_within_its_fraction() -> None:
    b = Backoff(base=10.0, cap=100.0, jitter=0.2, rng=random.Random(7))
    delays = [b.delay(1) for _ in range(500)]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(set(delays)) > 100  # it does vary
    again = Backoff(base=10.0, cap=100.0, jitter=0.2, rng=random.Random(7))
    assert [again.delay(1) for _ in range(500)] == delays  # and is reproducible with a seed


# --- adding and taking ---------------------------------------------------------------------------


async def test_fifo_order_and_dedup_of_waiting_keys(queue: WorkQueue[str]) -> None:
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert queue.depth == 3
    assert [await get_now(queue) for _ in range(3)] == ["a", "b", "c"]
    assert queue.depth == 0
    assert await nothing_ready(queue)


async def test_key_added_while_processing_waits_for_done(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await get_now(queue) == "a"
    assert queue.is_processing("a")
    queue.add("a")
    queue.add("a")
    assert queue.depth == 0  # never handed to a second worker
    assert await nothing_ready(queue)
    queue.done("a")
    assert not queue.is_processing("a")
    assert queue.depth == 1
    assert await get_now(queue) == "a"
    queue.done("a")
    assert queue.depth == 0


async def test_done_without_new_add_does_not_requeue(queue: WorkQueue[str]) -> None:
    queue.add("a")
    await get_now(queue)
    queue.done("a")
    assert queue.depth == 0
    assert await nothing_ready(queue)


async def test_other_keys_proceed_while_one_is_processing(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await get_now(queue) == "a"
    queue.add("a")
    queue.add("b")
    assert await get_now(queue) == "b"


async def test_waiting_get_is_woken_by_add(queue: WorkQueue[str]) -> None:
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.add("a")
    assert await asyncio.wait_for(waiter, timeout=1.0) == "a"


# --- scheduling ----------------------------------------------------------------------------------


async def test_add_after_waits_for_the_clock(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add_after("a", 5.0)
    assert (queue.depth, queue.scheduled) == (0, 1)
    clock.advance(4.9)
    assert await nothing_ready(queue)
    clock.advance(0.1)
    assert await get_now(queue) == "a"
    assert queue.scheduled == 0


async def test_due_keys_come_out_in_schedule_order(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add_after("a", 3.0)
    queue.add_after("b", 1.0)
    queue.add_after("c", 2.0)
    clock.advance(10.0)
    assert [await get_now(queue) for _ in range(3)] == ["b", "c", "a"]


async def test_earlier_schedule_wins(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add_after("a", 10.0)
    queue.add_after("a", 3.0)  # earlier: replaces
    queue.add_after("a", 7.0)  # later: ignored
    assert queue.scheduled == 1
    clock.advance(3.0)
    assert await get_now(queue) == "a"
    queue.done("a")
    clock.advance(10.0)  # the superseded schedules do not fire again
    assert await nothing_ready(queue)
    assert queue.scheduled == 0


async def test_add_cancels_a_pending_schedule(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add_after("a", 5.0)
    queue.add("a")
    assert (queue.depth, queue.scheduled) == (1, 0)
    assert await get_now(queue) == "a"
    queue.done("a")
    clock.advance(5.0)
    assert await nothing_ready(queue)


async def test_add_after_with_no_delay_is_add(queue: WorkQueue[str]) -> None:
    queue.add_after("a", 0)
    queue.add_after("b", -1.0)
    assert (queue.depth, queue.scheduled) == (2, 0)


async def test_scheduled_key_due_while_processing_waits_for_done(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add("a")
    assert await get_now(queue) == "a"
    queue.add_after("a", 1.0)
    clock.advance(1.0)
    assert await nothing_ready(queue)
    queue.done("a")
    assert await get_now(queue) == "a"


async def test_waiting_get_wakes_when_a_schedule_comes_due() -> None:
    q: WorkQueue[str] = WorkQueue(Backoff(1.0, 8.0, jitter=0.0))  # real monotonic clock
    start = time.monotonic()
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add_after("a", 0.02)
    assert await asyncio.wait_for(waiter, timeout=1.0) == "a"
    assert time.monotonic() - start >= 0.015


# --- rate limiting -------------------------------------------------------------------------------


async def test_add_rate_limited_backs_off_exponentially_up_to_the_cap(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    delays = []
    for _ in range(6):
        delays.append(queue.add_rate_limited("a"))
        clock.advance(delays[-1])
        assert await get_now(queue) == "a"
        queue.done("a")
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert queue.failures("a") == 6


async def test_rate_limited_key_is_not_ready_before_its_delay(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add_rate_limited("a")
    queue.add_rate_limited("a")  # 2 s; the pending 1 s schedule is earlier and stays
    assert queue.failures("a") == 2
    clock.advance(0.5)
    assert await nothing_ready(queue)
    clock.advance(0.5)
    assert await get_now(queue) == "a"


async def test_failures_are_counted_per_key(queue: WorkQueue[str]) -> None:
    queue.add_rate_limited("a")
    queue.add_rate_limited("a")
    assert queue.add_rate_limited("b") == 1.0
    assert (queue.failures("a"), queue.failures("b"), queue.failures("c")) == (2, 1, 0)


async def test_forget_resets_the_backoff(queue: WorkQueue[str]) -> None:
    for _ in range(3):
        queue.add_rate_limited("a")
    queue.forget("a")
    assert queue.failures("a") == 0
    assert queue.add_rate_limited("a") == 1.0
    queue.forget("never-seen")  # harmless


# --- removal and shutdown ------------------------------------------------------------------------


async def test_remove_drops_waiting_and_scheduled_keys(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add("a")
    queue.add("b")
    queue.add_after("c", 1.0)
    queue.add_rate_limited("d")
    for key in ("a", "c", "d"):
        queue.remove(key)
    assert (queue.depth, queue.scheduled) == (1, 0)
    assert queue.failures("d") == 0
    clock.advance(100.0)
    assert await get_now(queue) == "b"
    assert await nothing_ready(queue)
    queue.remove("unknown")  # harmless


async def test_remove_of_a_processing_key_cancels_its_requeue(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await get_now(queue) == "a"
    queue.add("a")
    queue.remove("a")
    assert queue.is_processing("a")  # the worker finishes normally
    queue.done("a")
    assert queue.depth == 0
    assert await nothing_ready(queue)


async def test_removed_key_can_be_added_again(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.remove("a")
    queue.add("a")
    assert await get_now(queue) == "a"


async def test_shutdown_makes_get_return_none(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.shutdown()
    assert await get_now(queue) is None
    queue.add("b")
    queue.add_after("c", 1.0)
    assert (queue.depth, queue.scheduled) == (1, 0)  # nothing new is accepted


async def test_shutdown_wakes_every_waiting_worker(queue: WorkQueue[str]) -> None:
    waiters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.shutdown()
    assert await asyncio.wait_for(asyncio.gather(*waiters), timeout=1.0) == [None, None, None]


# --- introspection -------------------------------------------------------------------------------


async def test_longest_wait_and_depth(queue: WorkQueue[str], clock: FakeClock) -> None:
    assert queue.longest_wait() == 0.0
    queue.add("a")
    clock.advance(2.0)
    queue.add("b")
    clock.advance(3.0)
    assert queue.depth == 2
    assert queue.longest_wait() == pytest.approx(5.0)
    assert await get_now(queue) == "a"
    assert queue.longest_wait() == pytest.approx(3.0)
    assert await get_now(queue) == "b"
    assert (queue.depth, queue.longest_wait()) == (0, 0.0)


async def test_requeued_key_waits_from_done(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a")
    await get_now(queue)
    queue.add("a")
    clock.advance(10.0)
    assert queue.longest_wait() == 0.0  # a processing key is not waiting
    queue.done("a")
    clock.advance(1.0)
    assert queue.longest_wait() == pytest.approx(1.0)


async def test_scheduled_keys_are_not_waiting(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add_after("a", 5.0)
    clock.advance(2.0)
    assert (queue.depth, queue.longest_wait()) == (0, 0.0)
