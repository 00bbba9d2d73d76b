"""Deleting a Node revokes its certificate at once; heartbeats are persisted as leases for restarts
and for several coordinators; node certificates are short-lived."""

from __future__ import annotations

import pathlib

from atoll import errors, kinds, rpc
from atoll.v1 import node_api_pb2, node_api_pb2_grpc
from coordinator.client.config import ClientConfig
from coordinator.controllers.nodeleases import NodeLeases
from coordinator.controllers.nodelifecycle import NodeHealth
from coordinator.store.memory import MemoryStore
from tests.functional.harness import Cluster, FakeNode, eventually

NODE = kinds.by_name("Node")


def node_client(c: Cluster, node: FakeNode) -> node_api_pb2_grpc.NodeServiceStub:
    creds = node.agent.credentials
    assert creds is not None and c.admin is not None
    key, cert, ca = creds.read() or (b"", b"", b"")
    config = ClientConfig(server=c.admin.server, ca=ca, cert=cert, key=key)
    channel = rpc.open_channel(config.server, credentials=config.credentials(config.server))
    return node_api_pb2_grpc.NodeServiceStub(channel)


async def test_deleting_a_node_revokes_its_certificate_at_once(secure: Cluster) -> None:
    node = await secure.add_node("node-r")
    stub = node_client(secure, node)
    await rpc.unary(stub.GetAssignment(node_api_pb2.GetAssignmentRequest(node_name="node-r")))
    await node.stop()  # its host goes away; its certificate (valid for hours) does not
    secure.nodes.remove(node)
    assert secure.client is not None
    await secure.client.delete(NODE, "", "node-r")

    async def refused() -> str:
        try:
            await rpc.unary(stub.GetAssignment(node_api_pb2.GetAssignmentRequest(node_name="node-r")))
        except errors.Unauthenticated as exc:
            return str(exc)
        return ""

    message = await eventually(refused, timeout=5, what="the deleted node's certificate refused")
    assert "the certificate of node-r was revoked" in message


async def test_node_certificates_are_short_lived(secure: Cluster) -> None:
    node = await secure.add_node("node-s")
    lifetime = node.agent.credentials.lifetime() if node.agent.credentials else None
    assert lifetime is not None
    hours = (lifetime.not_after - lifetime.not_before).total_seconds() / 3600
    assert hours <= 12.1, hours  # 12 h, issued a few minutes back against clock skew


async def test_a_restarted_coordinator_remembers_who_was_alive(tmp_path: pathlib.Path) -> None:
    c = await Cluster(tmp_path).start()
    try:
        await c.add_node("node-l")

        async def persisted() -> bool:
            return await c.coordinator.store.get("/nodeleases/node-l") is not None  # type: ignore[union-attr]

        await eventually(persisted, what="the node's heartbeat lease written")
    finally:
        await c.stop()
    again = await Cluster(tmp_path).start()
    try:
        assert again.coordinator.health is not None

        async def remembered() -> bool:
            return "node-l" in again.coordinator.health.last_heartbeat  # type: ignore[union-attr]

        await eventually(remembered, what="the heartbeat remembered after the restart")
    finally:
        await again.stop()


async def test_a_heartbeat_to_one_coordinator_counts_at_every_other() -> None:
    store = MemoryStore()
    now = [1000.0]
    one, two = NodeHealth(lambda: now[0]), NodeHealth(lambda: now[0])
    at_one = NodeLeases(store, one, write_interval=2.0, clock=lambda: now[0])
    at_two = NodeLeases(store, two, write_interval=2.0, clock=lambda: now[0])
    one.beat("node-1")
    assert await at_one.flush() == 1
    await at_two.load()
    assert two.last_heartbeat["node-1"] == 1000.0
    now[0] += 1.0
    one.beat("node-1")
    assert await at_one.flush() == 0  # coarse: not moved on by the write interval yet
    now[0] += 1.5
    one.beat("node-1")
    assert await at_one.flush() == 1
    await at_two.load()
    assert two.last_heartbeat["node-1"] == 1002.5
    assert two.silent_for("node-1") == 0.0  # alive at two, which received no heartbeat itself
