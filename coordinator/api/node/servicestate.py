"""What node proxies need: every service and its endpoints, with one generation.

Every node watches the same state, so the work is done once per generation,
not once per node: the full state and the delta from the generation the
streams last got are each built and serialised once, and the same bytes go to
every stream (`callchain.Encoded`). Agents that accept deltas get, after a first
full state, only what changed (kube-proxy's incremental updates): one
Endpoints change costs the size of that Endpoints times the nodes, not every
service times the nodes. A stream whose last generation is older than the
change log holds gets a full state again.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

from google.protobuf.message import Message

from atoll import callchain
from atoll.v1 import node_api_pb2, workloads_pb2
from coordinator.api.node.pushes import SharedPushes
from coordinator.objects.informer import Informer

CHANGE_LOG = 4096  # changes kept for deltas; a stream further behind gets a full state


@dataclass(frozen=True)
class _Change:
    generation: int
    kind: str  # "service" or "endpoints"
    key: str  # namespace/name
    obj: Message | None  # None: deleted


def _key(obj: Message) -> str:
    meta = obj.metadata  # type: ignore[attr-defined]
    return f"{meta.namespace}/{meta.name}"


class ServiceStateTracker:
    def __init__(
        self, services: Informer, endpoints: Informer, service_cidr: str = "", *, change_log: int = CHANGE_LOG
    ) -> None:
        self._service_cidr = service_cidr
        self._services = services
        self._endpoints = endpoints
        self.generation = 0
        self._changed = asyncio.Event()
        self._log: collections.deque[_Change] = collections.deque()
        self._log_size = change_log
        self._floor = 0  # deltas can start at any generation >= this
        self._pushes = SharedPushes(self._full_response, self._delta_response)
        services.add_handler(self._on_service)
        endpoints.add_handler(self._on_endpoints)

    def _on_service(self, type_: str, obj: Message, old: Message | None) -> None:
        self._record("service", type_, obj)

    def _on_endpoints(self, type_: str, obj: Message, old: Message | None) -> None:
        self._record("endpoints", type_, obj)

    def _record(self, kind: str, type_: str, obj: Message) -> None:
        self.generation = max(self.generation + 1, obj.metadata.resource_version)  # type: ignore[attr-defined]
        self._log.append(_Change(self.generation, kind, _key(obj), None if type_ == "DELETED" else obj))
        while len(self._log) > self._log_size:
            self._floor = self._log.popleft().generation
        self._pushes.changed()
        self._changed.set()
        self._changed = asyncio.Event()

    def state(self) -> node_api_pb2.ServiceState:
        services = [s for s in self._services.items() if isinstance(s, workloads_pb2.Service)]
        endpoints = [e for e in self._endpoints.items() if isinstance(e, workloads_pb2.Endpoints)]

        services.sort(key=lambda s: (s.metadata.namespace, s.metadata.name))
        endpoints.sort(key=lambda e: (e.metadata.namespace, e.metadata.name))
        return node_api_pb2.ServiceState(
            generation=self.generation,
            services=services,
            endpoints=endpoints,
            service_cidr=self._service_cidr,
        )

    def delta(self, base: int) -> node_api_pb2.ServiceDelta | None:
        """The changes from `base` to now; None when the log no longer reaches back to `base`."""
        if base < self._floor or base > self.generation:
            return None
        latest: dict[tuple[str, str], Message | None] = {}
        for change in reversed(self._log):
            if change.generation <= base:
                break
            latest.setdefault((change.kind, change.key), change.obj)
        delta = node_api_pb2.ServiceDelta(base_generation=base, generation=self.generation)
        for (kind, key), obj in sorted(latest.items(), key=lambda item: item[0]):
            if obj is None:
                (delta.deleted_services if kind == "service" else delta.deleted_endpoints).append(key)
            elif isinstance(obj, workloads_pb2.Service):
                delta.services.append(obj)
            elif isinstance(obj, workloads_pb2.Endpoints):
                delta.endpoints.append(obj)
        return delta

    @property
    def encodings(self) -> int:
        """How many payloads were serialised (tests read it)."""
        return self._pushes.encodings

    def _full_response(self) -> bytes:
        return node_api_pb2.WatchServicesResponse(state=self.state()).SerializeToString()

    def _delta_response(self, base: int) -> bytes | None:
        delta = self.delta(base)
        return None if delta is None else node_api_pb2.WatchServicesResponse(delta=delta).SerializeToString()

    def encoded(self, sent: int, accept_deltas: bool) -> tuple[int, callchain.Encoded]:
        """The next WatchServicesResponse for a stream that last got `sent` (-1: nothing yet),
        serialised once per generation and shared by every stream at the same point."""
        return self._pushes.encoded(self.generation, sent, accept_deltas)

    async def wait_change(self, seen_generation: int) -> None:
        if self.generation != seen_generation:
            return
        await self._changed.wait()
