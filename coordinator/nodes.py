"""Node liveness: heartbeats kept in memory, and the controller that acts on silence.

Heartbeats are frequent and cheap, so they are not written to the store each
time (Kubernetes moved them to Lease objects for the same reason): the
coordinator keeps the last one per node in memory, writes node status only
when it changes meaningfully or every `status_interval`, and shows the live
heartbeat time when a client reads a node. A node that stays silent past the
grace period turns Ready=Unknown. After a coordinator restart every node
starts with a full grace period, as the Kubernetes node controller does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.v1 import meta_pb2, node_pb2
from coordinator.informer import Informer
from coordinator.registry import Registry

log = logging.getLogger(__name__)

NODE = kinds.by_name("Node")


class NodeHealth:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._started = clock()
        self.last_heartbeat: dict[str, float] = {}
        self.last_status_write: dict[str, float] = {}

    def beat(self, node: str) -> float:
        now = self._clock()
        self.last_heartbeat[node] = now
        return now

    def silent_for(self, node: str) -> float:
        return self._clock() - self.last_heartbeat.get(node, self._started)

    def forget(self, node: str) -> None:
        self.last_heartbeat.pop(node, None)
        self.last_status_write.pop(node, None)


def ready_condition(node: node_pb2.Node) -> node_pb2.NodeCondition | None:
    return next((c for c in node.status.conditions if c.type == "Ready"), None)


def is_ready(node: node_pb2.Node) -> bool:
    cond = ready_condition(node)
    return cond is not None and cond.status == meta_pb2.CONDITION_STATUS_TRUE


class NodeLifecycle:
    """Marks silent nodes Ready=Unknown after `grace` seconds."""

    def __init__(
        self,
        registry: Registry,
        nodes: Informer,
        health: NodeHealth,
        *,
        grace: float,
        period: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._nodes = nodes
        self._health = health
        self.grace = grace
        self._period = period
        self._clock = clock

    async def check(self) -> None:
        for obj in self._nodes.items():
            assert isinstance(obj, node_pb2.Node)
            name = obj.metadata.name
            cond = ready_condition(obj)
            if cond is not None and cond.status == meta_pb2.CONDITION_STATUS_UNKNOWN:
                continue
            silent = self._health.silent_for(name)
            if silent < self.grace:
                continue
            log.warning("node %s: no heartbeat for %.0fs; marking it NotReady (Unknown)", name, silent)
            now = self._clock()

            def mark(o: Message, silent: float = silent, now: float = now) -> bool:
                assert isinstance(o, node_pb2.Node)
                c = ready_condition(o)
                if c is None:
                    c = o.status.conditions.add(type="Ready")
                if c.status == meta_pb2.CONDITION_STATUS_UNKNOWN:
                    return False
                c.status = meta_pb2.CONDITION_STATUS_UNKNOWN
                c.reason = "NodeStatusUnknown"
                c.message = f"agent stopped posting node status (silent for {silent:.0f}s)"
                c.last_transition_time.FromNanoseconds(int(now * 1e9))
                return True

            try:
                await self._registry.guaranteed_update(NODE, "", name, mark)
            except errors.AtollError as exc:
                log.warning("cannot mark node %s NotReady: %s", name, exc)

    async def run(self, stop: asyncio.Event) -> None:
        await self._nodes.synced.wait()
        while not stop.is_set():
            await self.check()
            try:
                await asyncio.wait_for(stop.wait(), self._period)
            except TimeoutError:
                pass
