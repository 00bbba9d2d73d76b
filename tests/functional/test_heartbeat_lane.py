"""The heartbeat lane: a coordinator listener for heartbeats alone, over mutual TLS like the API.

Agents learn its port from Register and Heartbeat answers, move their heartbeats there once its
channel is up, and fall back to the API's listener (without failing a heartbeat) when it breaks.
"""

from __future__ import annotations

import pathlib
import socket

import grpc
import pytest

from atoll import errors, kinds, rpc
from atoll.v1 import meta_pb2, node_api_pb2, node_api_pb2_grpc
from tests.functional.harness import Cluster, eventually


async def _node_ready(cluster: Cluster, name: str) -> bool:
    assert cluster.client is not None
    node = await cluster.client.get(kinds.by_name("Node"), "", name)
    return any(
        c.type == "Ready" and c.status == meta_pb2.CONDITION_STATUS_TRUE for c in node.status.conditions
    )  # type: ignore[attr-defined]


async def test_agents_heartbeat_on_the_lane_and_fall_back_when_it_breaks(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path).start()
    try:
        coordinator = cluster.coordinator
        assert coordinator.lease_servers
        lane_port = coordinator.lease_servers[0].port
        assert lane_port not in (0, coordinator.port, coordinator.token_port)
        # Several servers share the lane's port (their accepts run side by side).
        assert {s.port for s in coordinator.lease_servers} == {lane_port} and len(
            coordinator.lease_servers
        ) > 1
        node = await cluster.add_node("n1")
        connection = node.agent.connection
        link = node.agent.link

        async def on_lane() -> bool:
            return connection.lane.stub_for(connection.target) is not None

        await eventually(on_lane, what="heartbeats on the lane")
        assert connection.lane.address == f"127.0.0.1:{lane_port}"
        beats = link.last_heartbeat
        await eventually(lambda: _async(link.last_heartbeat > beats), what="a heartbeat on the lane")

        # The lane goes away (its listeners stop); the coordinator's API stays.
        for server in coordinator.lease_servers:
            await server.stop(0)
        beats = link.last_heartbeat
        await eventually(
            lambda: _async(link.last_heartbeat > beats + 0.5), what="heartbeats without the lane"
        )
        assert connection.lane.failures >= 1
        assert connection.lane.stub_for(connection.target) is None
        assert link.heartbeat_failures == 0  # the fallback is at once, no heartbeat is lost
        assert await _node_ready(cluster, "n1")
    finally:
        await cluster.stop()


async def _async(value: bool) -> bool:
    return value


async def test_the_lane_serves_heartbeats_only_and_needs_a_node_certificate(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path).start()
    try:
        await cluster.add_node("n1")
        coordinator = cluster.coordinator
        assert coordinator.lease_servers
        lane = f"127.0.0.1:{coordinator.lease_servers[0].port}"
        admin = cluster.admin
        assert admin is not None
        # The admin's certificate reaches the lane, but the lane has nothing but Heartbeat.
        channel = rpc.open_channel(lane, credentials=admin.credentials(lane))
        try:
            stub = node_api_pb2_grpc.NodeServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetAssignment(node_api_pb2.GetAssignmentRequest(node_name="n1"), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Register(node_api_pb2.RegisterRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await channel.close()
        # A node's certificate heartbeats only for its node, as on the API's listener.
        other = await cluster.add_node("n2")
        credentials = other.agent.connection.credentials
        assert credentials is not None
        channel = rpc.open_channel(lane, credentials=credentials.channel_credentials())
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await node_api_pb2_grpc.NodeServiceStub(channel).Heartbeat(
                    node_api_pb2.HeartbeatRequest(node_name="n1"), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await channel.close()
        # Without a client certificate there is no TLS session at all.
        anonymous = rpc.open_channel(lane, credentials=grpc.ssl_channel_credentials(admin.ca))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await node_api_pb2_grpc.NodeServiceStub(anonymous).Heartbeat(
                    node_api_pb2.HeartbeatRequest(node_name="n1"), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await anonymous.close()
    finally:
        await cluster.stop()


async def test_no_lane_when_switched_off(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, lease_listen="").start()
    try:
        assert cluster.coordinator.lease_servers == []
        node = await cluster.add_node("n1")
        beats = node.agent.link.last_heartbeat
        await eventually(lambda: _async(node.agent.link.last_heartbeat > beats), what="heartbeats")
        assert node.agent.connection.lane.address == ""
    finally:
        await cluster.stop()


def _port_pair() -> tuple[int, socket.socket]:
    """A free port P for the API, and P + 2 (the auto lane's) held by a socket of ours."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 2 > 65535:
            continue
        holder = socket.socket()
        # Held the way gRPC holds its ports (SO_REUSEPORT): sharing it would still succeed.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            holder.bind(("127.0.0.1", port + 2))
        except OSError:
            holder.close()
            continue
        holder.listen()
        return port, holder
    raise AssertionError("no free port pair")


async def test_an_auto_lane_whose_port_is_taken_is_left_out(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    port, holder = _port_pair()
    try:
        cluster = await Cluster(tmp_path, listen=f"127.0.0.1:{port}").start()
        try:
            assert cluster.coordinator.lease_servers == []
            assert "no heartbeat lane" in caplog.text
            node = await cluster.add_node("n1")
            beats = node.agent.link.last_heartbeat
            await eventually(lambda: _async(node.agent.link.last_heartbeat > beats), what="heartbeats")
        finally:
            await cluster.stop()
        # Asked for by name, a lane that cannot listen stops the start.
        cluster = Cluster(tmp_path / "explicit", lease_listen=f"127.0.0.1:{port + 2}")
        with pytest.raises(errors.Unavailable, match="lease_listen"):
            await cluster.start()
        await cluster.coordinator.stop()
    finally:
        holder.close()
