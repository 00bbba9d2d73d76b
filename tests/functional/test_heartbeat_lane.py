"""The heartbeat lane: a coordinator listener for heartbeats alone, over mutual TLS like the API.

Agents learn its port from Register and Heartbeat answers, move their heartbeats there once its
channel is up, and fall back to the API's listener (without failing a heartbeat) when it breaks.
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
import threading

import grpc
import pytest

from atoll import errors, kinds, rpc
from atoll.v1 import meta_pb2, node_api_pb2, node_api_pb2_grpc, node_pb2
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
        assert coordinator.lane is not None
        lane_port = coordinator.lane.port
        assert lane_port not in (0, coordinator.port, coordinator.token_port)
        # Several servers share the lane's port (their accepts run side by side).
        assert {s.port for s in coordinator.lane.servers} == {lane_port}
        assert len(coordinator.lane.servers) > 1
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
        await coordinator.lane.stop(0)
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
        assert coordinator.lane is not None
        lane = f"127.0.0.1:{coordinator.lane.port}"
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
            # Tokens are not taken there (their check reads the store, on the main loop).
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Heartbeat(
                    node_api_pb2.HeartbeatRequest(node_name="n1"),
                    timeout=5,
                    metadata=(("authorization", "Bearer abc.def"),),
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
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
        assert cluster.coordinator.lane is None
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
            assert cluster.coordinator.lane is None
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


async def test_the_lane_answers_while_the_main_loop_is_blocked(tmp_path: pathlib.Path) -> None:
    """Heartbeats are answered on the lane's own loop and thread: here while the coordinator's
    main loop (store, informers, every other call) cannot run at all, one that changes nothing
    and one whose new status the main loop writes once it runs again."""
    # The agent's own heartbeats are made rare (their interval, and the grace period with it),
    # so what reaches the lane here is the test's.
    cluster = await Cluster(
        tmp_path, node_status_interval=600.0, heartbeat_interval=60.0, node_grace_period=600.0
    ).start()
    try:
        node = await cluster.add_node("n1")
        coordinator = cluster.coordinator
        assert coordinator.lane is not None and coordinator.lane.heartbeats is not None
        lane = f"127.0.0.1:{coordinator.lane.port}"
        credentials = node.agent.connection.credentials
        assert credentials is not None
        informer = coordinator.informers["Node"]

        async def cached() -> bool:
            return "/nodes/n1" in informer.cache

        await eventually(cached, what="the node in the informer")
        request = node_api_pb2.HeartbeatRequest(node_name="n1")
        request.status.CopyFrom(informer.cache["/nodes/n1"].status)  # type: ignore[attr-defined]
        from_memory = coordinator.lane.heartbeats.answered_here
        handed, forwarded = coordinator.lane.heartbeats.handed_over, coordinator.lane.heartbeats.forwarded
        connected, go, answered = threading.Event(), threading.Event(), threading.Event()

        def heartbeat_from_another_thread() -> None:
            async def beat() -> None:
                channel = rpc.open_channel(lane, credentials=credentials.channel_credentials())
                try:
                    # Connected first, as an agent's lane is: a new connection's TLS handshake
                    # still goes through the main loop (gRPC's certificate fetcher).
                    await asyncio.wait_for(channel.channel_ready(), 10)
                    connected.set()
                    await asyncio.to_thread(go.wait, 15)
                    stub = node_api_pb2_grpc.NodeServiceStub(channel)
                    await stub.Heartbeat(request, timeout=10)
                    # A status to write is answered here too: the write waits for the main loop.
                    changed = node_api_pb2.HeartbeatRequest()
                    changed.CopyFrom(request)
                    changed.status.capacity.cpu_millis += 1000
                    await stub.Heartbeat(changed, timeout=10)
                    answered.set()
                finally:
                    await channel.close()

            asyncio.run(beat())

        beater = threading.Thread(target=heartbeat_from_another_thread)
        beater.start()

        async def lane_connected() -> bool:
            return connected.is_set()

        await eventually(lane_connected, what="a connection to the lane")
        go.set()
        # Block the main loop until the answer comes (or 15 s pass): nothing on it can run meanwhile.
        answered_while_blocked = answered.wait(15)
        beater.join(15)
        assert answered_while_blocked
        assert coordinator.lane.heartbeats.answered_here >= from_memory + 2
        assert coordinator.lane.heartbeats.forwarded == forwarded  # neither waited for the main loop

        # Once the main loop runs again, it writes the status the lane handed over.
        wanted = request.status.capacity.cpu_millis + 1000

        async def written() -> bool:
            cached = informer.cache.get("/nodes/n1")
            return cached is not None and cached.status.capacity.cpu_millis == wanted  # type: ignore[attr-defined]

        await eventually(written, what="the handed-over status in the store")
        assert coordinator.lane.heartbeats.handed_over == handed + 1
    finally:
        await cluster.stop()


async def test_a_node_cut_off_from_the_api_does_not_stay_alive_on_the_lane(tmp_path: pathlib.Path) -> None:
    """Heartbeats take the lane only while the API's channel is up: a node that cannot report its
    pods or get its assignment must fall silent, as it would without a lane."""
    cluster = await Cluster(tmp_path).start()
    try:
        node = await cluster.add_node("n1")
        connection = node.agent.connection

        async def on_lane() -> bool:
            return connection.lease_stub is not connection.stub

        await eventually(on_lane, what="heartbeats on the lane")
        coordinator = cluster.coordinator
        assert coordinator.server is not None and coordinator.lane is not None
        await coordinator.stop_api(0)  # the API's listener goes; the lane stays
        assert coordinator.lane.servers

        async def off_lane() -> bool:
            return connection.lease_stub is connection.stub

        await eventually(off_lane, what="heartbeats back on the (unreachable) API listener")
        failures = node.agent.link.heartbeat_failures
        await eventually(
            lambda: _async(node.agent.link.heartbeat_failures > failures), what="heartbeats failing"
        )
    finally:
        await cluster.stop()


async def test_agents_are_told_a_paced_interval_as_the_fleet_grows(tmp_path: pathlib.Path) -> None:
    # 5 heartbeats a second at most: two nodes at 0.2 s would send 10, so each is told 0.4 s.
    cluster = await Cluster(tmp_path, max_heartbeats_per_second=5.0).start()
    try:
        pace = cluster.coordinator.heartbeat_pace
        assert pace is not None
        links = [(await cluster.add_node(name)).agent.link for name in ("n1", "n2")]

        async def told_paced() -> bool:
            return all(link is not None and link.heartbeat_interval == 0.4 for link in links)

        await eventually(told_paced, what="both agents told 0.4 s")
        assert pace.grace() == 4.0  # 2 s at 0.2 s, stretched alike
        assert await _node_ready(cluster, "n1") and await _node_ready(cluster, "n2")
    finally:
        await cluster.stop()


async def test_a_status_change_is_told_before_the_next_paced_heartbeat(tmp_path: pathlib.Path) -> None:
    # One node at 0.05 heartbeats a second: told 20 s.
    cluster = await Cluster(tmp_path, max_heartbeats_per_second=0.05, max_heartbeat_interval=30.0).start()
    try:
        node = await cluster.add_node("n1")
        link = node.agent.link
        assert link is not None
        link.status_check_interval = 0.2
        link._probe.set()  # whatever wait is under way ends: the next takes the short checks

        async def told_long() -> bool:
            return link.heartbeat_interval == 20.0

        await eventually(told_long, what="told 20 s")
        await eventually(lambda: _node_ready(cluster, "n1"), what="n1 Ready")
        build = link._build_status

        def with_pressure() -> node_pb2.NodeStatus:
            status = build()
            status.conditions.add(type="DiskPressure", status=meta_pb2.CONDITION_STATUS_TRUE, reason="Test")
            return status

        link._build_status = with_pressure  # type: ignore[method-assign]
        assert cluster.client is not None
        client = cluster.client

        async def pressure_seen() -> bool:
            got = await client.get(kinds.by_name("Node"), "", "n1")
            return any(c.type == "DiskPressure" for c in got.status.conditions)  # type: ignore[attr-defined]

        await eventually(
            # Half an interval after the last heartbeat at the earliest (10 s), not the next at 20 s.
            pressure_seen,
            timeout=15,
            what="the new condition before the next 20 s heartbeat",
        )
    finally:
        await cluster.stop()
