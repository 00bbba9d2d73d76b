"""The heartbeat lane: where it listens (coordinator config) and when the agent uses it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from agent import bootstrap
from agent.leaselane import LeaseLane, lane_address
from atoll import errors, rpc
from atoll.backoff import Backoff
from coordinator.config import ServeConfig

# -- where the coordinator listens -----------------------------------------------------------


def test_auto_follows_each_tcp_listen_address() -> None:
    assert ServeConfig().lease_addresses() == ["0.0.0.0:6445"]
    cfg = ServeConfig(listen="10.0.0.5:7000,unix:///run/atoll.sock,[::1]:7000")
    assert cfg.lease_addresses() == ["10.0.0.5:7002", "[::1]:7002"]
    assert ServeConfig(listen="127.0.0.1:0").lease_addresses() == [
        "127.0.0.1:0"
    ]  # a free port, like --listen
    assert ServeConfig(listen="unix:///run/atoll.sock").lease_addresses() == []


def test_explicit_none_and_bad_values() -> None:
    assert ServeConfig(lease_listen="127.0.0.1:9000").lease_addresses() == ["127.0.0.1:9000"]
    assert ServeConfig(lease_listen="").lease_addresses() == []
    with pytest.raises(errors.InvalidArgument, match="lease_listen"):
        ServeConfig(lease_listen="unix:///run/lane.sock").validate()
    with pytest.raises(errors.InvalidArgument, match="lease_listen"):
        ServeConfig(lease_listen="nohost").validate()
    with pytest.raises(errors.InvalidArgument, match="port 6444 is another listener's"):
        ServeConfig(lease_listen="0.0.0.0:6444").validate()
    with pytest.raises(errors.InvalidArgument, match="port 9100 is another listener's"):
        ServeConfig(lease_listen="0.0.0.0:9100", metrics_listen="127.0.0.1:9100").validate()
    assert 6445 in ServeConfig().listen_ports()  # no service takes the lane's port


def test_auto_leaves_out_a_lane_with_no_room() -> None:
    assert ServeConfig(listen="127.0.0.1:65534").lease_addresses() == []  # past the last port
    assert ServeConfig(listen="127.0.0.1:6442").lease_addresses() == []  # 6444: the token port
    assert ServeConfig(listen="127.0.0.1:7000", kube_listen="127.0.0.1:7002").lease_addresses() == []
    assert ServeConfig(listen="127.0.0.1:6442", token_listen="").lease_addresses() == ["127.0.0.1:6444"]


def test_the_lane_is_on_the_host_the_agent_reached() -> None:
    assert lane_address("10.0.0.5:6443", 6445) == "10.0.0.5:6445"
    assert lane_address("[fd00::1]:6443", 6445) == "[fd00::1]:6445"
    assert lane_address("coordinator.example:6443", 6445) == "coordinator.example:6445"


# -- when the agent uses it ------------------------------------------------------------------


class FakeChannel:
    """A recording stand-in for grpc.aio.Channel: no connection; the test says when it is ready."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.ready = asyncio.Event()
        self.closed = False

    async def channel_ready(self) -> None:
        await self.ready.wait()

    async def close(self) -> None:
        self.closed = True

    def unary_unary(self, *args: Any, **kwargs: Any) -> object:
        return object()

    unary_stream = stream_unary = stream_stream = unary_unary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lane_with(clock: Clock, ready_timeout: float = 5.0) -> tuple[LeaseLane, list[FakeChannel]]:
    opened: list[FakeChannel] = []

    def open_channel(address: str) -> Any:
        opened.append(FakeChannel(address))
        return opened[-1]

    backoff = Backoff(initial=5.0, maximum=300.0, rng=lambda: 0.5)  # no jitter
    return LeaseLane(open_channel, clock=clock, backoff=backoff, ready_timeout=ready_timeout), opened


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_used_only_once_connected_and_only_for_its_coordinator() -> None:
    lane, opened = lane_with(Clock())
    lane.offer("10.0.0.5:6443", 6445)
    assert [c.address for c in opened] == ["10.0.0.5:6445"]
    assert lane.stub_for("10.0.0.5:6443") is None  # not connected yet: the API's listener
    opened[0].ready.set()
    await settle()
    assert lane.stub_for("10.0.0.5:6443") is not None
    assert lane.stub_for("10.0.0.6:6443") is None  # the link moved on: not this lane
    lane.offer("10.0.0.5:6443", 6445)  # every answer says it again: nothing new
    assert len(opened) == 1
    lane.offer("10.0.0.6:6443", 6445)  # the next coordinator's lane
    assert opened[0].address == "10.0.0.5:6445" and opened[1].address == "10.0.0.6:6445"
    assert lane.stub_for("10.0.0.6:6443") is None
    lane.offer("10.0.0.6:6443", 0)  # that coordinator has none
    assert lane.address == "" and len(opened) == 2
    await lane.close()
    assert all(c.closed for c in opened)


async def test_a_failed_lane_waits_out_a_backoff() -> None:
    clock = Clock()
    lane, opened = lane_with(clock)
    lane.offer("10.0.0.5:6443", 6445)
    opened[0].ready.set()
    await settle()
    lane.failed("UNAVAILABLE")
    assert lane.stub_for("10.0.0.5:6443") is None and lane.failures == 1
    lane.offer("10.0.0.5:6443", 6445)  # the next answer, on the API's listener
    assert len(opened) == 1  # not before the backoff ends
    clock.now += 5.0
    lane.offer("10.0.0.5:6443", 6445)
    assert len(opened) == 2
    lane.failed("UNAVAILABLE")  # again: twice as long
    clock.now += 5.0
    lane.offer("10.0.0.5:6443", 6445)
    assert len(opened) == 2
    clock.now += 5.0
    lane.offer("10.0.0.5:6443", 6445)
    assert len(opened) == 3
    await lane.close()


async def test_a_lane_that_does_not_connect_is_given_up() -> None:
    lane, opened = lane_with(Clock(), ready_timeout=0.05)
    lane.offer("10.0.0.5:6443", 6445)
    for _ in range(100):
        if lane.failures:
            break
        await asyncio.sleep(0.01)
    assert lane.failures == 1 and lane.address == ""
    assert lane.stub_for("10.0.0.5:6443") is None
    await lane.close()
    assert opened[0].closed


async def test_a_failure_on_a_lane_already_replaced_is_not_held_against_the_new_one() -> None:
    lane, opened = lane_with(Clock())
    lane.offer("10.0.0.5:6443", 6445)
    opened[0].ready.set()
    await settle()
    old = lane.stub_for("10.0.0.5:6443")
    lane.reopen()  # a renewed certificate: a new channel while a heartbeat is still on the old one
    opened[1].ready.set()
    await settle()
    assert old is not None
    lane.failed("CANCELLED", old)  # that heartbeat ends when the old channel closes
    assert lane.failures == 0 and lane.stub_for("10.0.0.5:6443") is not None
    lane.failed("UNAVAILABLE", lane.stub_for("10.0.0.5:6443"))
    assert lane.failures == 1 and lane.stub_for("10.0.0.5:6443") is None
    await lane.close()


async def test_new_credentials_reopen_the_lane() -> None:
    lane, opened = lane_with(Clock())
    lane.offer("10.0.0.5:6443", 6445)
    opened[0].ready.set()
    await settle()
    lane.reopen()
    assert len(opened) == 2 and lane.stub_for("10.0.0.5:6443") is None  # until the new one connects
    opened[1].ready.set()
    await settle()
    assert lane.stub_for("10.0.0.5:6443") is not None
    await lane.close()
    assert all(c.closed for c in opened)


async def test_the_api_channel_pings_sooner_than_the_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats take the lane only while the API channel is READY; idle, it leaves READY only when
    a ping goes unanswered, so it keeps the shorter interval and the lane the fleet-wide one."""
    opened: list[tuple[str, int]] = []

    def record(address: str, *, credentials: Any = None, keepalive_ms: int = 0) -> grpc.aio.Channel:
        opened.append((address, keepalive_ms))
        return grpc.aio.insecure_channel(address)  # loopback, a port nobody serves: never connects

    monkeypatch.setattr(rpc, "coordinator_channel", record)
    connection = bootstrap.CoordinatorConnection("127.0.0.1:1", None)
    try:
        connection.offer_lease_port(2)
        assert opened == [
            ("127.0.0.1:1", bootstrap.API_KEEPALIVE_MS),
            ("127.0.0.1:2", rpc.CLIENT_KEEPALIVE_MS),
        ]
        assert bootstrap.API_KEEPALIVE_MS + 5_000 <= 15_000 < rpc.CLIENT_KEEPALIVE_MS
    finally:
        await connection.close()
