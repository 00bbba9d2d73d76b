"""atoll.sdnotify: what systemd is told, when the watchdog is petted, and when it is not."""

from __future__ import annotations

import asyncio

from atoll.sdnotify import Liveness, RecordingNotifier, pet_watchdog, watchdog_interval


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}, 42) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "42"}, 42) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "7"}, 42) is None  # a parent's
    assert watchdog_interval({}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 42) is None


def test_liveness_names_a_loop_past_its_bound_and_a_task_that_ended() -> None:
    clock = Clock()
    live = Liveness(clock)
    tick = live.watch("relist", 10.0)
    assert live.problems() == []
    clock.now += 9
    tick()
    clock.now += 9
    assert live.problems() == []  # 9 s since the last turn
    clock.now += 2
    assert live.problems() == ["relist has not turned for 11s (bound 10s)"]
    tick()
    assert live.problems() == []


async def test_a_dead_task_is_a_problem() -> None:
    async def dies() -> None:
        return None

    task = asyncio.create_task(dies())
    await task
    live = Liveness()
    live.watch("link", float("inf"), task)
    assert live.problems() == ["link has stopped"]


async def test_the_watchdog_is_petted_only_while_healthy() -> None:
    notifier = RecordingNotifier()
    problems: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(pet_watchdog(notifier, 0.01, lambda: list(problems), stop))
    await asyncio.sleep(0.05)
    healthy_pets = len(notifier.sent("WATCHDOG=1"))
    assert healthy_pets >= 2
    problems.append("relist has not turned")
    await asyncio.sleep(0.02)  # one turn may have been under way
    held = len(notifier.sent("WATCHDOG=1"))
    await asyncio.sleep(0.05)
    assert len(notifier.sent("WATCHDOG=1")) == held  # no pet while a loop is stuck
    problems.clear()
    await asyncio.sleep(0.05)
    assert len(notifier.sent("WATCHDOG=1")) > held
    stop.set()
    await asyncio.wait_for(task, 1)
