"""SR-IOV on the multi-host test bed: real agents on the fake NIC, VFs that carry traffic by VLAN.

Each worker's agent runs with ``--sriov-driver fake --sriov-fake-netdevs``: 4 VFs on a fake
PF, each a veth stand-in moved into pods by the real link driver, its switch port in one
bridge per VLAN, VLANs joined across hosts by a VXLAN fabric on the underlay. Pods find each
other on their VLAN over `net1` and not across VLANs, beside a working overlay.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable

import pytest

from agent.sriov.model import CLEAN
from atoll import kinds
from atoll.v1 import pod_pb2, sriov_pb2
from tests.integration.cluster import Cluster, pinned_pod, start_cluster
from tests.integration.daemons import eventually, wait_running
from tests.integration.testbed import TestBed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
NODE = kinds.by_name("Node")
POD = kinds.by_name("Pod")

SRIOV_ARGS = (
    "--sriov-pfs", "ens1f0:4",
    "--sriov-driver", "fake",
    "--sysfs-root", "{host_dir}/sys",
    "--sriov-fake-netdevs",
    "--sriov-fake-fabric", "eth0",
)  # fmt: skip


@pytest.fixture
async def two(testbed_factory: Callable[..., TestBed]) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(testbed_factory, 2, agent_args=SRIOV_ARGS)
    try:
        yield cluster
    finally:
        await cluster.close()


def network(name: str, vlan: int) -> sriov_pb2.SriovNetwork:
    net = sriov_pb2.SriovNetwork()
    net.metadata.name = name
    net.spec.resource_name = "atoll.io/sriov_ens1f0"
    net.spec.vlan = vlan
    net.spec.ipam.type = "static"
    return net


def vf_pod(name: str, node: str, net: str, ip: str) -> pod_pb2.Pod:
    pod = pinned_pod(name, node)
    pod.spec.networks.add(name=net, interface="net1", ips=[f"{ip}/24"])
    return pod


async def vf_links(cluster: Cluster, i: int) -> dict[str, dict[str, object]]:
    out = await cluster.sh(i, "ip", "-j", "-d", "addr", "show")
    return {link["ifname"]: link for link in json.loads(out) if link["ifname"].startswith("ens1f0")}


async def test_pods_on_one_vlan_reach_each_other_and_no_one_else(two: Cluster) -> None:
    c = two.client
    for i in range(2):
        node = await c.get(NODE, "", two.node(i))
        assert dict(node.status.allocatable.extended) == {"atoll.io/sriov_ens1f0": 4}  # type: ignore[attr-defined]
    await c.create(network("vlan100", 100))
    await c.create(network("vlan200", 200))
    await c.create(vf_pod("a", two.node(0), "vlan100", "10.56.0.1"))
    await c.create(vf_pod("b", two.node(1), "vlan100", "10.56.0.2"))
    await c.create(vf_pod("c", two.node(1), "vlan200", "10.56.0.3"))
    a, b, _ = [await wait_running(c, name) for name in ("a", "b", "c")]

    async def ping(target: str) -> int:
        code, _ = await two.pod_exec(0, a, "ping", "-c", "2", "-W", "2", target)
        return code

    async def reaches_b() -> bool:
        return await ping("10.56.0.2") == 0

    assert await eventually(reaches_b, timeout=30, what="a -> b over net1 on VLAN 100")
    # (busybox wget -T crashes in these images: bounded by timeout(1), as in test_proxy_kernel)
    code, page = await two.pod_exec(0, a, "timeout", "5", "wget", "-qO-", "http://10.56.0.2/")
    assert code == 0 and "Apache" in page, page  # HTTP to b's httpd over net1
    assert await ping("10.56.0.3") != 0, "a reached c across VLANs"
    assert await ping(b.status.pod_ip) == 0, "the overlay beside net1 stopped working"

    # docker rm -f of b's infra container: its namespace goes (a NIC's VF would come home by
    # itself; the stand-in dies with it and the fake NIC makes it again). The agent releases the
    # old VF clean, recreates the sandbox and attaches a VF there: a reaches b again.
    docker = two.workers[1].docker()
    (infra,) = docker.containers.list(
        filters={"label": [f"io.atoll.pod.uid={b.metadata.uid}", "io.atoll.container.name=POD"]}
    )
    infra.remove(force=True)
    await eventually(reaches_b, timeout=60, what="a -> b again after b's sandbox was recreated")
    restarted = await c.get(POD, "default", "b")
    assert restarted.status.container_statuses[0].restart_count >= 1  # type: ignore[attr-defined]

    # Deleting a returns its VF home: its own name, no address, down, the port back on VLAN 0.
    assert len([n for n in await vf_links(two, 0) if n.startswith("ens1f0v")]) == 3  # one is in pod a
    await c.delete(POD, "default", "a")

    async def home() -> bool:
        links = await vf_links(two, 0)
        vfs = [link for name, link in links.items() if name.startswith("ens1f0v")]
        return len(vfs) == 4 and all(not link["addr_info"] for link in vfs)

    await eventually(home, timeout=60, what="a's VF home and clean")
    ports = [
        link["ifname"] for link in json.loads(await two.sh(0, "ip", "-j", "link", "show", "master", "svl100"))
    ]
    assert ports == ["svx100"], f"a's switch port is still on VLAN 100: {ports}"  # only the fabric is left


async def test_kill_9_during_attach_and_release_leaves_the_pool_as_it_started(two: Cluster) -> None:
    """20 cycles of create and delete with the agent killed -9 between (and so often in the middle
    of an attach or a release): afterwards no VF is held twice, none is leaked, all are clean."""
    c = two.client
    await c.create(network("vlan100", 100))
    agent = two.agents[two.node(0)]
    state = two.workers[0].dir / "agent" / "sriov" / "allocations.json"
    for cycle in range(20):
        name = f"p{cycle}"
        await c.create(vf_pod(name, two.node(0), "vlan100", f"10.56.1.{cycle + 1}"))
        if cycle % 2:
            await wait_running(c, name)  # a release is interrupted below, not the attach
        await c.delete(POD, "default", name)
        agent.kill()
        agent.start()
    await eventually(lambda: _gone(two), timeout=90, what="every pod gone")

    async def clean() -> bool:
        held = json.loads(state.read_text())["allocations"] if state.exists() else []
        links = await vf_links(two, 0)
        vfs = [link for name, link in links.items() if name.startswith("ens1f0v")]
        return not held and len(vfs) == 4 and all(not link["addr_info"] for link in vfs)

    await eventually(clean, timeout=90, what="every VF released, home and clean")
    settings = json.loads((two.workers[0].dir / "sys" / "atoll-fake-vf-settings.json").read_text())
    clean = dataclasses.asdict(CLEAN)  # VLAN 0, no MAC, spoofchk on, trust off, link auto, no rate
    assert [item["settings"] for item in settings] == [clean] * len(settings), settings
    ports = [
        link["ifname"] for link in json.loads(await two.sh(0, "ip", "-j", "link", "show", "master", "svl100"))
    ]
    assert ports == ["svx100"], ports
    node = await c.get(NODE, "", two.node(0))
    assert dict(node.status.allocatable.extended) == {"atoll.io/sriov_ens1f0": 4}  # type: ignore[attr-defined]


async def _gone(cluster: Cluster) -> bool:
    items, _ = await cluster.client.list(POD)
    return not items


async def test_a_pod_that_finds_every_vf_taken_waits_and_names_the_resource(two: Cluster) -> None:
    c = two.client
    await c.create(network("vlan100", 100))
    for i in range(5):
        pod = vf_pod(f"q{i}", "", "vlan100", f"10.56.2.{i + 1}")
        pod.spec.node_name = ""
        pod.spec.node_selector["kubernetes.io/hostname"] = two.node(0)
        await c.create(pod)

    async def four_running_one_waiting() -> str:
        pods = [await c.get(POD, "default", f"q{i}") for i in range(5)]
        phases = sorted(p.status.phase for p in pods)  # type: ignore[attr-defined]
        waiting = [p for p in pods if p.status.phase == pod_pb2.POD_PHASE_PENDING and not p.spec.node_name]  # type: ignore[attr-defined]
        if phases.count(pod_pb2.POD_PHASE_RUNNING) != 4 or len(waiting) != 1:
            return ""
        return next((x.message for x in waiting[0].status.conditions if x.type == "PodScheduled"), "")  # type: ignore[attr-defined]

    message = await eventually(four_running_one_waiting, timeout=90, what="four Running, one Pending")
    assert "1 insufficient atoll.io/sriov_ens1f0" in message, message
