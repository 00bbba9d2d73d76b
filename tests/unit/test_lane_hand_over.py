"""The heartbeat lane hands status writes to the main loop: the newest wins, a failure reaches the
agent on the node's next due heartbeat, and a stopping coordinator loses nothing but the writes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from atoll import errors
from atoll.v1 import node_api_pb2
from coordinator.api.node.lane import LaneHeartbeats


class FakeNodeApi:
    """What LaneHeartbeats asks of NodeServicer; every status is due for a write."""

    def __init__(self) -> None:
        self.written: list[tuple[int, float]] = []
        self.forwarded: list[int] = []
        self.fail: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.clock = 100.0

    def heartbeat_from_memory(
        self, request: node_api_pb2.HeartbeatRequest
    ) -> tuple[node_api_pb2.HeartbeatResponse, float]:
        self.clock += 1
        return node_api_pb2.HeartbeatResponse(assignment_generation=1), self.clock

    async def write_handed_status(self, request: node_api_pb2.HeartbeatRequest, received: float) -> None:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.written.append((request.status.capacity.cpu_millis, received))

    async def Heartbeat(
        self, request: node_api_pb2.HeartbeatRequest, context: Any
    ) -> node_api_pb2.HeartbeatResponse:
        self.forwarded.append(request.status.capacity.cpu_millis)
        if self.fail is not None:
            raise self.fail
        return node_api_pb2.HeartbeatResponse(assignment_generation=2)


def beat(cpu: int) -> node_api_pb2.HeartbeatRequest:
    request = node_api_pb2.HeartbeatRequest(node_name="n1")
    request.status.capacity.cpu_millis = cpu
    return request


class LaneThread:
    """A second loop on a thread, as the lane's: calls run there and are awaited from the main loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def call(self, lane: LaneHeartbeats, request: node_api_pb2.HeartbeatRequest) -> Any:
        coro = lane.Heartbeat(request, None)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def lane_thread() -> Any:
    thread = LaneThread()
    yield thread
    thread.close()


async def test_answers_at_once_and_the_newest_waiting_status_is_written(lane_thread: LaneThread) -> None:
    api = FakeNodeApi()
    lane = LaneHeartbeats(api, asyncio.get_running_loop())  # type: ignore[arg-type]
    api.gate.clear()  # the first write is under way and stalls, as behind a burst
    for cpu in (1, 2, 3, 4):
        answer = await lane_thread.call(lane, beat(cpu))
        assert answer.assignment_generation == 1  # from memory, none waited
    for _ in range(50):
        await asyncio.sleep(0)
    api.gate.set()
    for _ in range(100):
        if len(api.written) == 2 and not lane._writing:
            break
        await asyncio.sleep(0.01)
    # The first, already under way; then only the newest of those that waited meanwhile.
    assert [cpu for cpu, _ in api.written] == [1, 4]
    assert api.written[1][1] == 104.0  # written with the time the lane heard it
    assert lane.handed_over == 2 and lane.hand_overs_replaced == 2 and not api.forwarded


async def test_after_a_failed_write_the_next_due_heartbeat_carries_the_error(lane_thread: LaneThread) -> None:
    api = FakeNodeApi()
    lane = LaneHeartbeats(api, asyncio.get_running_loop())  # type: ignore[arg-type]
    api.fail = errors.Unavailable("the store cannot write")
    await lane_thread.call(lane, beat(1))  # answered; its write fails on the main loop
    for _ in range(100):
        if lane.hand_overs_failed:
            break
        await asyncio.sleep(0.01)
    assert lane.hand_overs_failed == 1
    with pytest.raises(errors.Unavailable):
        await lane_thread.call(lane, beat(2))  # forwarded and awaited: the agent hears of it
    api.fail = None
    answer = await lane_thread.call(lane, beat(3))  # forwarded once more, and it worked
    assert answer.assignment_generation == 2 and api.forwarded == [2, 3]
    answer = await lane_thread.call(lane, beat(4))  # from memory again
    assert answer.assignment_generation == 1


async def test_a_closed_main_loop_still_gets_the_answer(lane_thread: LaneThread) -> None:
    api = FakeNodeApi()
    closed = asyncio.new_event_loop()
    closed.close()
    lane = LaneHeartbeats(api, closed)  # type: ignore[arg-type]
    answer = await lane_thread.call(lane, beat(1))
    assert answer.assignment_generation == 1 and not lane._writing and not lane._waiting


async def test_stop_cancels_the_writes_under_way(lane_thread: LaneThread) -> None:
    api = FakeNodeApi()
    lane = LaneHeartbeats(api, asyncio.get_running_loop())  # type: ignore[arg-type]
    api.gate.clear()
    await lane_thread.call(lane, beat(1))
    for _ in range(50):
        await asyncio.sleep(0)
    await asyncio.wait_for(lane.stop(), 5)
    assert not api.written and not lane._writes
