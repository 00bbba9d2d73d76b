"""Small asyncio helpers shared by both daemons."""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


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
    # asyncio.timeout, not wait_for: on 3.11 wait_for wraps stop.wait() in a task of its own and
    # waits out its cancellation, 1.7 times the cost, paid by every idle loop of every agent.
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await stop.wait()
    except TimeoutError:
        pass
    except asyncio.CancelledError:
        # On 3.11 the timeout's own cancel turns into TimeoutError only if the task had no
        # cancel pending before; a task that once swallowed a cancel would see CancelledError
        # here at every timeout. Ours, with nothing new from outside, is a timeout all the same.
        if task is None or not deadline.expired() or task.cancelling() > cancelling:
            raise
    return stop.is_set()


async def wait_any(stop: asyncio.Event, timeout: float | None, *wake: asyncio.Event) -> bool:  # noqa: ASYNC109
    """wait_or_stop that also wakes early when one of `wake` is set (timeout None: no timeout);
    True if `stop` is set.

    One future waits on all the events at once: it joins each event's own waiters, as
    Event.wait's future does, so the first set() resolves it. No task per event and no
    asyncio.wait: every agent's loops wait here after each piece of work (a tenth of the
    hollow fleet's time in bench/hollow.py went to those tasks).
    """
    if not wake and timeout is not None:
        return await wait_or_stop(stop, timeout)
    events = (stop, *wake)
    if any(e.is_set() for e in events):
        return stop.is_set()
    loop = asyncio.get_running_loop()
    queues = [_waiters_of(e, loop) for e in events]
    if any(q is None for q in queues):  # an Event of another make or loop: as Event.wait would
        return await _wait_any_tasks(stop, timeout, events)
    woken: asyncio.Future[bool] = loop.create_future()
    for q in queues:
        q.append(woken)  # type: ignore[union-attr]
    timer = loop.call_later(timeout, _resolve, woken) if timeout is not None else None
    try:
        await woken
    finally:
        if timer is not None:
            timer.cancel()
        for q in queues:
            try:
                q.remove(woken)  # type: ignore[union-attr]
            except ValueError:
                pass
    return stop.is_set()


def _waiters_of(
    event: asyncio.Event, loop: asyncio.AbstractEventLoop
) -> collections.deque[asyncio.Future[Any]] | None:
    """The futures `event.set()` resolves (CPython's asyncio.Event keeps them in `_waiters`);
    None if there is no such deque, or the event belongs to another loop (its wait() raises)."""
    waiters = getattr(event, "_waiters", None)
    if not isinstance(waiters, collections.deque) or getattr(event, "_loop", None) not in (None, loop):
        return None
    return waiters


def _resolve(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


async def _wait_any_tasks(
    stop: asyncio.Event,
    timeout: float | None,  # noqa: ASYNC109
    events: tuple[asyncio.Event, ...],
) -> bool:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return stop.is_set()


async def merge(*sources: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """The items of every source as each comes, each source's in its order; ends when all
    sources have ended. A source's error ends the merge with it; closing the merge (or an
    error) cancels the sources' pending reads and closes them.

    Each source is read by a pump of its own that hands one item over and waits until it is
    taken before it reads the next, so no source runs more than one item ahead (a push built
    early would only be a stale one). An item costs a future and a queue slot, not a task and
    an asyncio.wait over every source as a read per item did (a tenth of WatchNode's cost).
    """
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[tuple[object, asyncio.Future[None] | BaseException | None]] = asyncio.Queue()

    async def pump(source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                taken = loop.create_future()
                ready.put_nowait((item, taken))
                await taken
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the merge is closing: it cancelled this pump
            ready.put_nowait((_FAILED, exc))  # a source's own cancellation ends the merge with it
        except BaseException as exc:  # the merge raises it
            ready.put_nowait((_FAILED, exc))
        else:
            ready.put_nowait((_ENDED, None))

    pumps = [asyncio.ensure_future(pump(source)) for source in sources]
    try:
        live = len(pumps)
        while live:
            item, taken = await ready.get()
            if item is _ENDED:
                live -= 1
                continue
            if item is _FAILED:
                assert isinstance(taken, BaseException)
                raise taken
            yield item  # type: ignore[misc]
            assert isinstance(taken, asyncio.Future)
            taken.set_result(None)
    finally:
        for running in pumps:
            running.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for source in sources:
            close = getattr(source, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # the others are closed all the same; the first error stands
                    log.exception("closing a merged source failed")


_ENDED, _FAILED = object(), object()


class SignalRoute:
    """POSIX signals to callbacks on the event loop, through a socket of their own.

    asyncio's add_signal_handler delivers a signal as a byte on the socket that also carries
    one byte per call_soon_threadsafe. When threads wake the loop faster than it drains that
    socket (gRPC's poller thread, the heartbeat lane, executor threads, thousands of agents
    disconnecting at once), the socket is full and the signal's byte is dropped: a coordinator
    sent SIGTERM under such a storm never stopped. Here the signal's byte has a socket that
    carries nothing else, so it always fits and always wakes the loop. Main thread only, as
    signal.signal is; close() puts back what was there before. The wakeup socket is the
    process's: a later add_signal_handler would take it, which ensure() notices and undoes.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, handlers: Mapping[int, Callable[[], object]]) -> None:
        self._loop = loop
        self._handlers = dict(handlers)
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous: dict[int, Any] = {}
        self._previous_fd: int | None = None
        self._closed = False
        try:
            loop.add_reader(self._reader.fileno(), self._drain)
            self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
            for sig in self._handlers:
                self._previous[sig] = signal.signal(sig, _noop)
                signal.siginterrupt(sig, False)  # as asyncio does: other threads' system calls go on
        except BaseException:
            self.close()
            raise

    def _drain(self) -> None:
        try:
            data = self._reader.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            handler = self._handlers.get(signum)
            if handler is None:
                continue
            try:
                handler()
            except Exception:  # one failing callback must not swallow the next signal
                log.exception("handling signal %d failed", signum)

    def ensure(self) -> bool:
        """Take the process's wakeup socket back if something else took it; True if it had to."""
        if self._closed:
            return False
        previous = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        if previous == self._writer.fileno():
            return False
        log.warning(
            "the signal wakeup socket was taken over (fd %d); signals go through ours again", previous
        )
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
        self._loop.remove_reader(self._reader.fileno())
        self._reader.close()
        self._writer.close()


def _noop(signum: int, frame: object) -> None:
    """A Python-level handler, so that the interpreter writes the signal to the wakeup socket."""
