"""gRPC servers on a loop of their own, their handlers on the daemon's main loop.

Why: gRPC's asyncio server needs a few turns of the loop it runs on for every
call (taking it, reading its request, sending its answer, one completion at a
time). On a loop that is busy with other work, turns are long and those steps
are few: with a loop kept busy 10 ms a turn (95 turns a second), one server
answered 21-24 calls/s however many clients called, and four servers on the
same loop no more (bench/busy_loop_calls.py, 3 runs). During bench/hollow.py's 10,000-pod burst the
coordinator's one loop ran the scheduler, the informers and the pushes, and
agents' status reports waited up to 10 s before their handler even started
(their deadline), while the handlers themselves took milliseconds.

Here the servers run on a `LoopThread`: its loop does nothing but gRPC, so
its turns are short. A call is parsed there, then its handler (the call
links and the servicer method) runs on the main loop, where the store, the
informers and every other piece of state live, as one task; the answer comes
back the same way. Same busy loop, same clients: 821-1,232 calls/s with one
server on the thread. Both ways go through a `Mailbox`, which wakes a loop
once for all the callbacks that reach it while it is busy, not once each.

What a handler on the main loop may read of its call is what `CallFacts` took
on the call's own loop: the peer, the transport's authentication properties,
the request metadata and the deadline. gRPC's call objects belong to the loop
they were made on and are never touched from the main loop. A server stream
is pumped from the main loop to the call's loop through a window of
STREAM_WINDOW messages, so a slow reader holds back its stream's producer, not
the main loop; an idle stream holds a future on the call's loop, no task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from atoll import errors, tls

T = TypeVar("T")

# Messages of one server stream waiting on the call's loop for gRPC to send them.
STREAM_WINDOW = 8
STOPPING = "the server is stopping; try again"


class CallFacts:
    """The parts of a call's ServicerContext a handler reads, taken on the call's own loop."""

    __slots__ = ("_auth", "_deadline", "_metadata", "_peer")

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._auth: Mapping[str, Sequence[bytes]] = tls.auth_properties(context)
        self._peer: str = context.peer() or ""
        self._metadata = tuple(context.invocation_metadata() or ())
        remaining = context.time_remaining()
        self._deadline = None if remaining is None else time.monotonic() + remaining

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        return self._auth

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())


class Mailbox:
    """Callbacks handed to `loop` from other threads, run in the order they came, with one
    wakeup for all that arrive before the loop gets to them.

    `call_soon_threadsafe` writes a byte to the loop's wakeup socket for every callback. That
    system call lets go of the GIL, and taking it back waits behind the other threads busy in
    Python, up to the interpreter's switch interval (5 ms). During bench/hollow.py's burst the
    coordinator's main thread spent 10.5 % of its time in those writes, handing answers back to
    the API's loop one by one."""

    __slots__ = ("_lock", "_posted", "_waking", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._posted: list[tuple[Callable[..., object], tuple[Any, ...], contextvars.Context | None]] = []
        self._waking = False  # a drain is on its way to the loop

    def post(self, fn: Callable[..., object], *args: Any, context: contextvars.Context | None = None) -> None:
        """Runs fn(*args) on the loop, in `context` if given, else in the drain's own (one fresh
        context per wakeup, none of the posters'); RuntimeError if the loop is closed."""
        with self._lock:
            if self.loop.is_closed():
                # A drain on its way when the loop closed was thrown away with the loop's queue:
                # what waits here never runs, and every poster from now on is told so.
                self._posted.clear()
                self._waking = False
                raise RuntimeError("Event loop is closed")
            self._posted.append((fn, args, context))
            if self._waking:
                return
            self._waking = True
        self._wake()

    def _wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._drain, context=contextvars.Context())
        except BaseException:
            with self._lock:
                self._waking = False  # the next post finds the loop closed, or wakes it
            raise

    def _drain(self) -> None:
        with self._lock:
            batch, self._posted = self._posted, []
            self._waking = False  # what is posted from now on wakes the loop again
        for i, (fn, args, context) in enumerate(batch):
            try:
                if context is None:
                    fn(*args)
                else:
                    context.run(fn, *args)
            except (SystemExit, KeyboardInterrupt):
                # Raised through the loop, as asyncio does; the callbacks after it run later.
                with self._lock:
                    self._posted[:0] = batch[i + 1 :]
                    rearm = bool(self._posted) and not self._waking
                    self._waking = self._waking or rearm
                if rearm:
                    self._wake()
                raise
            except BaseException as exc:  # as the loop treats a callback's error: reported, the rest run
                self.loop.call_exception_handler({"message": f"exception in {fn!r}", "exception": exc})


class Handoff:
    """Runs handlers on `loop` (the main loop) for servers whose own loop is another thread's."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._main = Mailbox(loop)
        self._back: dict[asyncio.AbstractEventLoop, Mailbox] = {}  # per server loop

    def _mailbox_of(self, loop: asyncio.AbstractEventLoop) -> Mailbox:
        box = self._back.get(loop)
        if box is None:  # once per server loop; setdefault keeps the first if two race
            box = self._back.setdefault(loop, Mailbox(loop))
        return box

    def post(self, fn: Callable[..., object], *args: Any) -> None:
        """Runs fn(*args) on the main loop, after what was handed over before; nothing if that
        loop is closed (the daemon is going away)."""
        with contextlib.suppress(RuntimeError):
            self._main.post(fn, *args)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """`coro`'s result, run on the main loop; cancelling the caller cancels it there."""
        here = asyncio.get_running_loop()
        back = self._mailbox_of(here)
        answer: asyncio.Future[T] = here.create_future()
        task: list[asyncio.Task[T] | None] = [None]

        def settle(cancelled: bool, exc: BaseException | None, result: Any) -> None:  # here
            if answer.done():
                return
            if cancelled:
                answer.cancel()
            elif exc is not None:
                answer.set_exception(exc)
            else:
                answer.set_result(result)

        def finished(done: asyncio.Task[T]) -> None:  # on the main loop
            if done.cancelled():
                outcome: tuple[bool, BaseException | None, Any] = (True, None, None)
            else:
                exc = done.exception()
                outcome = (False, exc, None if exc is not None else done.result())
            with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody waits
                back.post(settle, *outcome)

        def start() -> None:  # on the main loop, in a copy of the caller's context variables
            started = task[0] = self.loop.create_task(coro)
            started.add_done_callback(finished)

        def stop() -> None:  # on the main loop, always after start: one mailbox keeps their order
            if task[0] is not None:  # a task cancelled before its first step never runs its body
                task[0].cancel()

        try:
            self._main.post(start, context=contextvars.copy_context())
        except RuntimeError:  # the main loop is closed: the daemon is going away
            coro.close()
            raise errors.Unavailable(STOPPING) from None
        try:
            return await answer
        except asyncio.CancelledError:  # the caller's, or the task's own: stopping it is harmless
            with contextlib.suppress(RuntimeError):
                self._main.post(stop)
            raise

    async def stream(self, source: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """`source`'s items, iterated on the main loop, yielded here in order; its error is raised
        here after the items before it. Closing this generator cancels the iteration there.

        Thousands of streams sit idle at once (three per agent), so an idle one holds no task on
        this loop: only a future, resolved when the main loop hands something over."""
        here = asyncio.get_running_loop()
        back = self._mailbox_of(here)
        inbox: collections.deque[tuple[bool, Any]] = collections.deque()
        waiter: list[asyncio.Future[None] | None] = [None]
        credits = asyncio.Semaphore(STREAM_WINDOW)  # used on the main loop only

        def deliver(entry: tuple[bool, Any]) -> None:  # here
            inbox.append(entry)
            if waiter[0] is not None and not waiter[0].done():
                waiter[0].set_result(None)

        async def pump() -> None:  # on the main loop
            # Closed here, on its own loop, when the pump ends or is cancelled: the call's links
            # learn how it ended at once (their finish runs in the source's finally).
            async with contextlib.aclosing(source) as items:
                async for item in items:
                    # Waits while the window is full: a slow reader holds back this stream only.
                    await credits.acquire()
                    if gone[0]:  # a source that swallowed the cancel still stops here
                        return
                    back.post(deliver, (True, item))

        # The pump's task, made on the main loop; no concurrent future (a lock and a condition
        # each) per stream.
        task: list[asyncio.Task[None] | None] = [None]
        gone = [False]  # this end was closed first: the pump is not to start, or to stop
        context = contextvars.copy_context()  # the call links set who calls in it

        def finished(done: asyncio.Task[None]) -> None:  # on the main loop
            # Cancelled without this end asking: the main loop is ending its tasks (the daemon
            # stops); the client is told so rather than left waiting for its deadline.
            outcome = errors.Unavailable(STOPPING) if done.cancelled() else done.exception()
            with contextlib.suppress(RuntimeError):  # the call's loop closed: nobody reads
                back.post(deliver, (False, outcome))

        def start() -> None:  # on the main loop
            if gone[0]:
                coro.close()
                return
            started = task[0] = self.loop.create_task(coro, context=context)
            # Runs after every item the pump handed over: the loop runs callbacks in order.
            started.add_done_callback(finished)

        def stop() -> None:  # on the main loop, after start: callbacks posted by one thread keep their order
            gone[0] = True
            if task[0] is not None:
                task[0].cancel()

        coro = pump()
        try:
            self._main.post(start, context=context)
        except RuntimeError:  # the main loop is closed
            coro.close()
            raise errors.Unavailable(STOPPING) from None
        try:
            while True:
                while not inbox:
                    wait = waiter[0] = here.create_future()
                    await wait
                is_item, value = inbox.popleft()
                if not is_item:
                    if value is not None:
                        raise value  # the source's error, or the pump's cancellation
                    return
                self._main.post(credits.release)
                yield value
        finally:
            with contextlib.suppress(RuntimeError):  # a closed main loop ended the pump already
                self._main.post(stop)


class LoopThread:
    """An asyncio loop running in a daemon thread of its own, for gRPC servers (`Handoff`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # What is left (a start cut short, say) ends here, as asyncio.run ends its tasks.
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def run(self, coro: Coroutine[Any, Any, T], seconds: float) -> T:
        """`coro`'s result, run on this thread's loop, within `seconds`."""
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError(f"{self.name}'s loop is not running")
        return await asyncio.wait_for(
            asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop)), seconds
        )

    async def stop(self, seconds: float = 10.0) -> bool:
        """Stops the loop and waits for the thread; False if it did not end within `seconds`."""
        if not self._thread.is_alive():
            if self._thread.ident is None:  # never started
                self.loop.close()
            return True
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, seconds)
        return not self._thread.is_alive()
