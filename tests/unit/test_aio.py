"""atoll.aio.wait_or_stop and wait_any: the pauses of every loop, cut short by their events."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from atoll import aio
from atoll.aio import wait_or_stop


async def test_times_out_false_when_nobody_stops() -> None:
    stop = asyncio.Event()
    started = time.monotonic()
    assert await wait_or_stop(stop, 0.05) is False
    assert time.monotonic() - started >= 0.04
    assert await wait_or_stop(stop, 0) is False
    assert await wait_or_stop(stop, -1) is False


async def test_returns_true_as_soon_as_stop_is_set() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, stop.set)
    started = time.monotonic()
    assert await wait_or_stop(stop, 30) is True
    assert time.monotonic() - started < 5


async def test_already_stopped_returns_true_at_once_even_without_time() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await wait_or_stop(stop, 0) is True
    assert await wait_or_stop(stop, 3600) is True


async def test_a_cancelled_waiter_is_cancelled_not_stopped() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(wait_or_stop(stop, 30))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled() and not stop.is_set()


async def test_a_task_that_once_swallowed_a_cancel_still_sleeps_and_stays_cancellable() -> None:
    """On 3.11 asyncio.timeout reports its own expiry as CancelledError in a task whose earlier
    cancel was swallowed; wait_or_stop still returns at the timeout, and a cancel from outside
    still ends the wait."""
    stop = asyncio.Event()
    results: list[bool] = []

    async def loop() -> None:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        with contextlib.suppress(asyncio.CancelledError):
            await inner  # the cancel is swallowed: the task's count stays at 1
        results.append(await wait_or_stop(stop, 0.01))
        results.append(await wait_or_stop(stop, 0.01))
        await wait_or_stop(stop, 30)

    task = asyncio.create_task(loop())
    for _ in range(200):
        if len(results) == 2:
            break
        await asyncio.sleep(0.01)
    assert results == [False, False]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- wait_any: one future on several events ------------------------------------------------


async def test_wait_any_wakes_on_the_first_event_set_and_says_whether_it_was_stop() -> None:
    stop, wake, other = asyncio.Event(), asyncio.Event(), asyncio.Event()
    waiter = asyncio.create_task(aio.wait_any(stop, None, wake, other))
    await asyncio.sleep(0)
    assert not waiter.done()
    other.set()
    assert await asyncio.wait_for(waiter, 1) is False
    # Nothing of the waiter is left on any event; a later set() finds no waiter of ours.
    assert all(not e._waiters for e in (stop, wake, other))
    waiter = asyncio.create_task(aio.wait_any(stop, 60.0, wake))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiter, 1) is True


async def test_wait_any_times_out_and_returns_at_once_when_an_event_is_already_set() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await aio.wait_any(stop, 0.05, wake) is False
    assert loop.time() - started >= 0.04
    wake.set()
    assert await asyncio.wait_for(aio.wait_any(stop, None, wake), 1) is False  # set before: no wait
    assert not wake._waiters and not stop._waiters


async def test_wait_any_cancelled_leaves_no_waiter_and_a_later_set_harms_nothing() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    waiter = asyncio.create_task(aio.wait_any(stop, 60.0, wake))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not wake._waiters and not stop._waiters
    wake.set()
    stop.set()
    # Two waiters on one event each get woken.
    e = asyncio.Event()
    first = asyncio.create_task(aio.wait_any(asyncio.Event(), None, e))
    second = asyncio.create_task(aio.wait_any(asyncio.Event(), None, e))
    await asyncio.sleep(0)
    e.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 1) == [False, False]


async def test_wait_any_with_an_event_of_another_make_falls_back_to_tasks() -> None:
    class Foreign(asyncio.Event):
        """An Event whose waiters are not a deque (another asyncio's, say)."""

        def __init__(self) -> None:
            super().__init__()
            self._waiters = list(self._waiters)  # type: ignore[assignment]

    stop, foreign = asyncio.Event(), Foreign()
    waiter = asyncio.create_task(aio.wait_any(stop, None, foreign))
    await asyncio.sleep(0)
    foreign.set()
    assert await asyncio.wait_for(waiter, 1) is False
    assert not foreign._waiters and not stop._waiters


def test_wait_any_on_an_event_of_another_loop_returns_at_once_as_before() -> None:
    """Such an event's wait() raises at once; wait_any takes it as woken (as it always has),
    rather than joining a future of this loop to an event another loop's thread sets."""
    bound = asyncio.Event()
    with contextlib.suppress(TimeoutError):
        asyncio.run(asyncio.wait_for(bound.wait(), 0.01))  # waited on once: bound to that loop

    async def wait_elsewhere() -> bool:
        return await asyncio.wait_for(aio.wait_any(asyncio.Event(), 30.0, bound), 5.0)

    assert asyncio.run(wait_elsewhere()) is False
