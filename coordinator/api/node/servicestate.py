"""What node proxies need: every service and its endpoints, with one generation."""

from __future__ import annotations

import asyncio

from google.protobuf.message import Message

from atoll.v1 import node_api_pb2, workloads_pb2
from coordinator.objects.informer import Informer


class ServiceStateTracker:
    def __init__(self, services: Informer, endpoints: Informer, service_cidr: str = "") -> None:
        self._service_cidr = service_cidr
        self._services = services
        self._endpoints = endpoints
        self.generation = 0
        self._changed = asyncio.Event()
        services.add_handler(self._on_change)
        endpoints.add_handler(self._on_change)

    def _on_change(self, type_: str, obj: Message, old: Message | None) -> None:
        self.generation = max(self.generation + 1, obj.metadata.resource_version)  # type: ignore[attr-defined]
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

    async def wait_change(self, seen_generation: int) -> None:
        if self.generation != seen_generation:
            return
        await self._changed.wait()
