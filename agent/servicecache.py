"""The agent's copy of every service and its endpoints, kept from the coordinator's full states
and deltas (coordinator/api/node/servicestate.py), handed to the proxy as one ServiceState."""

from __future__ import annotations

from atoll import errors
from atoll.v1 import node_api_pb2, workloads_pb2


class StreamGap(errors.Unavailable):
    """A delta that does not start where this copy is: the stream is reopened for a full state."""


class ServiceView:
    def __init__(self) -> None:
        self.generation = -1  # nothing received yet
        self.service_cidr = ""
        # Keyed by (namespace, name): sorted, the order the coordinator's full states have.
        self._services: dict[tuple[str, str], workloads_pb2.Service] = {}
        self._endpoints: dict[tuple[str, str], workloads_pb2.Endpoints] = {}

    def apply(self, response: node_api_pb2.WatchServicesResponse) -> None:
        """Take a full state or a delta (`state()` is the whole state after it)."""
        if response.HasField("delta"):
            self._apply_delta(response.delta)
        else:
            state = response.state
            self.generation = state.generation
            self.service_cidr = state.service_cidr
            self._services = {_key(s): s for s in state.services}
            self._endpoints = {_key(e): e for e in state.endpoints}

    def _apply_delta(self, delta: node_api_pb2.ServiceDelta) -> None:
        if delta.base_generation != self.generation:
            raise StreamGap(
                f"service delta from generation {delta.base_generation}, but this copy is at {self.generation}"
            )
        for key in delta.deleted_services:
            self._services.pop(_split(key), None)
        for key in delta.deleted_endpoints:
            self._endpoints.pop(_split(key), None)
        for service in delta.services:
            self._services[_key(service)] = service
        for endpoints in delta.endpoints:
            self._endpoints[_key(endpoints)] = endpoints
        self.generation = delta.generation

    def state(self) -> node_api_pb2.ServiceState:
        return node_api_pb2.ServiceState(
            generation=self.generation,
            services=[self._services[k] for k in sorted(self._services)],
            endpoints=[self._endpoints[k] for k in sorted(self._endpoints)],
            service_cidr=self.service_cidr,
        )


def _key(obj: workloads_pb2.Service | workloads_pb2.Endpoints) -> tuple[str, str]:
    return obj.metadata.namespace, obj.metadata.name


def _split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name
