"""Heartbeats paced to the fleet's size (Nomad's max_heartbeats_per_second), and the grace
period that stretches with them."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.link import CoordinatorLink, told_interval
from agent.service import loop_bounds
from atoll import errors
from atoll.agentconfig import LONGEST_HEARTBEAT_INTERVAL, AgentConfig
from atoll.nodestatus import significant
from atoll.v1 import node_pb2
from coordinator.config import ServeConfig
from coordinator.controllers.heartbeatpace import HeartbeatPace
from coordinator.controllers.nodeleases import NodeLeases, _value
from coordinator.controllers.nodelifecycle import NodeHealth, NodeLifecycle
from tests.unit.test_node_silence import Clock, Nodes, RecordingRegistry, ready_node


class Fleet:
    def __init__(self, nodes: int) -> None:
        self.nodes = nodes

    def __call__(self) -> int:
        return self.nodes


def test_a_small_fleet_keeps_the_interval_and_a_large_one_stretches_both_alike() -> None:
    fleet = Fleet(250)
    pace = HeartbeatPace(3.0, 8.0, 100.0, fleet, max_interval=30.0, clock=Clock(0.0))
    assert (pace.interval(), pace.interval_ms(), pace.grace()) == (3.0, 3000, 8.0)
    fleet.nodes = 1000  # 333 heartbeats a second at 3 s: stretched to 100
    assert pace.interval() == 10.0 and pace.grace() == pytest.approx(8.0 * 10 / 3)
    fleet.nodes = 5000  # 50 s would be nodes / rate: held to the longest interval allowed
    assert pace.interval_ms() == 30_000 and pace.grace() == pytest.approx(80.0)


def test_rate_zero_keeps_the_interval_whatever_the_fleet() -> None:
    pace = HeartbeatPace(3.0, 8.0, 0.0, Fleet(100_000))
    assert (pace.interval(), pace.grace()) == (3.0, 8.0)


def test_a_shrinking_fleet_keeps_the_long_grace_until_every_agent_heard_the_short_interval() -> None:
    clock, fleet = Clock(100.0), Fleet(1000)
    pace = HeartbeatPace(3.0, 8.0, 100.0, fleet, max_interval=30.0, clock=clock)
    assert pace.interval() == 10.0  # told to an agent
    long_grace = pace.grace()
    fleet.nodes = 200
    assert pace.interval() == 3.0  # told from now on
    # An agent told 10 s just before sleeps up to 11 s on it once more, then has its grace.
    clock.now += 11.0 + long_grace - 0.5
    assert pace.grace() == long_grace
    clock.now += 1.0
    assert pace.grace() == 8.0


def test_a_coordinator_remembers_what_it_told_when_it_becomes_the_leader() -> None:
    """Followers answer heartbeats too: the interval they told holds when one of them leads."""
    clock, fleet = Clock(100.0), Fleet(2000)
    follower = HeartbeatPace(3.0, 8.0, 100.0, fleet, max_interval=30.0, clock=clock)
    follower.interval()  # answered an agent: 20 s
    fleet.nodes = 100
    clock.now += 5.0
    assert follower.grace() == pytest.approx(8.0 * 20 / 3)  # not the 8 s of 100 nodes


async def test_the_node_lifecycle_judges_by_the_paced_grace_period() -> None:
    clock = Clock(1000.0)
    health = NodeHealth(clock)
    clock.now = 2000.0
    registry = RecordingRegistry()
    nodes = Nodes(ready_node("quiet", heartbeat=1980.0))  # silent for 20 s
    fleet = Fleet(1000)
    pace = HeartbeatPace(3.0, 8.0, 100.0, fleet, judged=health.judged_interval, clock=clock)
    health.told("quiet", pace.interval())
    lifecycle = NodeLifecycle(registry, nodes, health, grace=pace.grace_of, clock=clock)  # type: ignore[arg-type]
    await lifecycle.check()
    assert registry.updates == []  # told 10 s: 20 s is two heartbeats, within 26.7 s
    assert lifecycle.grace_for("quiet") == pytest.approx(26.67, abs=0.01)
    clock.now += 10.0
    await lifecycle.check()
    assert registry.updates == ["quiet"]


def test_each_node_is_judged_by_the_interval_it_may_be_sleeping_on() -> None:
    clock, fleet, health = Clock(100.0), Fleet(3000), NodeHealth(Clock(0.0))
    pace = HeartbeatPace(
        3.0, 8.0, 100.0, fleet, judged=health.judged_interval, max_interval=30.0, clock=clock
    )
    health.told("a", pace.interval())  # 30 s
    fleet.nodes = 500
    health.told("a", pace.interval())  # 5 s now, but it sleeps out the 30 s first
    assert pace.grace_of("a") == pytest.approx(80.0)
    health.told("a", pace.interval())  # it has heard 5 s and waited on it
    assert pace.grace_of("a") == pytest.approx(8.0 * 5 / 3)
    # A node this coordinator told nothing (a restart, an older coordinator's lease): the
    # longest interval told lately, then what the fleet's size gives.
    assert pace.grace_of("b") == pytest.approx(80.0)
    clock.now += 1.1 * 30 + 80 + 1
    assert pace.grace_of("b") == pytest.approx(8.0 * 5 / 3)


def test_the_interval_a_node_is_judged_by_travels_in_its_lease() -> None:
    """Another coordinator heard the node last: its lease says by what interval to judge it."""
    there, here = NodeHealth(Clock(0.0)), NodeHealth(Clock(0.0))
    there.told("a", 20.0)
    NodeLeases(None, here, write_interval=1.0)._seen("a", _value(1000.0, there.judged_interval["a"]))  # type: ignore[arg-type]
    assert (here.last_heartbeat["a"], here.judged_interval["a"]) == (1000.0, 20.0)
    # An older coordinator's lease has no interval: nothing known, the pace's fallback judges.
    NodeLeases(None, here, write_interval=1.0)._seen("b", b'{"renewTime": 1000.0}')  # type: ignore[arg-type]
    assert "b" not in here.judged_interval and here.last_heartbeat["b"] == 1000.0


def test_a_negative_rate_and_an_interval_past_the_agents_watchdog_are_refused_at_start() -> None:
    with pytest.raises(errors.InvalidArgument, match="max_heartbeats_per_second"):
        ServeConfig(max_heartbeats_per_second=-1).validate()
    with pytest.raises(errors.InvalidArgument, match="max_heartbeat_interval"):
        ServeConfig(max_heartbeat_interval=61).validate()
    with pytest.raises(errors.InvalidArgument, match="max_heartbeat_interval"):
        ServeConfig(max_heartbeat_interval=0).validate()
    # A fixed interval longer than the cap still starts, as before pacing.
    ServeConfig(heartbeat_interval=40, node_grace_period=100, max_heartbeats_per_second=0).validate()


def test_agents_take_a_told_interval_only_up_to_what_their_watchdog_allows() -> None:
    assert told_interval(10_000) == 10.0
    assert told_interval(2**31 - 1) == LONGEST_HEARTBEAT_INTERVAL
    assert told_interval(0) > 0
    # The worst turn: a 10 s call and a backoff of up to 1.2 intervals.
    assert loop_bounds(AgentConfig())["coordinator heartbeat loop"] > 1.2 * LONGEST_HEARTBEAT_INTERVAL + 10


async def test_a_status_that_keeps_changing_brings_heartbeats_no_sooner_than_half_an_interval() -> None:
    wobble = iter(range(1_000_000))

    def build_status() -> node_pb2.NodeStatus:
        status = node_pb2.NodeStatus()
        status.capacity.memory_bytes = next(wobble)  # a balloon driver at work
        return status

    link = CoordinatorLink(
        None,  # type: ignore[arg-type]  # no call is made: only the wait between heartbeats
        node_name="n1",
        node_labels={},
        build_status=build_status,
        manager=None,  # type: ignore[arg-type]
        reporter=None,  # type: ignore[arg-type]
        assignments=None,  # type: ignore[arg-type]
    )
    link.connected, link.status_check_interval = True, 0.05
    link._reported_status = significant(build_status())
    stop = asyncio.Event()
    for _ in range(2):
        began = time.monotonic()
        await link._wait_for_next_heartbeat(stop, 3.0)
        waited = time.monotonic() - began
        assert 1.5 <= waited < 3.0  # told early, but never sooner than half an interval
    link._reported_status = significant(node_pb2.NodeStatus())
    link._build_status = node_pb2.NodeStatus  # type: ignore[method-assign]  # now it holds still
    began = time.monotonic()
    await link._wait_for_next_heartbeat(stop, 1.0)
    assert time.monotonic() - began >= 1.0  # nothing new: the whole interval


def test_a_lease_is_due_when_the_interval_grows_and_never_looks_newer_than_its_heartbeat() -> None:
    health = NodeHealth(Clock(0.0))
    leases = NodeLeases(None, health, write_interval=15.0)  # type: ignore[arg-type]
    health.last_heartbeat["a"] = 1000.0006
    health.told("a", 10.0)
    leases._written["a"], leases._written_interval["a"] = 1000.0006, 10.0
    health.told("a", 30.0)  # the fleet grew: the leader must learn the longer interval now
    due = [n for n, _ in leases.due()]
    assert due == ["a"]
    # Its own echo, read back through the watch, is not newer than what was heard.
    leases._seen("a", _value(1000.0006, 30.0))
    assert health.last_heartbeat["a"] == 1000.0006 and health.judged_interval["a"] == 30.0
    # A newer lease from a coordinator that paces nothing: the interval known here is stale.
    leases._seen("a", b'{"renewTime": 1005.0}')
    assert "a" not in health.judged_interval
