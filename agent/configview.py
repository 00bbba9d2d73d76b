"""The agent's copy of its node config, kept from the coordinator's full configs and lease
deltas (coordinator/api/node/nodeconfig.py), handed to the networking as one NodeConfig."""

from __future__ import annotations

import logging

from agent.servicecache import StreamGap
from atoll.v1 import network_pb2, node_api_pb2

log = logging.getLogger(__name__)


class NodeConfigView:
    def __init__(self) -> None:
        self._config: node_api_pb2.NodeConfig | None = None  # the last full config, its leases aside
        self._leases: dict[str, network_pb2.Subnet] = {}  # by name: sorted, as full configs are
        self.generation = -1  # nothing received yet

    def apply(self, response: node_api_pb2.WatchNodeConfigResponse) -> None:
        """Take a full config or a delta (`config()` is the whole config after it)."""
        if response.HasField("delta"):
            self._apply_delta(response.delta)
            return
        if not response.HasField("config"):
            # Neither: something a newer coordinator sends that this agent does not know. Taken
            # as a config, it would be an empty one and take the overlay down.
            log.warning("ignoring a node config message with neither a config nor a delta")
            return
        config = node_api_pb2.NodeConfig()
        config.CopyFrom(response.config)
        self._leases = {lease.metadata.name: lease for lease in config.leases}
        del config.leases[:]
        self._config = config
        self.generation = config.generation

    def _apply_delta(self, delta: node_api_pb2.NodeConfigDelta) -> None:
        if self._config is None or delta.base_generation != self.generation:
            raise StreamGap(
                f"node config delta from generation {delta.base_generation}, but this copy is at {self.generation}"
            )
        for name in delta.deleted_leases:
            self._leases.pop(name, None)
        for lease in delta.leases:
            self._leases[lease.metadata.name] = lease
        self.generation = delta.generation

    def config(self) -> node_api_pb2.NodeConfig:
        config = node_api_pb2.NodeConfig()
        if self._config is not None:
            config.CopyFrom(self._config)
        config.generation = self.generation
        config.leases.extend(self._leases[name] for name in sorted(self._leases))
        return config
