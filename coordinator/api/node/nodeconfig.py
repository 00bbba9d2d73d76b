"""What every node needs besides its pods: the overlay, the registry settings, the SR-IOV networks.

Fed by informers on Network, Subnet, Registries and SriovNetwork; every change bumps one
generation, and the WatchNodeConfig streams are woken for the latest at most once per push
interval: 50 ms for a few streams, growing with them to a second (level-triggered, like
assignments).

The config holds every node's subnet lease, and every node joining adds one, so the work is
done once per generation, not once per stream: the full config and the delta from the
generation the streams last got are each built and serialised once, and the same bytes go to
every stream (`callchain.Encoded`), as for services (servicestate). Agents that accept deltas get,
after a first full config, only the leases that changed (flannel watches leases one by one):
a join costs one lease times the nodes, not every lease times the nodes. A change to anything
but the leases, and a stream further behind than the change log, get a full config.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.message import Message

from atoll import callchain, validation
from atoll.v1 import network_pb2, node_api_pb2, sriov_pb2
from coordinator.api.node.pushes import SharedPushes
from coordinator.objects.informer import Informer

DEFAULT_NAME = "default"
CHANGE_LOG = 4096  # lease changes kept for deltas; a stream further behind gets a full config
# Streams are woken together, at most once per interval: a fleet joining changes one lease per
# node, and a message per lease per stream would cost more than the leases (1,000 nodes joining:
# a million sends). Woken together, the streams are at the same point and share each delta's
# bytes. The interval grows with the streams open, so that pushes cost at most about
# PUSH_SENDS_PER_SECOND sends: a small cluster's new lease reaches its peers within
# MIN_PUSH_INTERVAL (flannel watches leases one by one), a large one's within PUSH_INTERVAL
# (kube-proxy's min sync period).
PUSH_INTERVAL = 1.0
MIN_PUSH_INTERVAL = 0.05
PUSH_SENDS_PER_SECOND = 2500


@dataclass(frozen=True)
class _LeaseChange:
    generation: int
    name: str
    lease: network_pb2.Subnet | None  # None: deleted


class NodeConfigTracker:
    def __init__(
        self,
        networks: Informer,
        subnets: Informer,
        registries: Informer,
        sriov_networks: Informer | None = None,
        *,
        change_log: int = CHANGE_LOG,
        push_interval: float = PUSH_INTERVAL,
        min_push_interval: float = MIN_PUSH_INTERVAL,
    ) -> None:
        self._networks = networks
        self._subnets = subnets
        self._registries = registries
        self._sriov_networks = sriov_networks
        self.generation = 0
        self._pushes = SharedPushes(self._full_response, self._delta_response)
        self._log: collections.deque[_LeaseChange] = collections.deque()
        self._log_size = change_log
        self._floor = 0  # deltas can start at any generation >= this
        self._push_interval = push_interval
        self._min_push_interval = min(min_push_interval, push_interval)
        self._streams = 0  # open, in stream()
        self.published = 0  # the generation streams were last woken for
        self._published_at = -push_interval  # time.monotonic() of that
        self._publishing: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        subnets.add_handler(self._on_lease)
        for informer in (networks, registries, sriov_networks):
            if informer is not None:
                informer.add_handler(self._on_other)

    def _bump(self, obj: Message) -> None:
        revision = obj.metadata.resource_version  # type: ignore[attr-defined]
        self.generation = max(self.generation + 1, revision)
        self._pushes.changed()
        self._publish_soon()

    def _publish_soon(self) -> None:
        if self._publishing is not None:
            return  # it publishes the generation current then
        delay = self._published_at + self.push_interval() - time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # informers fed by hand, with no loop running: at once
            delay = 0.0
        if delay <= 0:
            self._publish()
        else:
            self._publishing = loop.call_later(delay, self._publish)

    def push_interval(self) -> float:
        """The least time between two wakings of the streams, for as many as are open."""
        return min(self._push_interval, max(self._min_push_interval, self._streams / PUSH_SENDS_PER_SECOND))

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Held by each stream for as long as it is open: the streams open pace the pushes (not
        those waiting at the time, which in a burst are few: the rest are still sending)."""
        self._streams += 1
        try:
            yield
        finally:
            self._streams -= 1

    def _publish(self) -> None:
        self._publishing = None
        self._published_at = time.monotonic()
        self.published = self.generation
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_lease(self, type_: str, obj: Message, old: Message | None) -> None:
        self._bump(obj)
        lease = None if type_ == "DELETED" or not isinstance(obj, network_pb2.Subnet) else obj
        self._log.append(_LeaseChange(self.generation, obj.metadata.name, lease))  # type: ignore[attr-defined]
        while len(self._log) > self._log_size:
            self._floor = self._log.popleft().generation

    def _on_other(self, type_: str, obj: Message, old: Message | None) -> None:
        """The network, the registries or an SR-IOV network changed: rare, and sent whole."""
        self._bump(obj)
        self._log.clear()
        self._floor = self.generation

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

    def delta(self, base: int) -> node_api_pb2.NodeConfigDelta | None:
        """The leases changed from `base` to now; None when the log no longer reaches back to
        `base`, or something other than a lease changed since."""
        if base < self._floor or base > self.generation:
            return None
        latest: dict[str, network_pb2.Subnet | None] = {}
        for change in reversed(self._log):
            if change.generation <= base:
                break
            latest.setdefault(change.name, change.lease)
        delta = node_api_pb2.NodeConfigDelta(base_generation=base, generation=self.generation)
        for name, lease in sorted(latest.items(), key=lambda item: item[0]):
            if lease is None:
                delta.deleted_leases.append(name)
            else:
                delta.leases.append(lease)
        return delta

    @property
    def encodings(self) -> int:
        """How many responses were serialised (tests read it)."""
        return self._pushes.encodings

    def _full_response(self) -> bytes:
        return node_api_pb2.WatchNodeConfigResponse(config=self.config()).SerializeToString()

    def _delta_response(self, base: int) -> bytes | None:
        delta = self.delta(base)
        return (
            None if delta is None else node_api_pb2.WatchNodeConfigResponse(delta=delta).SerializeToString()
        )

    def encoded(self, sent: int = -1, accept_deltas: bool = False) -> tuple[int, callchain.Encoded]:
        """The next WatchNodeConfigResponse for a stream that last got generation `sent` (-1:
        nothing yet), as bytes shared by every stream at the same point, and its generation."""
        return self._pushes.encoded(self.generation, sent, accept_deltas)

    async def wait_change(self, seen_generation: int) -> None:
        """Until a generation newer than `seen_generation` is published (-1: at once). A stream
        may have got a newer generation than the published one (its first config is built when it
        opens): the publishing that catches up with it is no news to it."""
        while self.published <= seen_generation:
            await self._changed.wait()
