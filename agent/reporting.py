"""What the agent reports to the coordinator besides heartbeats: pod statuses and events, in batches.

Statuses go as they change, gathered for 50 ms, as messages on a stream (agent.statusstream); events wait up to EVENT_GATHER for others, or go
with the next status report when the coordinator takes them there (one call instead of two
during a burst of pod starts). Neither ever blocks the pod work that produced it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from agent.statusstream import IDLE_CLOSE, StatusSender, StreamSender
from atoll import errors, rpc
from atoll.aio import wait_any
from atoll.backoff import Backoff
from atoll.v1 import node_api_pb2, node_api_pb2_grpc, pod_pb2, workloads_pb2

log = logging.getLogger(__name__)


class StubSource(Protocol):
    """Where the current stub lives: the agent re-creates its channel when it renews its
    certificate, so every call takes `stub` afresh (agent.bootstrap.CoordinatorConnection)."""

    stub: node_api_pb2_grpc.NodeServiceStub


class StatusReporter:
    """Collects pod statuses and sends the changed ones to the coordinator in batches."""

    def __init__(self, sender: StatusSender | None = None) -> None:
        self.sender: StatusSender = sender if sender is not None else StreamSender()
        self._sent: dict[str, pod_pb2.PodStatus] = {}
        self._pending: dict[str, node_api_pb2.PodStatusReport] = {}
        self._latest: dict[str, node_api_pb2.PodStatusReport] = {}
        self._wakeup = asyncio.Event()
        self._retry = asyncio.Event()  # the link is back (maybe elsewhere): cut a backoff short
        # Events that go along with each batch, when the coordinator takes them there (one call
        # instead of two per burst of pod starts); None: events go on their own.
        self.carry: EventReporter | None = None
        self._in_flight = False

    @property
    def busy(self) -> bool:
        """A report waits or is on its way: its call (or the next) will carry waiting events."""
        return self._in_flight or bool(self._pending)

    def update(self, pod: pod_pb2.Pod, status: pod_pb2.PodStatus) -> None:
        uid = pod.metadata.uid
        report = node_api_pb2.PodStatusReport(
            namespace=pod.metadata.namespace, name=pod.metadata.name, uid=uid, status=status
        )
        self._latest[uid] = report
        if self._sent.get(uid) != status:
            self._pending[uid] = report
            self._wakeup.set()

    def forget(self, uid: str) -> None:
        self._sent.pop(uid, None)
        self._pending.pop(uid, None)
        self._latest.pop(uid, None)

    def resend_all(self) -> None:
        self._sent.clear()
        self._pending.update(self._latest)
        if self._pending:
            self._wakeup.set()
        self._retry.set()

    async def run(self, source: StubSource, node_name: str, stop: asyncio.Event) -> None:
        try:
            await self._run(source, node_name, stop)
        finally:
            self.sender.close()

    async def _run(self, source: StubSource, node_name: str, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            if not self._pending:
                self._wakeup.clear()
                # A stream left open for the next burst is closed once the burst is over.
                if not await wait_any(stop, IDLE_CLOSE, self._wakeup) and not self._wakeup.is_set():
                    self.sender.close()
                    await wait_any(stop, None, self._wakeup)
                continue
            # Let a burst of changes gather into one call.
            await asyncio.sleep(0.05)
            batch = dict(self._pending)
            self._pending.clear()
            carry = self.carry
            events = carry.take() if carry is not None else []
            self._in_flight = True
            try:
                await self.sender.send(
                    source.stub,
                    node_api_pb2.ReportPodStatusRequest(
                        node_name=node_name, reports=list(batch.values()), events=events
                    ),
                    seconds=10,
                )
            except errors.AtollError as exc:
                self._in_flight = False
                for uid, report in batch.items():
                    self._pending.setdefault(uid, report)
                if carry is not None:
                    carry.give_back(events)
                delay = backoff.next()
                log.warning("reporting %d pod statuses failed: %s; retrying in %.1fs", len(batch), exc, delay)
                self._retry.clear()
                await wait_any(stop, delay, self._retry)
                continue
            self._in_flight = False
            backoff.reset()
            for uid, report in batch.items():
                if uid in self._latest:
                    self._sent[uid] = report.status


# Seconds an event waits for others to go in the same call. Events are not on any pod's path to
# Running; during a scheduling burst, 0.2 s made one ReportEvents call per pod start on most nodes.
EVENT_GATHER = 1.0
# Where status reports carry events, events wait while a report is waiting or on its way (under
# load a report's call takes seconds, and a call of their own beside it doubled the calls), at
# most this long in all.
EVENT_CARRY_WAIT = 10.0


class EventReporter:
    """An EventRecorder that ships pod events to the coordinator in batches; never blocks the caller."""

    def __init__(self, limit: int = 1000) -> None:
        self._pending: list[workloads_pb2.Event] = []
        self._limit = limit
        self._wakeup = asyncio.Event()
        self._retry = asyncio.Event()
        self.dropped = 0
        self.carrier: StatusReporter | None = None  # whose reports carry these events too

    def retry_now(self) -> None:
        """The link is back: send what waits without finishing a backoff."""
        self._retry.set()

    def take(self) -> list[workloads_pb2.Event]:
        """Every waiting event, for a call that carries them (StatusReporter)."""
        batch, self._pending = self._pending, []
        return batch

    def give_back(self, batch: list[workloads_pb2.Event]) -> None:
        """Events whose call failed: first in line again (the oldest dropped past the limit)."""
        if batch:
            self._pending = (batch + self._pending)[-self._limit :]
            self._wakeup.set()

    def record(self, pod: pod_pb2.Pod, type_: str, reason: str, message: str) -> None:
        log.log(
            logging.WARNING if type_ == "Warning" else logging.INFO,
            "pod %s/%s: %s: %s",
            pod.metadata.namespace,
            pod.metadata.name,
            reason,
            message,
        )
        ref = workloads_pb2.ObjectReference(
            kind="Pod", namespace=pod.metadata.namespace, name=pod.metadata.name, uid=pod.metadata.uid
        )
        self.record_ref(ref, type_, reason, message)

    def record_ref(self, ref: workloads_pb2.ObjectReference, type_: str, reason: str, message: str) -> None:
        """An event about any object the coordinator lets a node speak of (its pods, itself)."""
        if len(self._pending) >= self._limit:
            self._pending.pop(0)
            self.dropped += 1
        self._pending.append(
            workloads_pb2.Event(involved_object=ref, type=type_, reason=reason, message=message)
        )
        self._wakeup.set()

    async def run(self, source: StubSource, node_name: str, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            if not self._pending:
                self._wakeup.clear()
                await wait_any(stop, None, self._wakeup)  # at rest until an event: no polling
                continue
            await asyncio.sleep(EVENT_GATHER)
            waited = EVENT_GATHER
            while (
                self._pending and self.carrier is not None and self.carrier.busy and waited < EVENT_CARRY_WAIT
            ):
                await asyncio.sleep(EVENT_GATHER)
                waited += EVENT_GATHER
            batch, self._pending = self._pending, []
            if not batch:
                continue  # a status report took them meanwhile
            try:
                await rpc.unary(
                    source.stub.ReportEvents(
                        node_api_pb2.ReportEventsRequest(node_name=node_name, events=batch), timeout=10
                    )
                )
                backoff.reset()
            except errors.AtollError as exc:
                self._pending = (batch + self._pending)[-self._limit :]
                self._retry.clear()
                await wait_any(stop, backoff.next(), self._retry)
                log.debug("reporting events failed: %s", exc)
