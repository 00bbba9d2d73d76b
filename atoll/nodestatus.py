"""What of a node's status is news: the coordinator writes a status only when it changes (or
every --node-status-interval), and the agent reports it at once, not at its next heartbeat."""

from __future__ import annotations

from atoll.v1 import node_pb2


def significant(status: node_pb2.NodeStatus) -> tuple[object, ...]:
    """The parts of a node's status worth a store write when they change."""
    return (
        tuple((c.type, c.status, c.reason) for c in status.conditions),
        tuple((a.type, a.address) for a in status.addresses),
        status.capacity.SerializeToString(deterministic=True),
        status.allocatable.SerializeToString(deterministic=True),
        status.agent_port,
        status.node_info.SerializeToString(deterministic=True),
    )
