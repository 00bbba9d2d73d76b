"""Small asyncio helpers shared by both daemons."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_or_stop(stop: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109 (it is the point)
    """Sleep up to `timeout` seconds, waking early when `stop` is set; True if it is set.

    The pause of every periodic loop and every retry backoff:

        while not stop.is_set():
            do_the_work()
            if await wait_or_stop(stop, period):
                break
    """
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set()


async def wait_any(stop: asyncio.Event, timeout: float | None, *wake: asyncio.Event) -> bool:  # noqa: ASYNC109
    """wait_or_stop that also wakes early when one of `wake` is set (timeout None: no timeout);
    True if `stop` is set."""
    if not wake and timeout is not None:
        return await wait_or_stop(stop, timeout)
    waiters = [asyncio.ensure_future(e.wait()) for e in (stop, *wake)]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return stop.is_set()
