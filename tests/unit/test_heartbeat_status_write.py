"""A heartbeat's node status write never holds the heartbeat's answer for long."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coordinator.api.node import service
from coordinator.api.node.service import NodeServicer
from coordinator.controllers.nodelifecycle import NodeHealth


class SlowRegistry:
    """A store whose queue is full: each write lands when the test says so."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.writes = 0

    async def guaranteed_update(self, info: Any, namespace: str, name: str, mutate: Any) -> object:
        self.writes += 1
        await self.release.wait()
        return object()


def servicer(registry: SlowRegistry) -> NodeServicer:
    node_api = NodeServicer.__new__(NodeServicer)  # only what _write_status touches
    node_api._registry = registry  # type: ignore[assignment]
    node_api._health = NodeHealth(lambda: 100.0)
    node_api._status_writes = {}
    return node_api


async def test_a_slow_write_answers_the_heartbeat_and_lands_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "STATUS_WRITE_WAIT", 0.05)
    registry = SlowRegistry()
    node_api = servicer(registry)
    await asyncio.wait_for(node_api._write_status("n1", lambda o: True, 100.0), 1.0)
    assert "n1" in node_api._status_writes and "n1" not in node_api._health.last_status_write
    # The next heartbeat does not queue a second write for the same node.
    await asyncio.wait_for(node_api._write_status("n1", lambda o: True, 103.0), 1.0)
    assert registry.writes == 1
    registry.release.set()
    for _ in range(100):
        if "n1" not in node_api._status_writes:
            break
        await asyncio.sleep(0.01)
    assert node_api._health.last_status_write["n1"] == 100.0


async def test_a_quick_write_is_waited_for() -> None:
    registry = SlowRegistry()
    registry.release.set()
    node_api = servicer(registry)
    await node_api._write_status("n1", lambda o: True, 100.0)
    assert node_api._health.last_status_write["n1"] == 100.0 and not node_api._status_writes
