"""Channels from the coordinator to agents (for logs), one per node address, cached."""

from __future__ import annotations

import grpc

from atoll import errors, rpc
from atoll.v1 import agent_pb2_grpc, node_pb2
from coordinator.informer import Informer


class AgentClients:
    def __init__(self, nodes: Informer) -> None:
        self._nodes = nodes
        self._channels: dict[str, grpc.aio.Channel] = {}

    def target(self, node_name: str) -> str:
        node = self._nodes.get("", node_name)
        if not isinstance(node, node_pb2.Node):
            raise errors.NotFound(f'nodes "{node_name}" not found')
        address = next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")
        if not address or not node.status.agent_port:
            raise errors.Unavailable(f"node {node_name} has not reported its agent address")
        host = f"[{address}]" if ":" in address else address
        return f"{host}:{node.status.agent_port}"

    def stub(self, node_name: str) -> agent_pb2_grpc.AgentServiceStub:
        target = self.target(node_name)
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = rpc.open_channel(target)
        return agent_pb2_grpc.AgentServiceStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
