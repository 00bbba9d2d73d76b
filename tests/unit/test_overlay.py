"""Overlay on recording fakes: underlay detection, prepare/apply, restarts, extras, the engine network."""

from __future__ import annotations

import pathlib

import pytest

from agent.network import plan
from agent.network.fake import FakeNetlink
from agent.network.model import Interface, OverlayConfig, OverlayError, RouteTo, Underlay
from agent.network.overlay import render_subnet_env
from agent.network.underlay import detect_underlay
from agent.runtime.base import ContainerSpec, PodNetworkSpec
from agent.runtime.docker import DockerRuntime
from agent.runtime.fake import FakeRuntime
from tests.unit.overlay_helpers import CONFIG, NET, OWN, Clock, lease, link_state, make_overlay

# -- underlay -------------------------------------------------------------------------------------

IFACES = (
    Interface("lo", 1, 65536, loopback=True, addresses=("127.0.0.1/8",)),
    Interface("eth0", 2, 1500, addresses=("198.51.100.10/24",)),
    Interface("eth1", 3, 9000, addresses=("203.0.113.5/24",)),
)


async def test_underlay_is_the_route_to_the_coordinator() -> None:
    nl = FakeNetlink(IFACES, routes_to={"203.0.113.1": RouteTo("eth1", "203.0.113.5")})
    assert await detect_underlay(nl, "203.0.113.1") == Underlay("eth1", "203.0.113.5", "203.0.113.5", 9000)


async def test_underlay_when_the_coordinator_runs_here() -> None:
    nl = FakeNetlink(IFACES)
    assert (await detect_underlay(nl, "198.51.100.10")).iface == "eth0"
    with pytest.raises(OverlayError, match="no default route"):
        await detect_underlay(nl, "127.0.0.1")
    nl.default_iface = "eth1"
    assert (await detect_underlay(nl, "127.0.0.1")).iface == "eth1"
    with pytest.raises(OverlayError, match="no default route"):
        await detect_underlay(FakeNetlink(IFACES), "192.168.77.1")


async def test_underlay_overrides() -> None:
    nl = FakeNetlink(IFACES)
    assert await detect_underlay(nl, "x", iface="eth1") == Underlay(
        "eth1", "203.0.113.5", "203.0.113.5", 9000
    )
    assert (await detect_underlay(nl, "x", public_ip="203.0.113.5")).iface == "eth1"
    natted = await detect_underlay(nl, "x", iface="eth0", public_ip="203.0.113.77")
    assert (natted.local_ip, natted.public_ip) == ("198.51.100.10", "203.0.113.77")
    with pytest.raises(OverlayError, match="1:1 NAT"):
        await detect_underlay(nl, "x", public_ip="203.0.113.77")
    with pytest.raises(OverlayError, match="does not exist"):
        await detect_underlay(nl, "x", iface="wlan0")


# -- Overlay on the fakes -------------------------------------------------------------------------


async def test_prepare_creates_the_device_before_any_lease(tmp_path: pathlib.Path) -> None:
    overlay, nl, _, _ = make_overlay(tmp_path)
    vtep = await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    assert vtep.public_ip == "198.51.100.10" and vtep.iface == "eth0" and vtep.mtu == 1450
    assert vtep.vtep_mac == plan.vtep_mac("198.51.100.10", 1) == nl.links["flannel.1"].mac
    assert nl.links["flannel.1"].up and nl.sysctls["net.ipv4.ip_forward"] == "1"
    assert not nl.routes and "flannel.1" not in nl.addresses
    with pytest.raises(OverlayError, match="before prepare"):
        await make_overlay(tmp_path)[0].apply(CONFIG, OWN, [])


async def test_apply_converges_then_costs_one_dump(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    overlay, nl, firewall, runtime = make_overlay(tmp_path, clock=clock)
    await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    first = await overlay.apply(CONFIG, OWN, [OWN, lease(1), lease(2)])
    assert (first.added, first.removed, first.updated, first.kept) == (7, 0, 0, 1)  # the link was kept
    assert first.ok and first.changed and first.network == "created" and first.subnet_env_written
    assert firewall.transactions and runtime.networks["atoll"] == PodNetworkSpec(
        name="atoll", subnet="10.100.0.0/24", gateway="10.100.0.1", mtu=1450, bridge_name="atoll0"
    )
    env = (tmp_path / "run/flannel/subnet.env").read_text()
    assert env == render_subnet_env(CONFIG, OWN, 1450)
    assert (
        env
        == "FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )

    writes, dumps, fw_dumps, runtime_calls = len(nl.writes()), nl.dumps, firewall.dumps, len(runtime.calls)
    snap = nl.snapshot()
    again = await overlay.apply(CONFIG, OWN, [OWN, lease(1), lease(2)])
    assert (again.added, again.removed, again.updated, again.kept) == (0, 0, 0, 8)
    assert not again.changed and again.commands == ()
    assert len(nl.writes()) == writes and nl.dumps == dumps + 1 and nl.snapshot() == snap
    assert firewall.dumps == fw_dumps and len(runtime.calls) == runtime_calls

    # Past the recheck interval the extras are looked at again, and repaired if needed.
    firewall.tables["nat"]["POSTROUTING"].clear()
    clock.now += 61
    repaired = await overlay.apply(CONFIG, OWN, [OWN, lease(1), lease(2)])
    assert repaired.firewall == ("nat: -I POSTROUTING 1 -m comment --comment atoll-overlay -j ATOLL-POSTRTG",)
    assert repaired.network == "unchanged" and not repaired.subnet_env_written and repaired.commands == ()


async def test_restarted_agent_converges_without_touching_entries(tmp_path: pathlib.Path) -> None:
    overlay, nl, firewall, runtime = make_overlay(tmp_path)
    await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    await overlay.apply(CONFIG, OWN, [lease(1), lease(2), lease(3)])
    snap, writes, transactions = nl.snapshot(), len(nl.writes()), len(firewall.transactions)
    link = nl.links["flannel.1"]

    # A new agent: new objects, the same kernel, firewall and engine.
    restarted, *_ = make_overlay(tmp_path, nl, firewall, runtime)
    vtep = await restarted.prepare(CONFIG, coordinator_ip="198.51.100.10")
    assert vtep.vtep_mac == link.mac
    report = await restarted.apply(CONFIG, OWN, [lease(1), lease(2), lease(3)])
    assert report.kept == 11 and not report.changed and report.network == "unchanged"
    assert nl.links["flannel.1"] is link and nl.snapshot() == snap
    assert len(nl.writes()) == writes and len(firewall.transactions) == transactions


async def test_existing_device_keeps_its_mac_and_a_stale_lease_is_reported(tmp_path: pathlib.Path) -> None:
    overlay, nl, _, _ = make_overlay(tmp_path)
    await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    nl.links["flannel.1"] = link_state(index=nl.links["flannel.1"].index, mac="0a:bb:cc:dd:ee:ff")
    vtep = await make_overlay(tmp_path, nl)[0].prepare(CONFIG, coordinator_ip="198.51.100.10")
    assert vtep.vtep_mac == "0a:bb:cc:dd:ee:ff"
    report = await overlay.apply(CONFIG, OWN, [lease(1)])
    assert "VTEP MAC" in report.lease_mismatch
    ok = await overlay.apply(CONFIG, lease(0, mac="0a:bb:cc:dd:ee:ff", ip="198.51.100.10"), [lease(1)])
    assert ok.lease_mismatch == ""


async def test_kernel_errors_are_reported_and_retried(tmp_path: pathlib.Path) -> None:
    overlay, nl, _, _ = make_overlay(tmp_path)
    await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    nl.fail["ip neigh replace 10.100.1.0"] = "Invalid argument"
    report = await overlay.apply(CONFIG, OWN, [lease(1), lease(2)])
    assert not report.ok and report.errors == (
        "ip neigh replace 10.100.1.0 lladdr 0a:00:00:00:00:01 dev flannel.1 nud permanent: Invalid argument",
    )
    assert ("flannel.1", "10.100.2.0") in nl.neighbours  # the rest went ahead
    nl.fail.clear()
    retry = await overlay.apply(CONFIG, OWN, [lease(1), lease(2)])
    assert retry.ok and retry.added == 1


async def test_engine_network_in_use_with_the_wrong_subnet_is_kept(tmp_path: pathlib.Path) -> None:
    runtime = FakeRuntime(images=("pause",))
    old = PodNetworkSpec("atoll", "10.100.9.0/24", "10.100.9.1", 1450)
    assert await runtime.ensure_network(old) == "created"
    cid = await runtime.create_container(
        ContainerSpec(name="infra", image="pause", labels={}, network="atoll")
    )
    assert runtime.containers[cid].ip == "10.100.9.2"
    overlay, *_ = make_overlay(tmp_path, runtime=runtime)
    await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    report = await overlay.apply(CONFIG, OWN, [])
    assert report.network == "in-use-mismatch" and "in use" in report.errors[0]
    assert runtime.networks["atoll"] == old
    await runtime.remove_container(cid)
    assert (await overlay.apply(CONFIG, OWN, [])).network == "recreated"
    assert runtime.networks["atoll"].subnet == "10.100.0.0/24"


async def test_vni_change_retires_the_old_device(tmp_path: pathlib.Path) -> None:
    overlay, nl, _, _ = make_overlay(tmp_path)
    await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    await overlay.apply(CONFIG, OWN, [lease(1)])
    vni2 = OverlayConfig(network=NET, vni=2)
    report = await overlay.apply(vni2, OWN, [lease(1)])
    assert report.commands[0] == "ip link del flannel.1" and set(nl.links) == {"flannel.2"}
    assert "VTEP MAC" in report.lease_mismatch  # the new device has a new MAC: renew the lease


async def test_disable_removes_device_rules_and_subnet_env(tmp_path: pathlib.Path) -> None:
    overlay, nl, firewall, runtime = make_overlay(tmp_path)
    await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    await overlay.apply(CONFIG, OWN, [lease(1)])
    await overlay.disable(CONFIG)
    assert nl.links == {} and nl.routes == {} and nl.fdb == {}
    assert "ATOLL-POSTRTG" not in firewall.tables["nat"] and "ATOLL-FORWARD" not in firewall.tables["filter"]
    assert not (tmp_path / "run/flannel/subnet.env").exists() and "atoll" in runtime.networks


# -- the engine network ---------------------------------------------------------------------------


async def test_fake_runtime_ensure_network_is_idempotent() -> None:
    runtime = FakeRuntime()
    spec = PodNetworkSpec("atoll", "10.100.3.0/24", "10.100.3.1", 1450)
    assert await runtime.ensure_network(spec) == "created"
    assert await runtime.ensure_network(spec) == "unchanged"
    assert (
        await runtime.ensure_network(PodNetworkSpec("atoll", "10.100.3.0/24", "10.100.3.1", 1400))
        == "recreated"
    )
    await runtime.remove_network("atoll")
    await runtime.remove_network("atoll")
    assert runtime.networks == {}


def test_docker_network_mismatch() -> None:
    spec = PodNetworkSpec("atoll", "10.100.3.0/24", "10.100.3.1", 1450)
    inspected = {
        "Driver": "bridge",
        "IPAM": {"Config": [{"Subnet": "10.100.3.0/24", "Gateway": "10.100.3.1"}]},
        "Options": {
            "com.docker.network.driver.mtu": "1450",
            "com.docker.network.bridge.name": "atoll0",
            "com.docker.network.bridge.enable_ip_masquerade": "false",
        },
    }
    assert DockerRuntime.network_mismatch(inspected, spec) == []
    inspected["Options"] = {
        "com.docker.network.driver.mtu": "1500",
        "com.docker.network.bridge.name": "atoll0",
    }
    wrong = DockerRuntime.network_mismatch(inspected, spec)
    assert (
        len(wrong) == 2 and wrong[0].startswith("mtu '1500'") and wrong[1].startswith("ip masquerade 'true'")
    )
