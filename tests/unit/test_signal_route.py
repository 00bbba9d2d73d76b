"""Signals reach the loop through a socket of their own, even when asyncio's is full."""

from __future__ import annotations

import asyncio
import os
import signal

from atoll.aio import SignalRoute


def _fill(sock: object) -> int:
    """Write to a non-blocking socket until it takes no more; how many bytes it took."""
    taken = 0
    while True:
        try:
            taken += sock.send(b"\0" * 4096)  # type: ignore[attr-defined]
        except BlockingIOError:
            return taken


async def test_a_signal_arrives_while_the_loops_wake_up_socket_is_full() -> None:
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    before = signal.getsignal(signal.SIGUSR1)
    fd_before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd_before)
    route = SignalRoute(loop, {signal.SIGUSR1: got.set})
    try:
        # What a storm of call_soon_threadsafe does: asyncio's self-pipe full. A signal sent to
        # asyncio's add_signal_handler now would be dropped ("Exception ignored when trying to
        # write to the signal wakeup fd").
        assert _fill(loop._csock) > 0  # type: ignore[attr-defined]  # asyncio's own socket
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(got.wait(), 5)
    finally:
        route.close()
    assert signal.getsignal(signal.SIGUSR1) == before
    assert signal.set_wakeup_fd(fd_before) == fd_before  # no wakeup socket of ours left behind


async def test_the_route_takes_the_wakeup_socket_back_and_closes_once() -> None:
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    route = SignalRoute(loop, {signal.SIGUSR2: got.set})
    try:
        assert not route.ensure()
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)  # asyncio takes the process's socket
        loop.remove_signal_handler(signal.SIGUSR1)
        assert route.ensure()  # noticed, and taken back
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.wait_for(got.wait(), 5)
    finally:
        route.close()
        route.close()
