"""atoll.handoff: work handed from one loop to another's thread, and back."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest

from atoll import errors, tls
from atoll.handoff import STREAM_WINDOW, CallFacts, Handoff, LoopThread, Mailbox

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="")


@pytest.fixture
def other() -> Iterator[LoopThread]:
    thread = LoopThread("test-other")
    thread.start()
    yield thread
    thread.loop.call_soon_threadsafe(thread.loop.stop)


async def test_run_returns_the_result_from_the_other_loop_with_the_callers_context(other: LoopThread) -> None:
    WHO.set("caller")

    async def work() -> tuple[int, str, asyncio.AbstractEventLoop]:
        return threading.get_ident(), WHO.get(), asyncio.get_running_loop()

    ident, who, loop = await Handoff(other.loop).run(work())
    assert ident != threading.get_ident()
    assert loop is other.loop
    assert who == "caller"  # links set the caller on the call's loop; handlers read it on theirs


async def test_run_raises_the_handlers_error(other: LoopThread) -> None:
    async def work() -> None:
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        await Handoff(other.loop).run(work())


async def test_cancelling_the_caller_cancels_the_work_there(other: LoopThread) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(Handoff(other.loop).run(work()))
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cancelled.wait, 5)


async def test_a_stream_yields_in_order_then_raises_the_sources_error(other: LoopThread) -> None:
    loops: set[asyncio.AbstractEventLoop] = set()

    async def source() -> AsyncGenerator[int, None]:
        for i in range(20):
            loops.add(asyncio.get_running_loop())
            yield i
        raise LookupError("source ended badly")

    got = []
    with pytest.raises(LookupError, match="ended badly"):
        async for item in Handoff(other.loop).stream(source()):
            got.append(item)
    assert got == list(range(20))
    assert loops == {other.loop}


async def test_a_stream_that_ends_cleanly_ends_here(other: LoopThread) -> None:
    async def source() -> AsyncGenerator[str, None]:
        yield "a"
        yield "b"

    assert [item async for item in Handoff(other.loop).stream(source())] == ["a", "b"]


async def test_a_slow_reader_holds_the_producer_back(other: LoopThread) -> None:
    produced = 0

    async def source() -> AsyncGenerator[int, None]:
        nonlocal produced
        for i in range(1000):
            produced += 1
            yield i

    stream = Handoff(other.loop).stream(source())
    assert await anext(stream) == 0
    await asyncio.sleep(0.2)  # the reader takes nothing more meanwhile
    assert produced <= STREAM_WINDOW + 2  # the window, the one taken, the one waiting to go in
    await stream.aclose()


async def test_closing_a_stream_cancels_its_source_there(other: LoopThread) -> None:
    finished = threading.Event()

    async def source() -> AsyncGenerator[int, None]:
        try:
            yield 1
            await asyncio.sleep(60)
            yield 2
        finally:
            finished.set()

    stream = Handoff(other.loop).stream(source())
    assert await anext(stream) == 1
    await stream.aclose()  # as gRPC closes a stream whose client went away
    assert await asyncio.to_thread(finished.wait, 5)


class _Context:
    def auth_context(self) -> dict[str, list[bytes]]:
        return {"transport_security_type": [b"ssl"]}

    def peer(self) -> str:
        return "ipv4:198.51.100.7:40000"

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", "Bearer x.y")]

    def time_remaining(self) -> float | None:
        return 10.0


def test_call_facts_keep_what_handlers_read() -> None:
    facts = CallFacts(_Context())
    assert facts.peer() == "ipv4:198.51.100.7:40000"
    assert facts.auth_context() == {"transport_security_type": [b"ssl"]}
    assert facts.invocation_metadata() == (("authorization", "Bearer x.y"),)
    remaining = facts.time_remaining()
    assert remaining is not None and 9.0 < remaining <= 10.0


def test_call_facts_without_a_deadline() -> None:
    context: Any = _Context()
    context.time_remaining = lambda: None
    assert CallFacts(context).time_remaining() is None


async def test_a_stopped_loop_thread_refuses_work_without_leaking_it() -> None:
    thread = LoopThread("test-stopped")
    thread.start()
    assert await thread.run(asyncio.sleep(0, result="ran"), 5) == "ran"
    assert await thread.stop()

    async def work() -> None:
        raise AssertionError("must not run")

    coro = work()
    with pytest.raises(RuntimeError, match="not running"):
        await thread.run(coro, 5)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited" warning


async def test_a_stream_whose_pump_the_main_loop_cancels_ends_unavailable(other: LoopThread) -> None:
    async def source() -> AsyncGenerator[int, None]:
        yield 1
        await asyncio.sleep(60)
        yield 2

    def cancel_all() -> None:  # as the main loop's shutdown ends every task
        for task in asyncio.all_tasks(other.loop):
            task.cancel()

    stream = Handoff(other.loop).stream(source())
    assert await anext(stream) == 1
    other.loop.call_soon_threadsafe(cancel_all)
    with pytest.raises(errors.Unavailable, match="stopping"):
        await anext(stream)


async def test_a_closed_main_loop_refuses_work_as_unavailable() -> None:
    thread = LoopThread("test-closed")
    thread.start()
    assert await thread.stop()

    async def work() -> None:
        raise AssertionError("must not run")

    coro = work()
    with pytest.raises(errors.Unavailable):
        await Handoff(thread.loop).run(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_call_facts_keep_only_the_auth_properties_peer_of_reads() -> None:
    # A held stream's facts live as long as its agent: not every name of the certificate.
    context: Any = _Context()
    context.auth_context = lambda: {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"node-1"],
        "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----"],
        "x509_subject_alternative_name": [b"node-1", b"198.51.100.7"],
        "ssl_session_reused": [b"false"],
        "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
    }
    facts = CallFacts(context)
    assert set(facts.auth_context()) == set(tls.AUTH_PROPERTIES)
    assert tls.peer_of(facts) == tls.peer_of(context)  # type: ignore[arg-type]


async def test_a_mailbox_wakes_its_loop_once_for_what_arrives_while_it_is_busy(other: LoopThread) -> None:
    busy = threading.Event()
    other.loop.call_soon_threadsafe(busy.wait, 5)  # the loop is running something long
    wakeups = []
    real = other.loop.call_soon_threadsafe
    other.loop.call_soon_threadsafe = lambda *a, **k: wakeups.append(a) or real(*a, **k)  # type: ignore[method-assign]
    try:
        box, seen, done = Mailbox(other.loop), [], threading.Event()
        for i in range(100):
            box.post(seen.append, i)
        box.post(done.set)
        busy.set()
        assert await asyncio.to_thread(done.wait, 5)
        assert seen == list(range(100))  # in the order they were posted
        assert len(wakeups) == 1
        again = threading.Event()
        box.post(again.set)  # after a drain, the next post wakes the loop again
        assert await asyncio.to_thread(again.wait, 5)
        assert len(wakeups) == 2
    finally:
        del other.loop.call_soon_threadsafe


async def test_a_mailbox_callback_that_fails_is_reported_and_the_rest_run(other: LoopThread) -> None:
    reported: list[BaseException] = []
    other.loop.set_exception_handler(lambda loop, ctx: reported.append(ctx["exception"]))
    box, done = Mailbox(other.loop), threading.Event()

    def fail() -> None:
        raise KeyError("boom")

    box.post(fail)
    box.post(done.set)
    assert await asyncio.to_thread(done.wait, 5)
    assert [type(e) for e in reported] == [KeyError]


async def test_a_mailbox_runs_a_callback_in_the_context_it_was_given(other: LoopThread) -> None:
    WHO.set("poster")
    box, seen, done = Mailbox(other.loop), [], threading.Event()
    box.post(lambda: seen.append(WHO.get()), context=contextvars.copy_context())
    box.post(lambda: seen.append(WHO.get()))  # without one: none of the poster's
    box.post(done.set)
    assert await asyncio.to_thread(done.wait, 5)
    assert seen == ["poster", ""]


async def test_a_mailbox_of_a_closed_loop_refuses() -> None:
    thread = LoopThread("test-mailbox-closed")
    thread.start()
    assert await thread.stop()
    box = Mailbox(thread.loop)
    for _ in range(2):  # and keeps refusing: a refused post leaves no wakeup pending
        with pytest.raises(RuntimeError):
            box.post(print)


def test_a_mailbox_whose_wakeup_the_closing_loop_dropped_refuses_from_then_on() -> None:
    loop = asyncio.new_event_loop()
    box = Mailbox(loop)
    box.post(print)  # accepted: the loop is not closed yet, only not running
    loop.close()  # and its queue, with the wakeup, is gone
    for _ in range(2):
        with pytest.raises(RuntimeError):
            box.post(print)


def test_a_mailbox_callback_raising_system_exit_leaves_the_rest_to_run() -> None:
    loop = asyncio.new_event_loop()
    try:
        box, seen = Mailbox(loop), []

        def leave() -> None:
            raise SystemExit(3)

        box.post(leave)
        box.post(seen.append, "after")
        with pytest.raises(SystemExit):  # through the loop, as asyncio raises it
            loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == ["after"]
    finally:
        loop.close()


async def test_a_caller_cancelled_before_the_work_started_never_runs_it(other: LoopThread) -> None:
    busy, ran = threading.Event(), threading.Event()
    other.loop.call_soon_threadsafe(busy.wait, 5)  # the main loop has not taken the work yet

    async def work() -> None:
        ran.set()

    task = asyncio.create_task(Handoff(other.loop).run(work()))
    await asyncio.sleep(0)  # the caller posts the work, which the busy loop has not taken
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    busy.set()
    assert await other.run(asyncio.sleep(0, result=True), 5)  # queued after both: the loop went past them
    assert not ran.is_set()
