"""Heartbeats paced to the fleet's size (Nomad's max_heartbeats_per_second), and the grace
period that stretches with them."""

from __future__ import annotations

import pytest

from agent.link import told_interval
from agent.service import loop_bounds
from atoll import errors
from atoll.agentconfig import LONGEST_HEARTBEAT_INTERVAL, AgentConfig
from coordinator.config import ServeConfig
from coordinator.controllers.heartbeatpace import HeartbeatPace
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
    pace = HeartbeatPace(3.0, 8.0, 100.0, fleet, clock=clock)
    lifecycle = NodeLifecycle(registry, nodes, health, grace=pace.grace, clock=clock)  # type: ignore[arg-type]
    await lifecycle.check()
    assert registry.updates == []  # told 10 s: 20 s is two heartbeats, within 26.7 s
    assert lifecycle.grace == pytest.approx(26.67, abs=0.01)
    fleet.nodes = 10
    clock.now += 30.0  # the long interval's grace has passed since it was last told
    await lifecycle.check()
    assert registry.updates == ["quiet"]


def test_a_negative_rate_and_an_interval_past_the_agents_watchdog_are_refused_at_start() -> None:
    with pytest.raises(errors.InvalidArgument, match="max_heartbeats_per_second"):
        ServeConfig(max_heartbeats_per_second=-1).validate()
    with pytest.raises(errors.InvalidArgument, match="max_heartbeat_interval"):
        ServeConfig(max_heartbeat_interval=61).validate()
    with pytest.raises(errors.InvalidArgument, match="max_heartbeat_interval"):
        ServeConfig(max_heartbeat_interval=2).validate()


def test_agents_take_a_told_interval_only_up_to_what_their_watchdog_allows() -> None:
    assert told_interval(10_000) == 10.0
    assert told_interval(2**31 - 1) == LONGEST_HEARTBEAT_INTERVAL
    assert loop_bounds(AgentConfig())["coordinator heartbeat loop"] > 1.1 * LONGEST_HEARTBEAT_INTERVAL + 10
