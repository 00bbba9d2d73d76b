"""The overlay on real kernels: simulated hosts of the test bed, leases fed by hand.

Each Overlay runs the real drivers aimed at one host: `PyrouteNetlink` on a
worker thread that has joined the host's network namespace, and
`IptablesFirewall` through `nsenter --net`. Nothing here touches the root
namespace; a snapshot of it is compared at the end of every test.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.execute import AsyncioRunner
from agent.network import IptablesFirewall, Lease, Overlay, OverlayConfig, PyrouteNetlink, VtepInfo
from agent.runtime.base import PodNetworkSpec
from agent.runtime.docker import DockerRuntime
from agent.runtime.fake import FakeRuntime
from tests.integration.testbed import Host, TestBed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

Factory = Callable[..., TestBed]
NET = ipaddress.IPv4Network("10.100.0.0/16")
CONFIG = OverlayConfig(network=NET)


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def _root_snapshot() -> dict[str, object]:
    """The root namespace's links, routes and rules (packet counters stripped)."""
    counters = re.compile(r"(counter packets \d+ bytes \d+|\[\d+:\d+\])")
    links = json.loads(_sh("ip", "-j", "link", "show"))
    return {
        "links": sorted((link["ifname"], link.get("address")) for link in links),
        "routes": _sh("ip", "route", "show", "table", "all"),
        "iptables": _sh("iptables", "-S") + _sh("iptables", "-t", "nat", "-S"),
        "nft": counters.sub("", _sh("nft", "list", "ruleset")),
        "forwarding": _sh("sysctl", "net.ipv4.ip_forward"),
    }


@pytest.fixture(autouse=True)
def root_namespace_untouched() -> Iterator[None]:
    before = _root_snapshot()
    yield
    assert _root_snapshot() == before, "the root network namespace changed"


@dataclass
class Node:
    host: Host
    overlay: Overlay
    netlink: PyrouteNetlink
    subnet: ipaddress.IPv4Network
    vtep: VtepInfo | None = None

    @property
    def lease(self) -> Lease:
        assert self.vtep is not None
        return Lease(self.subnet, self.vtep.public_ip, self.vtep.vtep_mac, self.host.name)

    def sh(self, *argv: str) -> str:
        res = self.host.run(list(argv))
        assert res.returncode == 0, f"{argv}: {res.stderr}"
        return res.stdout


def make_node(host: Host, subnet: str, tmp: Path, runtime: object | None = None, **kwargs: object) -> Node:
    netlink = PyrouteNetlink(netns=host.netns_path)
    firewall = IptablesFirewall(AsyncioRunner(), command_prefix=["nsenter", f"--net={host.netns_path}", "--"])
    overlay = Overlay(
        netlink,
        firewall,
        runtime or FakeRuntime(),  # type: ignore[arg-type]
        subnet_env_path=tmp / host.name / "subnet.env",
        **kwargs,  # type: ignore[arg-type]
    )
    return Node(host, overlay, netlink, ipaddress.IPv4Network(subnet))


@pytest.fixture
async def nodes(testbed_factory: Factory, tmp_path: Path) -> AsyncIterator[list[Node]]:
    bed = testbed_factory(2, docker=False)
    made = [make_node(h, f"10.100.{i + 1}.0/24", tmp_path) for i, h in enumerate(bed.hosts)]
    try:
        yield made
    finally:
        for node in made:
            await node.netlink.close()


async def converge(nodes: Sequence[Node], coordinator: str) -> None:
    for node in nodes:
        node.vtep = await node.overlay.prepare(CONFIG, coordinator_ip=coordinator)
    leases = [n.lease for n in nodes]
    for node in nodes:
        report = await node.overlay.apply(CONFIG, node.lease, leases)
        assert report.ok, report.errors


def entries(node: Node) -> dict[str, object]:
    link = json.loads(node.sh("ip", "-d", "-j", "link", "show", "flannel.1"))[0]
    return {
        "ifindex": link["ifindex"],
        "address": link["address"],
        "routes": node.sh("ip", "route", "show"),
        "neigh": node.sh("ip", "neigh", "show", "dev", "flannel.1"),
        "fdb": node.sh("bridge", "fdb", "show", "dev", "flannel.1"),
        "addr": node.sh("ip", "-4", "addr", "show", "dev", "flannel.1"),
        "rules": node.sh("iptables", "-S") + node.sh("iptables", "-t", "nat", "-S"),
    }


def updated_ages(node: Node) -> list[int]:
    """Seconds since each neighbour and FDB entry of flannel.1 was last written."""
    neigh = re.findall(r"used \d+/\d+/(\d+)", node.sh("ip", "-s", "neigh", "show", "dev", "flannel.1"))
    fdb = re.findall(r"used \d+/(\d+)", node.sh("bridge", "-s", "fdb", "show", "dev", "flannel.1"))
    return [int(x) for x in neigh + fdb]


async def test_two_hosts_reach_each_other_over_vxlan(nodes: list[Node], tmp_path: Path) -> None:
    h0, h1 = nodes
    await converge(nodes, coordinator=h0.host.ip)  # h0 runs "the coordinator": its route is local
    for node, peer in ((h0, h1), (h1, h0)):
        assert node.vtep is not None and peer.vtep is not None
        assert (node.vtep.iface, node.vtep.public_ip, node.vtep.mtu) == ("eth0", node.host.ip, 1450)
        link = json.loads(node.sh("ip", "-d", "-j", "link", "show", "flannel.1"))[0]
        vxlan = link["linkinfo"]["info_data"]
        assert (vxlan["id"], vxlan["local"], vxlan["port"], vxlan["learning"]) == (
            1,
            node.host.ip,
            8472,
            False,
        )
        assert link["mtu"] == 1450 and link["address"] == node.vtep.vtep_mac and "UP" in link["flags"]
        assert f"inet {node.subnet.network_address}/32" in node.sh(
            "ip", "-4", "addr", "show", "dev", "flannel.1"
        )
        gw = peer.subnet.network_address
        assert f"{peer.subnet} via {gw} dev flannel.1 proto static onlink" in node.sh("ip", "route")
        assert f"{gw} lladdr {peer.vtep.vtep_mac} PERMANENT" in node.sh(
            "ip", "neigh", "show", "dev", "flannel.1"
        )
        fdb = node.sh("bridge", "fdb", "show", "dev", "flannel.1")
        assert f"{peer.vtep.vtep_mac} dst {peer.host.ip} self permanent" in fdb
        assert node.sh("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
        env = (tmp_path / node.host.name / "subnet.env").read_text()
        assert f"FLANNEL_SUBNET={node.subnet.network_address + 1}/24\n" in env and "FLANNEL_MTU=1450\n" in env
    assert h0.host.ping(str(h1.subnet.network_address), count=2)
    assert h1.host.ping(str(h0.subnet.network_address), count=2)
    rules = h0.sh("iptables", "-t", "nat", "-S")
    assert "-A POSTROUTING -m comment --comment atoll-overlay -j ATOLL-POSTRTG" in rules
    assert (
        "-A ATOLL-POSTRTG -s 10.100.0.0/16 -d 10.100.0.0/16 -m comment --comment atoll-overlay -j RETURN"
        in rules
    )
    filt = h0.sh("iptables", "-S")
    assert "-A DOCKER-USER -m comment --comment atoll-overlay -j ATOLL-FORWARD" in filt
    assert "-A FORWARD -j DOCKER-USER" in filt


async def test_second_apply_and_agent_restart_touch_nothing(nodes: list[Node], tmp_path: Path) -> None:
    h0, h1 = nodes
    await converge(nodes, coordinator=h1.host.ip)
    before = entries(h0)
    await asyncio.sleep(2.2)  # so that a rewritten neighbour or FDB entry would show a younger age

    again = await h0.overlay.apply(CONFIG, h0.lease, [h0.lease, h1.lease])
    assert again.commands == () and again.kept == 5 and not again.changed

    # The agent restarts: new driver, new socket and thread, new Overlay; same kernel.
    await h0.netlink.close()
    restarted = make_node(h0.host, str(h0.subnet), tmp_path, recheck_interval=0)
    vtep = await restarted.overlay.prepare(CONFIG, coordinator_ip=h1.host.ip)
    assert vtep == h0.vtep
    report = await restarted.overlay.apply(CONFIG, h0.lease, [h0.lease, h1.lease])
    await restarted.netlink.close()
    assert report.commands == () and report.firewall == () and not report.subnet_env_written
    assert report.kept == 5 and report.ok
    assert entries(h0) == before
    ages = updated_ages(h0)
    assert len(ages) == 2 and min(ages) >= 2, f"entries were rewritten: ages {ages}"
    assert h0.host.ping(str(h1.subnet.network_address))


async def test_peers_leave_change_and_stale_entries_go(nodes: list[Node]) -> None:
    h0, h1 = nodes
    await converge(nodes, coordinator=h1.host.ip)
    # Someone else's route on our device outside the overlay, and a stale one inside it.
    h0.sh("ip", "route", "add", "172.16.5.0/24", "dev", "flannel.1")
    h0.sh("ip", "route", "add", "10.100.9.0/24", "via", "10.100.9.0", "dev", "flannel.1", "onlink")
    h0.sh(
        "ip",
        "neigh",
        "add",
        "10.100.9.0",
        "lladdr",
        "0a:00:00:00:00:09",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    )
    h0.sh(
        "bridge",
        "fdb",
        "add",
        "0a:00:00:00:00:09",
        "dev",
        "flannel.1",
        "dst",
        "198.51.100.99",
        "self",
        "permanent",
    )

    report = await h0.overlay.apply(CONFIG, h0.lease, [h0.lease, h1.lease])
    assert (report.removed, report.added, report.updated) == (3, 0, 0)
    routes = h0.sh("ip", "route")
    assert "10.100.9.0" not in routes and "172.16.5.0/24 dev flannel.1" in routes
    assert "0a:00:00:00:00:09" not in h0.sh("bridge", "fdb", "show", "dev", "flannel.1")

    # The peer's public IP changes: its FDB entry is rewritten in place.
    assert h1.vtep is not None
    moved = Lease(h1.subnet, "198.51.100.77", h1.vtep.vtep_mac, "h1")
    report = await h0.overlay.apply(CONFIG, h0.lease, [h0.lease, moved])
    assert [c.split(" ")[:3] for c in report.commands] == [["bridge", "fdb", "replace"]]
    assert f"{h1.vtep.vtep_mac} dst 198.51.100.77 self permanent" in h0.sh(
        "bridge", "fdb", "show", "dev", "flannel.1"
    )
    await h0.overlay.apply(CONFIG, h0.lease, [h0.lease, h1.lease])
    assert h0.host.ping(str(h1.subnet.network_address))

    # The peer leaves.
    report = await h0.overlay.apply(CONFIG, h0.lease, [h0.lease])
    assert (report.removed, report.kept) == (3, 2)
    assert str(h1.subnet) not in h0.sh("ip", "route")
    assert h0.sh("ip", "neigh", "show", "dev", "flannel.1").strip() == ""
    assert h0.sh("bridge", "fdb", "show", "dev", "flannel.1").strip() == ""
    assert not h0.host.ping(str(h1.subnet.network_address), timeout=1)


async def test_device_parameters_recreate_mtu_does_not(nodes: list[Node]) -> None:
    h0, h1 = nodes
    await converge(nodes, coordinator=h1.host.ip)
    index = entries(h0)["ifindex"]
    smaller = OverlayConfig(network=NET, mtu=1400)
    report = await h0.overlay.apply(smaller, h0.lease, [h0.lease, h1.lease])
    assert report.commands == ("ip link set flannel.1 mtu 1400",) and report.kept == 4
    assert entries(h0)["ifindex"] == index

    other_port = OverlayConfig(network=NET, port=4789)
    report = await h0.overlay.apply(other_port, h0.lease, [h0.lease, h1.lease])
    assert report.commands[0] == "ip link del flannel.1" and report.added == 4
    link = json.loads(h0.sh("ip", "-d", "-j", "link", "show", "flannel.1"))[0]
    assert link["ifindex"] != index and link["linkinfo"]["info_data"]["port"] == 4789
    assert link["address"] == entries(h0)["address"]  # the MAC survives the recreation
    assert str(h1.subnet) in h0.sh("ip", "route")


async def test_apply_with_100_peers(nodes: list[Node], capsys: pytest.CaptureFixture[str]) -> None:
    h0 = nodes[0]
    h0.vtep = await h0.overlay.prepare(CONFIG, coordinator_ip="198.51.100.11")
    peers = [
        Lease(
            ipaddress.IPv4Network(f"10.100.{i}.0/24"),
            f"198.51.100.{100 + i}",
            f"0a:00:00:00:01:{i:02x}",
            f"n{i}",
        )
        for i in range(2, 102)
    ]
    t0 = time.monotonic()
    first = await h0.overlay.apply(CONFIG, h0.lease, [h0.lease, *peers])
    t1 = time.monotonic()
    noop = await h0.overlay.apply(CONFIG, h0.lease, [h0.lease, *peers])
    t2 = time.monotonic()
    gone = await h0.overlay.apply(CONFIG, h0.lease, [h0.lease])
    t3 = time.monotonic()
    assert first.added == 301 and first.ok and noop.commands == () and noop.kept == 302
    assert gone.removed == 300
    assert h0.sh("ip", "route").count("dev flannel.1") == 0
    with capsys.disabled():
        print(
            f"\noverlay apply, 100 peers: first {1000 * (t1 - t0):.0f} ms (kernel part "
            f"{1000 * first.seconds:.0f} ms), no-op {1000 * (t2 - t1):.1f} ms, "
            f"all leave {1000 * (t3 - t2):.0f} ms"
        )
    assert t2 - t1 < 1.0


async def test_noop_mode_changes_nothing_in_the_kernel(nodes: list[Node], tmp_path: Path) -> None:
    h0 = make_node(nodes[0].host, "10.100.1.0/24", tmp_path, noop=True)
    try:
        vtep = await h0.overlay.prepare(CONFIG, coordinator_ip="198.51.100.11")
        report = await h0.overlay.apply(CONFIG, Lease(h0.subnet, vtep.public_ip, vtep.vtep_mac), [])
    finally:
        await h0.netlink.close()
    assert report.noop and report.commands and report.firewall
    assert "flannel.1" not in h0.sh("ip", "link")
    assert "ATOLL" not in h0.sh("iptables-save")
    assert h0.sh("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"  # the bed sets it already


# -- with dockerd ---------------------------------------------------------------------------------


async def test_ensure_network_on_a_real_engine(testbed_factory: Factory) -> None:
    host = testbed_factory(1).hosts[0]
    runtime = DockerRuntime(host.docker_host)
    spec = PodNetworkSpec("atoll", "10.100.50.0/24", "10.100.50.1", 1450, bridge_name="atoll0")
    try:
        assert await runtime.ensure_network(spec) == "created"
        assert await runtime.ensure_network(spec) == "unchanged"
        net = host.docker().networks.get("atoll")
        assert net.attrs["IPAM"]["Config"] == [{"Subnet": "10.100.50.0/24", "Gateway": "10.100.50.1"}]
        assert net.attrs["Options"]["com.docker.network.driver.mtu"] == "1450"
        assert net.attrs["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert "atoll0" in host.run(["ip", "link", "show", "atoll0"]).stdout
        assert "10.100.50.0/24" not in host.run(["iptables", "-t", "nat", "-S"]).stdout  # we masquerade

        bigger = PodNetworkSpec("atoll", "10.100.50.0/24", "10.100.50.1", 1400)
        assert await runtime.ensure_network(bigger) == "recreated"
        container = host.docker().containers.run(
            "atoll/busybox", ["sleep", "600"], network="atoll", detach=True
        )
        container.reload()
        assert container.attrs["NetworkSettings"]["Networks"]["atoll"]["IPAddress"].startswith("10.100.50.")
        moved = PodNetworkSpec("atoll", "10.100.51.0/24", "10.100.51.1", 1400)
        assert await runtime.ensure_network(moved) == "in-use-mismatch"
        assert host.docker().networks.get("atoll").attrs["IPAM"]["Config"][0]["Subnet"] == "10.100.50.0/24"
        container.stop(timeout=0)  # a stopped container still holds its network
        assert await runtime.ensure_network(moved) == "in-use-mismatch"
        container.remove()
        assert await runtime.ensure_network(moved) == "recreated"
        await runtime.remove_network("atoll")
        await runtime.remove_network("atoll")
        assert not host.docker().networks.list(names=["atoll"])
    finally:
        await runtime.close()


_PEER_LOGGER = r"""
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, peer = srv.accept()
    print("peer", peer[0], flush=True)
    conn.close()
"""


async def test_pods_on_two_docker_hosts(testbed_factory: Factory, tmp_path: Path) -> None:
    """Docker's FORWARD policy is DROP: our DOCKER-USER rules let the overlay through,
    pods see each other's real address and are masqueraded only outside the overlay."""
    bed = testbed_factory(2)
    runtimes = [DockerRuntime(h.docker_host) for h in bed.hosts]
    nodes = [
        make_node(h, f"10.100.{i + 1}.0/24", tmp_path, rt, recheck_interval=0)
        for i, (h, rt) in enumerate(zip(bed.hosts, runtimes, strict=True))
    ]
    try:
        for node in nodes:
            # What dockerd does on a host where it had to turn forwarding on itself
            # (the bed turns it on first, so its dockerds leave the policy alone).
            node.sh("iptables", "-P", "FORWARD", "DROP")
        await converge(nodes, coordinator=bed.hosts[0].ip)
        pods = []
        for node in nodes:
            c = node.host.docker().containers.run(
                "atoll/busybox", ["sleep", "600"], network="atoll", detach=True
            )
            c.reload()
            pods.append((c, c.attrs["NetworkSettings"]["Networks"]["atoll"]["IPAddress"]))
        (c0, ip0), (c1, ip1) = pods
        assert ip0.startswith("10.100.1.") and ip1.startswith("10.100.2.")
        assert c0.exec_run(["ping", "-c", "2", "-W", "2", ip1]).exit_code == 0
        assert c1.exec_run(["ping", "-c", "2", "-W", "2", ip0]).exit_code == 0

        # Without our accept rules docker's DROP policy stops new connections into h1's pods;
        # the next apply puts them back.
        jump = ["DOCKER-USER", "-m", "comment", "--comment", "atoll-overlay", "-j", "ATOLL-FORWARD"]
        nodes[1].sh("iptables", "-D", *jump)
        assert c0.exec_run(["ping", "-c", "1", "-W", "1", ip1]).exit_code != 0
        report = await nodes[1].overlay.apply(CONFIG, nodes[1].lease, [n.lease for n in nodes])
        assert report.firewall == ("filter: -I DOCKER-USER 1 " + " ".join(jump[1:]),)
        assert c0.exec_run(["ping", "-c", "2", "-W", "2", ip1]).exit_code == 0

        # Inside the overlay the source address is the pod's own.
        h1 = nodes[1].host
        listener = h1.spawn([sys.executable, "-c", _PEER_LOGGER, "0.0.0.0", "9000"], label="peerlog")
        wait_for(lambda: "listening" in listener.log_tail(), timeout=10, message="listener")
        assert c0.exec_run(["sh", "-c", "echo hi | nc -w 2 10.100.2.0 9000"]).exit_code == 0
        assert c0.exec_run(["sh", "-c", f"echo hi | nc -w 2 {h1.ip} 9000"]).exit_code == 0
        wait_for(lambda: listener.log_tail().count("peer ") >= 2, timeout=10, message="two connections")
        peers = re.findall(r"peer (\S+)", listener.log_tail())
        assert peers == [ip0, nodes[0].host.ip], "inside: real pod IP; outside the overlay: masqueraded"
    finally:
        for node in nodes:
            await node.netlink.close()
        for rt in runtimes:
            await rt.close()
