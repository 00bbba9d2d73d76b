"""Heartbeats paced to the fleet's size (Nomad's max_heartbeats_per_second), and the grace
period that stretches with them."""

from __future__ import annotations

import pytest

from atoll import errors
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
    pace = HeartbeatPace(3.0, 8.0, 100.0, fleet, clock=Clock(0.0))
    assert (pace.interval(), pace.interval_ms(), pace.grace()) == (3.0, 3000, 8.0)
    fleet.nodes = 1000  # 333 heartbeats a second at 3 s: stretched to 100
    assert pace.interval() == 10.0 and pace.grace() == pytest.approx(8.0 * 10 / 3)
    fleet.nodes = 5000
    assert pace.interval_ms() == 50_000 and pace.grace() == pytest.approx(8.0 * 50 / 3)


def test_rate_zero_keeps_the_interval_whatever_the_fleet() -> None:
    pace = HeartbeatPace(3.0, 8.0, 0.0, Fleet(100_000))
    assert (pace.interval(), pace.grace()) == (3.0, 8.0)


def test_a_shrinking_fleet_keeps_the_long_grace_until_every_agent_heard_the_short_interval() -> None:
    clock, fleet = Clock(100.0), Fleet(1000)
    pace = HeartbeatPace(3.0, 8.0, 100.0, fleet, clock=clock)
    long_grace = pace.grace()  # agents are being told 10 s
    fleet.nodes = 200
    assert pace.interval() == 3.0  # told from now on
    # An agent told 10 s just before may stay silent that long: its grace holds.
    clock.now += long_grace - 0.5
    assert pace.grace() == long_grace
    clock.now += 1.0
    assert pace.grace() == 8.0


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


def test_a_negative_rate_is_refused_at_start() -> None:
    with pytest.raises(errors.InvalidArgument, match="max_heartbeats_per_second"):
        ServeConfig(max_heartbeats_per_second=-1).validate()
