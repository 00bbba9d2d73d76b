"""atoll.aio.wait_or_stop: the pause of every loop, cut short by its stop event."""

from __future__ import annotations

import asyncio
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
