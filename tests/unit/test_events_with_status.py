"""Events ride with pod status reports when the coordinator takes them there: one call, not two."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent import reporting
from agent.reporting import EventReporter, StatusReporter
from agent.statusstream import UnarySender
from atoll import errors
from atoll.v1 import node_api_pb2, pod_pb2


class RecordingStub:
    """A recording stand-in for the NodeService stub: keeps each request; fails while told to."""

    def __init__(self) -> None:
        self.status_calls: list[node_api_pb2.ReportPodStatusRequest] = []
        self.event_calls: list[node_api_pb2.ReportEventsRequest] = []
        self.fail = False
        self.called = asyncio.Event()
        self.hold: asyncio.Event | None = None  # status calls wait for it while set

    async def _answer(self, answer: Any, held: bool = False) -> Any:
        self.called.set()
        if held and self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise errors.Unavailable("coordinator away")
        return answer

    def ReportPodStatus(self, request: node_api_pb2.ReportPodStatusRequest, timeout: float) -> Any:
        copy = node_api_pb2.ReportPodStatusRequest()
        copy.CopyFrom(request)
        self.status_calls.append(copy)
        return self._answer(node_api_pb2.ReportPodStatusResponse(), held=True)

    def ReportEvents(self, request: node_api_pb2.ReportEventsRequest, timeout: float) -> Any:
        self.event_calls.append(request)
        return self._answer(node_api_pb2.ReportEventsResponse())


class Source:
    def __init__(self) -> None:
        self.stub: Any = RecordingStub()


def a_pod(name: str) -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = name, "default", f"uid-{name}"
    return pod


async def one_status_call(reporter: StatusReporter, source: Source, pod: pod_pb2.Pod, phase: int) -> None:
    stub: RecordingStub = source.stub
    stub.called.clear()
    reporter.update(pod, pod_pb2.PodStatus(phase=phase))  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(reporter.run(source, "n1", stop))
    await asyncio.wait_for(stub.called.wait(), 5)
    await asyncio.sleep(0)  # the call's outcome handled
    stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_waiting_events_go_with_the_next_status_report() -> None:
    source, events, reporter = Source(), EventReporter(), StatusReporter(UnarySender())
    reporter.carry = events
    pod = a_pod("web")
    events.record(pod, "Normal", "Started", "started container app")
    await one_status_call(reporter, source, pod, pod_pb2.POD_PHASE_RUNNING)
    (call,) = source.stub.status_calls
    assert [e.reason for e in call.events] == ["Started"]
    assert events.take() == []  # nothing left for a call of its own


async def test_events_of_a_failed_report_wait_for_the_next_call() -> None:
    source, events, reporter = Source(), EventReporter(), StatusReporter(UnarySender())
    reporter.carry = events
    pod = a_pod("web")
    events.record(pod, "Normal", "Pulled", "image present")
    source.stub.fail = True
    await one_status_call(reporter, source, pod, pod_pb2.POD_PHASE_PENDING)
    events.record(pod, "Normal", "Started", "started container app")
    assert [e.reason for e in events.take()] == ["Pulled", "Started"]  # given back, first in line


async def test_without_the_coordinators_word_events_go_on_their_own() -> None:
    source, events, reporter = Source(), EventReporter(), StatusReporter(UnarySender())  # carry: None
    pod = a_pod("web")
    events.record(pod, "Normal", "Started", "started container app")
    await one_status_call(reporter, source, pod, pod_pb2.POD_PHASE_RUNNING)
    (call,) = source.stub.status_calls
    assert list(call.events) == []
    assert [e.reason for e in events.take()] == ["Started"]


async def test_events_wait_while_a_status_report_is_on_its_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load a report's call takes seconds; events then wait for the next report rather than
    take a call of their own beside it, and go on their own once no report is coming."""
    monkeypatch.setattr(reporting, "EVENT_GATHER", 0.01)
    source, events, reporter = Source(), EventReporter(), StatusReporter(UnarySender())
    reporter.carry, events.carrier = events, reporter
    stub: RecordingStub = source.stub
    stub.hold = asyncio.Event()
    pod = a_pod("web")
    reporter.update(pod, pod_pb2.PodStatus(phase=pod_pb2.POD_PHASE_RUNNING))
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(reporter.run(source, "n1", stop)),
        asyncio.create_task(events.run(source, "n1", stop)),
    ]
    try:
        await asyncio.wait_for(stub.called.wait(), 5)  # the report is on its way, held
        events.record(pod, "Normal", "Started", "started container app")
        await asyncio.sleep(0.2)  # twenty gathers
        assert stub.event_calls == []
        stub.hold.set()  # the report answered; no other is coming: the event goes on its own
        for _ in range(500):
            if stub.event_calls:
                break
            await asyncio.sleep(0.01)
        assert [e.reason for e in stub.event_calls[0].events] == ["Started"]
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
