"""Hairpin mode on pod-bridge ports without a poll (agent.network.node.NodeNetworking.run): a
sandbox that got its port wakes the loop at once, and so does a config that moved the pods to
another bridge (the overlay coming up after a restart let pods start on the saved network)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import types
from typing import Any

from agent.network.fake import FakeNetlink
from agent.network.node import NodeNetworking
from atoll.v1 import node_api_pb2


@dataclasses.dataclass
class Ctx:
    pod_network: str


class Syncer:
    """What NodeNetworking needs of the pod syncer: its render context and the sandbox hook."""

    def __init__(self) -> None:
        self.ctx = Ctx("bridge")
        self.on_sandbox_started: Any = None


def networking(tmp_path: pathlib.Path, netlink: Netlink, syncer: Syncer) -> NodeNetworking:
    state = tmp_path / "network.json"
    state.write_text(json.dumps({"pod_network": "atoll", "lease_cidr": "10.244.3.0/24"}))
    unused: Any = None
    node = NodeNetworking(
        runtime=unused,
        syncer=syncer,  # type: ignore[arg-type]
        gate=asyncio.Event(),
        state_file=state,
        default_pod_network="bridge",
        mode="vxlan",
        coordinator_host="127.0.0.1",
        netlink=lambda: netlink,
        firewall=lambda: unused,
    )
    node.restore()
    return node


class Netlink(FakeNetlink):
    """The recording fake netlink, telling each time a bridge's ports were put in hairpin mode."""

    def __init__(self) -> None:
        super().__init__()
        self.hairpinned = asyncio.Event()

    async def set_hairpin(self, bridge: str) -> int:
        changed = await super().set_hairpin(bridge)
        self.hairpinned.set()
        return changed

    async def next_hairpin(self, timeout: float = 5.0) -> str:
        await asyncio.wait_for(self.hairpinned.wait(), timeout)
        self.hairpinned.clear()
        return self.hairpin_bridges[-1]


async def test_a_sandbox_port_and_a_new_bridge_wake_the_loop_at_once(tmp_path: pathlib.Path) -> None:
    netlink, syncer = Netlink(), Syncer()
    node = networking(tmp_path, netlink, syncer)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop, period=3600))  # no resync within the test
    try:
        syncer.on_sandbox_started()  # a pod started right after the agent did, before any config
        assert await netlink.next_hairpin() == "docker0"

        async def overlay_up(config: node_api_pb2.NodeConfig) -> None:
            node.overlay = types.SimpleNamespace(bridge_name="atoll0")  # type: ignore[assignment]

        node._apply = overlay_up  # type: ignore[method-assign]
        await node.on_config(node_api_pb2.NodeConfig(), lambda *a: None)  # type: ignore[arg-type]
        assert await netlink.next_hairpin() == "atoll0"
        # The same bridge again: nothing to do until the next sandbox.
        await node.on_config(node_api_pb2.NodeConfig(), lambda *a: None)  # type: ignore[arg-type]
        syncer.on_sandbox_started()
        assert await netlink.next_hairpin() == "atoll0"
        assert netlink.hairpin_bridges == ["docker0", "atoll0", "atoll0"]
    finally:
        stop.set()
        await task
