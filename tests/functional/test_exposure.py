"""What the coordinator shows a client without credentials, over real sockets: half-open
connections to the token port are dropped after the handshake deadline and capped per source,
authenticated clients get through meanwhile; reflection only on the authenticated port."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from atoll import connlimit, kinds, rpc, tls
from coordinator.auth import tokens
from coordinator.client.api import Client
from coordinator.client.config import ClientConfig
from tests.functional.harness import Cluster, eventually

NODE = kinds.by_name("Node")
FLOOD_SOURCE = "127.0.0.2"  # loopback, but another source than the good clients' 127.0.0.1
PER_SOURCE = 6
HANDSHAKE = 1.0
# The first bytes of a TLS ClientHello: a record header that promises more than comes.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def gated(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    c = await Cluster(
        tmp_path,
        audit_log=str(tmp_path / "audit.jsonl"),
        handshake_timeout=HANDSHAKE,
        max_unauthenticated_conns_per_source=PER_SOURCE,
        max_unauthenticated_conns=100,
    ).start()
    try:
        yield c
    finally:
        await c.stop()


def gate_of(c: Cluster) -> connlimit.ConnectionGate:
    assert c.coordinator.server is not None
    (gate,) = c.coordinator.server.gates
    return gate


async def half_open(port: int, *, partial: bool) -> Conn:
    conn = await asyncio.open_connection("127.0.0.1", port, local_addr=(FLOOD_SOURCE, 0))
    if partial:
        conn[1].write(PARTIAL_HELLO)
        try:
            await conn[1].drain()
        except ConnectionResetError:  # refused already; closed_within() tells
            pass
    return conn


async def refused_at_once(port: int) -> bool:
    """A connection the server resets at once (during connect, or right after it)."""
    try:
        conn = await half_open(port, partial=True)
    except ConnectionResetError:
        return True
    try:
        return await closed_within(conn, 1.0)
    finally:
        conn[1].close()


async def closed_within(conn: Conn, seconds: float) -> bool:
    """Whether the server closes (or resets) the connection within `seconds`."""
    try:
        return await asyncio.wait_for(conn[0].read(1024), seconds) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def bearer_user(c: Cluster) -> ClientConfig:
    token_id, secret = tokens.generate()
    assert c.client is not None and c.admin is not None
    await c.client.create(
        tokens.new_token(
            token_id, secret, ttl=600, usages=(tokens.USAGE_AUTH,), user="u-viewer", role="viewer"
        )
    )
    server = f"127.0.0.1:{c.coordinator.token_port}"
    return ClientConfig(server=server, ca=c.admin.ca, token=f"{token_id}.{secret}")


async def connect_and_list(config: ClientConfig) -> float:
    """Seconds for a new client to connect and make one call."""
    started = time.monotonic()
    async with Client(config.server, config=config) as client:
        await client.list(NODE)
    return time.monotonic() - started


async def test_half_open_connections_are_capped_per_source_and_dropped_at_the_handshake_deadline(
    gated: Cluster,
) -> None:
    c = gated
    port = c.coordinator.token_port
    gate = gate_of(c)
    viewer = await bearer_user(c)
    assert c.admin is not None

    held = [await half_open(port, partial=i % 2 == 0) for i in range(PER_SOURCE)]
    await eventually(lambda: _true(gate.open.get(FLOOD_SOURCE) == PER_SOURCE), what="the flood admitted")
    # Beyond the cap, the same source is refused at once.
    assert [await refused_at_once(port) for _ in range(3)] == [True] * 3
    assert gate.stats.refused_per_source == 3

    # Meanwhile authenticated clients connect and call at once: a certificate on the API port,
    # and a bearer token on the token port itself (another source).
    assert await connect_and_list(c.admin) < 2.0
    assert await connect_and_list(viewer) < 2.0

    # The held ones are dropped once the handshake deadline passes, and the source may connect again.
    assert all([await closed_within(conn, HANDSHAKE + 3.0) for conn in held])
    await eventually(lambda: _true(FLOOD_SOURCE not in gate.open), what="the flood's count released")
    again = await half_open(port, partial=False)
    assert not await closed_within(again, 0.3)
    for _, writer in [*held, again]:
        writer.close()


async def test_token_port_calls_are_audited_with_the_real_client_address(gated: Cluster) -> None:
    c = gated
    viewer = await bearer_user(c)
    gate = gate_of(c)
    async with Client(viewer.server, config=viewer) as client:
        await client.list(NODE)
        with pytest.raises(Exception, match=r"(?i)denied|forbidden|may not"):
            await client.delete(NODE, "", "nobody")
        clients = set(gate.peers.values())
    lines = [json.loads(x) for x in (c.tmp / "audit.jsonl").read_text().splitlines()]
    denied = [x for x in lines if x.get("user") == "u-viewer"]
    assert denied
    assert {x["peer"] for x in denied} <= clients, (denied, clients)


async def _true(value: bool) -> bool:
    return value


def _channel(c: Cluster, port: int, *, client_cert: bool) -> grpc.aio.Channel:
    assert c.admin is not None
    creds = tls.channel_credentials(
        c.admin.ca, key=c.admin.key if client_cert else None, cert=c.admin.cert if client_cert else None
    )
    return rpc.open_channel(f"127.0.0.1:{port}", credentials=creds)


async def _list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in call:
        return [s.name for s in response.list_services_response.service]
    return []


async def _reflection_status(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """How a reflection call that sends nothing ends. The refusal comes before any request is read;
    a request written meanwhile can race it, and gRPC's client then ends the call with an INTERNAL
    of its own ("Failed execute_batch") instead of the server's status."""
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
    code: grpc.StatusCode = await asyncio.wait_for(call.code(), 10)
    return code


async def test_reflection_only_on_the_authenticated_port_health_on_both(cluster: Cluster) -> None:
    c = cluster
    api = _channel(c, c.coordinator.port, client_cert=True)
    token = _channel(c, c.coordinator.token_port, client_cert=False)
    try:
        assert "atoll.v1.ClusterService" in await _list_services(api)
        assert await _reflection_status(token) == grpc.StatusCode.PERMISSION_DENIED
        for channel in (api, token):
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="atoll.v1.ClusterService")
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await api.close()
        await token.close()
