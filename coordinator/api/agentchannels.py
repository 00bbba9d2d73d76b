"""Channels from the coordinator to agents (for logs), one per node, cached.

Over mutual TLS: the coordinator presents its client certificate (CN
atoll:coordinator), the only identity agents accept, and checks that the
agent's certificate names the node it meant to reach (agents are dialled by
IP, their certificates carry the node name). When the coordinator's client
certificate is renewed, new calls get new channels; the old ones are closed
at stop (calls in flight on them, such as a followed log, keep going).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from atoll import errors, rpc
from atoll.v1 import agent_pb2_grpc, node_pb2
from coordinator.objects.informer import Informer


class AgentClients:
    def __init__(
        self,
        nodes: Informer,
        *,
        credentials: Callable[[], grpc.ChannelCredentials] | None = None,
        version: Callable[[], int] = lambda: 0,
    ) -> None:
        self._nodes = nodes
        self._credentials = credentials
        self._version = version
        self._channels: dict[tuple[str, str, int], grpc.aio.Channel] = {}
        self._retired: list[grpc.aio.Channel] = []

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
        version = self._version()
        key = (node_name, target, version)
        channel = self._channels.get(key)
        if channel is None:
            for old in [k for k in self._channels if k[0] == node_name]:
                self._retired.append(self._channels.pop(old))
            if self._credentials is None:
                channel = rpc.open_channel(target)
            else:
                channel = rpc.open_channel(target, credentials=self._credentials(), server_name=node_name)
            self._channels[key] = channel
        return agent_pb2_grpc.AgentServiceStub(channel)

    async def close(self) -> None:
        for channel in [*self._channels.values(), *self._retired]:
            await channel.close()
        self._channels.clear()
        self._retired.clear()
