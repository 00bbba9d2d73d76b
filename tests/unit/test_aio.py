"""atoll.aio.wait_or_stop: the pause of every loop, cut short by its stop event."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

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
