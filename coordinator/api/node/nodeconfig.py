"""What every node needs besides its pods: the overlay, the registry settings, the SR-IOV networks.

Fed by informers on Network, Subnet, Registries and SriovNetwork; every change bumps one
generation and wakes the WatchNodeConfig streams, which send the whole config
again (level-triggered, like assignments). The config holds every node's subnet lease,
so it is built and serialised once per generation and the same bytes go to every stream:
built per stream, 3,000 nodes joining made the coordinator build 3,000 leases for each of
3,000 streams on every join.
"""

from __future__ import annotations

import asyncio

from google.protobuf.message import Message

from atoll import rpc, validation
from atoll.v1 import network_pb2, node_api_pb2, sriov_pb2
from coordinator.objects.informer import Informer

DEFAULT_NAME = "default"


class NodeConfigTracker:
    def __init__(
        self,
        networks: Informer,
        subnets: Informer,
        registries: Informer,
        sriov_networks: Informer | None = None,
    ) -> None:
        self._networks = networks
        self._subnets = subnets
        self._registries = registries
        self._sriov_networks = sriov_networks
        self.generation = 0
        self.encodings = 0  # responses built and serialised (tests count them)
        self._encoded: tuple[int, rpc.Encoded] | None = None
        self._changed = asyncio.Event()
        for informer in (networks, subnets, registries, sriov_networks):
            if informer is not None:
                informer.add_handler(self._on_change)

    def _on_change(self, type_: str, obj: Message, old: Message | None) -> None:
        revision = obj.metadata.resource_version  # type: ignore[attr-defined]
        self.generation = max(self.generation + 1, revision)
        self._changed.set()
        self._changed = asyncio.Event()

    def config(self) -> node_api_pb2.NodeConfig:
        cfg = node_api_pb2.NodeConfig(generation=self.generation)
        network = self._networks.get("", DEFAULT_NAME)
        if isinstance(network, network_pb2.Network):
            cfg.network.CopyFrom(network.spec)
            validation.default_network(cfg.network)
        leases = [o for o in self._subnets.items() if isinstance(o, network_pb2.Subnet)]
        cfg.leases.extend(sorted(leases, key=lambda lease: lease.metadata.name))
        registries = self._registries.get("", DEFAULT_NAME)
        if isinstance(registries, network_pb2.Registries):
            cfg.registries.CopyFrom(registries.spec)
        if self._sriov_networks is not None:
            nets = [o for o in self._sriov_networks.items() if isinstance(o, sriov_pb2.SriovNetwork)]
            cfg.sriov_networks.extend(sorted(nets, key=lambda n: n.metadata.name))
        return cfg

    def encoded(self) -> tuple[int, rpc.Encoded]:
        """The WatchNodeConfigResponse for the current generation, as bytes shared by every
        stream, and that generation."""
        generation = self.generation
        if self._encoded is None or self._encoded[0] != generation:
            response = node_api_pb2.WatchNodeConfigResponse(config=self.config())
            self._encoded = (generation, rpc.Encoded(response.SerializeToString()))
            self.encodings += 1
        return self._encoded

    async def wait_change(self, seen_generation: int) -> None:
        if self.generation != seen_generation:
            return
        await self._changed.wait()
