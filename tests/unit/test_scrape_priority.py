"""ScrapePriority: a scrape holds the daemon's event loop while /metrics renders, within limits.

Each test runs a real event loop on a thread of its own (standing for the daemon's) and scrapes
from the test's thread (standing for the HTTP server's). A callback queued on the loop after the
hold can only run once the hold has ended: the loop runs its ready callbacks in order.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from daemon.server import ScrapePriority

WAIT = 5.0  # generous: how long a callback the loop is free to run may take to run
HELD = 0.3  # how long a callback behind a hold must stay waiting to show the loop is held


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT)
    loop.close()


def mark(loop: asyncio.AbstractEventLoop) -> threading.Event:
    """An event the loop sets when it gets to run the callbacks queued so far."""
    ran = threading.Event()
    loop.call_soon_threadsafe(ran.set)
    return ran


def test_the_loop_waits_until_the_scrape_has_rendered(loop: asyncio.AbstractEventLoop) -> None:
    priority = ScrapePriority(cap=60, share=1)
    priority.bind(loop)
    assert mark(loop).wait(WAIT)  # the loop runs callbacks
    with priority.held():
        behind = mark(loop)
        assert not behind.wait(HELD), "the loop ran a callback while a scrape rendered"
    assert behind.wait(WAIT), "the loop did not resume after the scrape"
    assert priority.holds == 1


def test_overlapping_scrapes_hold_the_loop_once_until_the_last_ends(
    loop: asyncio.AbstractEventLoop,
) -> None:
    priority = ScrapePriority(cap=60, share=1)
    priority.bind(loop)
    first = priority.held()
    second = priority.held()
    first.__enter__()
    second.__enter__()
    behind = mark(loop)
    first.__exit__(None, None, None)
    assert not behind.wait(HELD), "the loop resumed while a scrape was still rendering"
    second.__exit__(None, None, None)
    assert behind.wait(WAIT)
    assert priority.holds == 1


def test_a_hold_ends_after_the_cap_even_if_the_render_does_not(
    loop: asyncio.AbstractEventLoop,
) -> None:
    priority = ScrapePriority(cap=0.2, share=1)
    priority.bind(loop)
    with priority.held():
        behind = mark(loop)
        assert behind.wait(WAIT), "a slow render held the loop beyond the cap"
    assert priority.holds == 1


def test_holds_take_at_most_their_share_of_the_time(loop: asyncio.AbstractEventLoop) -> None:
    """A client scraping in a loop cannot hold the daemon: after a hold of t seconds, scrapes
    within t x (1 - share) / share do not hold it again (here, 0.3 s: 1.2 s)."""
    priority = ScrapePriority(cap=60, share=0.2)
    priority.bind(loop)
    with priority.held():
        behind = mark(loop)
        assert not behind.wait(HELD)
    assert behind.wait(WAIT)
    for _ in range(3):
        with priority.held():
            assert mark(loop).wait(WAIT), "a scrape within the cooldown held the loop"
    assert priority.holds == 1
    with pytest.raises(ValueError, match="share"):
        ScrapePriority(share=0)


def test_a_scrape_that_ended_before_the_loop_got_to_the_hold_does_not_hold_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    priority = ScrapePriority(cap=60, share=1)
    priority.bind(loop)
    blocker = threading.Event()
    loop.call_soon_threadsafe(blocker.wait, WAIT)  # the loop is busy with a long callback
    with priority.held():
        pass  # rendered before the loop got to the hold callback
    blocker.set()
    assert mark(loop).wait(WAIT)
    assert priority.holds == 0


def test_unbound_or_closed_there_is_nothing_to_hold() -> None:
    priority = ScrapePriority(cap=60, share=1)
    with priority.held():
        pass
    closed = asyncio.new_event_loop()
    closed.close()
    priority.bind(closed)
    with priority.held():
        pass
    assert priority.holds == 0


@pytest.fixture
def young_passes() -> Iterator[list[int]]:
    """The generations of the collections that start meanwhile, with a young pass due every 100
    allocations (CPython's default is 700; the daemon's, 50,000)."""
    started: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    thresholds = gc.get_threshold()
    assert gc.isenabled()
    gc.set_threshold(100, *thresholds[1:])
    gc.collect()  # the young generation starts empty
    gc.callbacks.append(record)
    try:
        yield started
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*thresholds)
        gc.enable()


def allocate(count: int) -> list[list[int]]:
    return [[] for _ in range(count)]  # lists: objects the collector tracks


def test_no_collection_starts_while_scrapes_render_and_they_resume_after(
    young_passes: list[int],
) -> None:
    priority = ScrapePriority(cap=60, share=1)
    first, second = priority.held(), priority.held()
    first.__enter__()
    second.__enter__()
    kept = allocate(5_000)  # 50 young passes' worth
    first.__exit__(None, None, None)
    kept += allocate(5_000)  # one scrape still renders
    assert young_passes == [], "a collection ran while a scrape rendered"
    second.__exit__(None, None, None)
    assert gc.isenabled()
    kept += allocate(1_000)
    assert young_passes, "collection stayed off after the scrapes"
    assert len(kept) == 11_000


def test_collection_turned_off_before_a_scrape_stays_off(young_passes: list[int]) -> None:
    gc.disable()
    with ScrapePriority(cap=60, share=1).held():
        pass
    assert not gc.isenabled()
    allocate(1_000)
    assert young_passes == []
