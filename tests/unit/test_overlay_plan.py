"""The overlay as data: rendering and diffing against the recording fakes, firewall rules, noop mode."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import pathlib

import pytest

from agent.execute import Call, RecordingRunner
from agent.network import firewall as fw
from agent.network import plan
from agent.network.fake import FakeFirewall, FakeNetlink
from agent.network.model import FdbEntry, KernelState, Lease, Neighbour, OverlayConfig, OverlayError, Route
from atoll.v1 import network_pb2
from tests.unit.overlay_helpers import CONFIG, DEVICE, NET, OWN, UNDERLAY, lease, link_state, make_overlay


def kernel_after(fake: FakeNetlink, *ops_plans: plan.OverlayPlan) -> None:
    """Apply plans to the fake kernel, like Overlay does, synchronously in a test."""

    async def go() -> None:
        for p in ops_plans:
            state = await fake.dump(p.device.name)
            assert not await fake.execute(plan.diff(p, state).ops())

    asyncio.run(go())


# -- config and rendering -------------------------------------------------------------------------


def test_config_from_proto_applies_flannel_defaults() -> None:
    cfg = OverlayConfig.from_proto(network_pb2.NetworkSpec(network="10.100.0.0/16"))
    assert (cfg.vni, cfg.port, cfg.subnet_len, cfg.mtu, cfg.ip_masq) == (1, 8472, 24, 0, True)
    assert cfg.device == "flannel.1"
    spec = network_pb2.NetworkSpec(network="10.9.0.0/16", mtu=1400, ip_masq=False)
    spec.backend.vni, spec.backend.port = 7, 4789
    cfg = OverlayConfig.from_proto(spec)
    assert (cfg.vni, cfg.port, cfg.mtu, cfg.ip_masq, cfg.device) == (7, 4789, 1400, False, "flannel.7")
    with pytest.raises(OverlayError, match="host-gw"):
        OverlayConfig.from_proto(network_pb2.NetworkSpec(network="10.1.0.0/16", backend={"type": "host-gw"}))


def test_lease_from_proto() -> None:
    pb = network_pb2.Subnet()
    pb.metadata.name = "10.100.5.0-24"
    pb.spec.cidr, pb.spec.public_ip, pb.spec.vtep_mac, pb.spec.node_name = (
        "10.100.5.0/24",
        "198.51.100.15",
        "0A:00:00:00:00:05",
        "n5",
    )
    got = Lease.from_proto(pb)
    assert got.subnet == ipaddress.IPv4Network("10.100.5.0/24") and got.vtep_ip == "10.100.5.0"
    assert (got.public_ip, got.node_name) == ("198.51.100.15", "n5")


def test_mtu_is_configured_or_underlay_minus_vxlan_overhead() -> None:
    assert plan.overlay_mtu(CONFIG, 1500) == 1450
    assert plan.overlay_mtu(CONFIG, 9000) == 8950
    assert plan.overlay_mtu(OverlayConfig(network=NET, mtu=1300), 1500) == 1300
    with pytest.raises(OverlayError, match="at least"):
        plan.overlay_mtu(CONFIG, 600)


def test_vtep_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = plan.vtep_mac("198.51.100.10", 1)
    assert mac == plan.vtep_mac("198.51.100.10", 1)
    assert mac != plan.vtep_mac("198.51.100.11", 1) and mac != plan.vtep_mac("198.51.100.10", 2)
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01


def test_render_one_route_neighbour_and_fdb_entry_per_peer() -> None:
    p = plan.render(CONFIG, DEVICE, OWN, [OWN, lease(2), lease(1)], UNDERLAY.public_ip)
    assert p.address == "10.100.0.0/32"
    assert p.device.name == "flannel.1" and p.device.mtu == 1450 and not p.device.learning
    assert p.peers is not None
    assert p.peers.routes == (
        Route("10.100.1.0/24", "10.100.1.0", "flannel.1"),
        Route("10.100.2.0/24", "10.100.2.0", "flannel.1"),
    )
    assert p.peers.neighbours == (
        Neighbour("10.100.1.0", "0a:00:00:00:00:01", "flannel.1"),
        Neighbour("10.100.2.0", "0a:00:00:00:00:02", "flannel.1"),
    )
    assert p.peers.fdb == (
        FdbEntry("0a:00:00:00:00:01", "198.51.100.11", "flannel.1"),
        FdbEntry("0a:00:00:00:00:02", "198.51.100.12", "flannel.1"),
    )
    assert p.skipped == ()


def test_render_skips_unusable_leases_with_reasons() -> None:
    bad = [
        Lease(ipaddress.IPv4Network("10.200.1.0/24"), "198.51.100.30", "0a:00:00:00:01:01", "outside"),
        lease(3, mac="not-a-mac", node="nomac"),
        lease(4, mac="01:00:5e:00:00:01", node="multicast"),
        lease(5, ip="", node="noip"),
        lease(6, ip="198.51.100.10", node="ourip"),
        Lease(ipaddress.IPv4Network("10.100.0.0/23"), "198.51.100.40", "0a:00:00:00:01:02", "overlapsown"),
        lease(7),
        Lease(ipaddress.IPv4Network("10.100.7.0/25"), "198.51.100.41", "0a:00:00:00:01:03", "dup"),
    ]
    p = plan.render(CONFIG, DEVICE, OWN, [OWN, *bad], UNDERLAY.public_ip)
    assert p.peers is not None and [r.dst for r in p.peers.routes] == ["10.100.7.0/24"]
    reasons = "\n".join(p.skipped)
    for word in ("outside the overlay", "VTEP MAC", "public IP", "this node's public IP", "overlaps our own"):
        assert word in reasons
    assert "overlaps lease 10.100.7.0/24" in reasons
    assert len(p.skipped) == 7


def test_own_lease_outside_the_network_is_an_error() -> None:
    own = Lease(ipaddress.IPv4Network("10.7.0.0/24"), "198.51.100.10", DEVICE.mac)
    with pytest.raises(OverlayError, match="outside"):
        plan.render(CONFIG, DEVICE, own, [], UNDERLAY.public_ip)


# -- diff -----------------------------------------------------------------------------------------


def test_empty_kernel_adds_everything_in_a_safe_order() -> None:
    p = plan.render(CONFIG, DEVICE, OWN, [lease(1)], UNDERLAY.public_ip)
    d = plan.diff(p, KernelState(link=None))
    assert d.count("add") == 5 and d.count("keep") == 0
    assert [op.command().split(" ")[:3] for op in d.ops()] == [
        ["ip", "link", "add"],
        ["ip", "link", "set"],
        ["ip", "addr", "add"],
        ["bridge", "fdb", "replace"],
        ["ip", "neigh", "replace"],
        ["ip", "route", "replace"],
    ]
    assert d.ops()[0].command() == (
        f"ip link add flannel.1 address {DEVICE.mac} mtu 1450 type vxlan id 1 local 198.51.100.10 "
        "dev eth0 dstport 8472 nolearning"
    )
    assert d.ops()[-1].command() == "ip route replace 10.100.1.0/24 via 10.100.1.0 dev flannel.1 onlink"


def test_second_diff_keeps_everything() -> None:
    fake = FakeNetlink()
    p = plan.render(CONFIG, DEVICE, OWN, [lease(1), lease(2)], UNDERLAY.public_ip)
    kernel_after(fake, p)
    before = fake.snapshot()
    d = plan.diff(p, _state(fake))
    assert d.in_sync and d.count("keep") == 8 and d.ops() == []
    assert fake.snapshot() == before


def _state(fake: FakeNetlink) -> KernelState:
    return asyncio.run(fake.dump("flannel.1"))


def _converge(fake: FakeNetlink, leases: list[Lease]) -> plan.Diff:
    p = plan.render(CONFIG, DEVICE, OWN, leases, UNDERLAY.public_ip)
    d = plan.diff(p, _state(fake))
    kernel_after(fake, p)
    assert plan.diff(p, _state(fake)).in_sync
    return d


def test_peer_joins_leaves_and_changes_incrementally() -> None:
    fake = FakeNetlink()
    _converge(fake, [lease(1), lease(2)])
    snap = fake.snapshot()

    joined = _converge(fake, [lease(1), lease(2), lease(3)])
    assert (joined.count("add"), joined.count("remove"), joined.count("update")) == (3, 0, 0)
    assert {c.key for c in joined.changes if c.action == "add"} == {
        "10.100.3.0/24",
        "10.100.3.0",
        "0a:00:00:00:00:03",
    }
    assert all(fake.snapshot()[k] == v for k, v in snap.items()), "existing entries were rewritten"

    left = _converge(fake, [lease(1), lease(3)])
    assert (left.count("add"), left.count("remove"), left.count("update")) == (0, 3, 0)
    assert ("route", "10.100.2.0/24") not in fake.snapshot()

    moved = _converge(fake, [lease(1), lease(3, ip="198.51.100.99")])
    assert [(c.kind, c.action) for c in moved.changes if c.action != "keep"] == [("fdb", "update")]
    assert fake.fdb[("flannel.1", "0a:00:00:00:00:03", "198.51.100.99")]
    assert not [k for k in fake.fdb if k[2] == "198.51.100.13"]

    remac = _converge(fake, [lease(1), lease(3, mac="0a:00:00:00:00:33", ip="198.51.100.99")])
    assert sorted((c.kind, c.action) for c in remac.changes if c.action != "keep") == [
        ("fdb", "add"),
        ("fdb", "remove"),
        ("neighbour", "update"),
    ]
    assert fake.neighbours[("flannel.1", "10.100.3.0")].mac == "0a:00:00:00:00:33"


def test_stale_entries_inside_the_network_go_foreign_ones_stay() -> None:
    fake = FakeNetlink()
    _converge(fake, [lease(1)])
    stale: list[Route | Neighbour | FdbEntry] = [
        Route("10.100.9.0/24", "10.100.9.0", "flannel.1"),
        Neighbour("10.100.9.0", "0a:00:00:00:00:09", "flannel.1"),
        FdbEntry("0a:00:00:00:00:09", "198.51.100.19", "flannel.1"),
    ]
    foreign: list[Route | Neighbour | FdbEntry] = [
        Route("172.16.0.0/24", "10.100.1.0", "flannel.1"),  # on our device, outside the overlay
        Route("10.100.77.0/24", "198.51.100.1", "eth0"),  # inside the overlay, other device
        Neighbour("10.100.9.9", "", "flannel.1", permanent=False),  # the kernel's own
        Neighbour("172.16.0.1", "0a:00:00:00:00:aa", "flannel.1"),
        FdbEntry("00:00:00:00:00:00", "198.51.100.200", "flannel.1"),  # a flood entry
        FdbEntry("0a:00:00:00:00:bb", "198.51.100.201", "eth0"),
    ]
    for obj in stale + foreign:
        fake.add_foreign(obj)
    d = _converge(fake, [lease(1)])
    assert sorted((c.kind, c.key) for c in d.changes if c.action == "remove") == [
        ("fdb", "0a:00:00:00:00:09"),
        ("neighbour", "10.100.9.0"),
        ("route", "10.100.9.0/24"),
    ]
    assert "10.100.9.0/24" not in fake.routes
    assert {"172.16.0.0/24", "10.100.77.0/24"} <= set(fake.routes)
    assert {("flannel.1", "10.100.9.9"), ("flannel.1", "172.16.0.1")} <= set(fake.neighbours)
    assert ("flannel.1", "00:00:00:00:00:00", "198.51.100.200") in fake.fdb
    assert ("eth0", "0a:00:00:00:00:bb", "198.51.100.201") in fake.fdb


def test_wrong_entries_are_updated_in_place() -> None:
    fake = FakeNetlink()
    _converge(fake, [lease(1)])
    fake.add_foreign(Route("10.100.1.0/24", "10.100.1.5", "flannel.1", onlink=False))
    fake.add_foreign(Neighbour("10.100.1.0", "", "flannel.1", permanent=False))
    d = _converge(fake, [lease(1)])
    assert sorted((c.kind, c.action, c.reason) for c in d.changes if c.action != "keep") == [
        ("neighbour", "update", "lladdr none (not permanent)"),
        ("route", "update", "via 10.100.1.5"),
    ]


def test_fdb_with_several_remotes_is_cut_down() -> None:
    fake = FakeNetlink()
    _converge(fake, [lease(1)])
    fake.add_foreign(FdbEntry("0a:00:00:00:00:01", "198.51.100.66", "flannel.1"))
    d = _converge(fake, [lease(1)])
    (change,) = [c for c in d.changes if c.action != "keep"]
    assert [op.command() for op in change.ops] == [
        "bridge fdb del 0a:00:00:00:00:01 dev flannel.1 dst 198.51.100.66 self",
        "bridge fdb replace 0a:00:00:00:00:01 dev flannel.1 dst 198.51.100.11 self permanent",
    ]
    assert [k for k in fake.fdb if k[1] == "0a:00:00:00:00:01"] == [
        ("flannel.1", "0a:00:00:00:00:01", "198.51.100.11")
    ]


@pytest.mark.parametrize(
    ("changes", "recreate"),
    [
        ({"vni": 2}, True),
        ({"port": 4789}, True),
        ({"local": "198.51.100.99"}, True),
        ({"underlay": "eth1"}, True),
        ({"learning": True}, True),
        ({"kind": "dummy", "vni": None}, True),
        ({"mtu": 1400}, False),
        ({"up": False}, False),
    ],
)
def test_device_is_recreated_only_for_parameters_mtu_is_set(
    changes: dict[str, object], recreate: bool
) -> None:
    p = plan.render(CONFIG, DEVICE, OWN, [lease(1)], UNDERLAY.public_ip)
    state = KernelState(
        link=link_state(**changes),
        addresses=("10.100.0.0/32",),
        routes=(Route("10.100.1.0/24", "10.100.1.0", "flannel.1"),),
        neighbours=(Neighbour("10.100.1.0", "0a:00:00:00:00:01", "flannel.1"),),
        fdb=(FdbEntry("0a:00:00:00:00:01", "198.51.100.11", "flannel.1"),),
    )
    d = plan.diff(p, state)
    link = d.of("link")[0]
    assert link.action == "update"
    commands = [op.command() for op in link.ops]
    if recreate:
        assert commands[0] == "ip link del flannel.1" and commands[1].startswith("ip link add flannel.1")
        assert d.count("add") == 4  # everything on the device goes with it
    else:
        assert (
            commands == ["ip link set flannel.1 mtu 1450"]
            if "mtu" in changes
            else ["ip link set flannel.1 up"]
        )
        assert d.count("keep") == 4


def test_old_address_is_replaced_when_our_lease_changes() -> None:
    fake = FakeNetlink()
    _converge(fake, [lease(1)])
    own = lease(5, mac=DEVICE.mac, ip="198.51.100.10")
    p = plan.render(CONFIG, DEVICE, own, [lease(1)], UNDERLAY.public_ip)
    d = plan.diff(p, _state(fake))
    assert [(c.action, c.key) for c in d.of("address")] == [
        ("add", "10.100.5.0/32"),
        ("remove", "10.100.0.0/32"),
    ]


# -- firewall -------------------------------------------------------------------------------------

DOCKER_SAVE = """# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
"""


def test_parse_iptables_save() -> None:
    tables = fw.parse_save(DOCKER_SAVE)
    assert tables["filter"]["DOCKER-USER"] == ["-j RETURN"]
    assert tables["filter"]["DOCKER"] == []
    assert tables["nat"]["POSTROUTING"] == ["-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"]


def test_firewall_rules_are_flannels_and_idempotent() -> None:
    desired = fw.render_firewall(NET, ipaddress.IPv4Network("10.100.0.0/24"), ip_masq=True)
    assert desired.nat == (
        "-s 10.100.0.0/16 -d 10.100.0.0/16 -m comment --comment atoll-overlay -j RETURN",
        "-s 10.100.0.0/16 ! -d 224.0.0.0/4 -m comment --comment atoll-overlay -j MASQUERADE",
        "! -s 10.100.0.0/16 -d 10.100.0.0/24 -m comment --comment atoll-overlay -j RETURN",
        "! -s 10.100.0.0/16 -d 10.100.0.0/16 -m comment --comment atoll-overlay -j MASQUERADE",
    )
    firewall = FakeFirewall(fw.parse_save(DOCKER_SAVE))
    ops = fw.diff_firewall(desired, asyncio.run(firewall.dump()))
    asyncio.run(firewall.apply(ops))
    assert firewall.tables["filter"]["DOCKER-USER"] == [
        "-m comment --comment atoll-overlay -j ATOLL-FORWARD",
        "-j RETURN",
    ]
    assert firewall.tables["filter"]["FORWARD"] == ["-j DOCKER-USER", "-o docker0 -j DOCKER"]  # untouched
    assert firewall.tables["nat"]["POSTROUTING"][0] == "-m comment --comment atoll-overlay -j ATOLL-POSTRTG"
    assert firewall.tables["nat"]["ATOLL-POSTRTG"] == list(desired.nat)
    assert fw.diff_firewall(desired, asyncio.run(firewall.dump())) == []
    text = fw.restore_text(ops)
    assert text.startswith("*nat\n:ATOLL-POSTRTG - [0:0]\n") and text.endswith("COMMIT\n")
    assert "COMMIT\n*filter\n:ATOLL-FORWARD - [0:0]\n" in text
    assert "-I DOCKER-USER 1 -m comment --comment atoll-overlay -j ATOLL-FORWARD" in text


def test_firewall_without_dockerd_creates_its_hook_and_masq_off_removes_nat() -> None:
    firewall = FakeFirewall()
    on = fw.render_firewall(NET, None, ip_masq=True)
    asyncio.run(firewall.apply(fw.diff_firewall(on, asyncio.run(firewall.dump()))))
    assert firewall.tables["filter"]["FORWARD"] == ["-j DOCKER-USER"]
    assert "ATOLL-POSTRTG" in firewall.tables["nat"]
    off = fw.render_firewall(NET, None, ip_masq=False)
    asyncio.run(firewall.apply(fw.diff_firewall(off, asyncio.run(firewall.dump()))))
    assert "ATOLL-POSTRTG" not in firewall.tables["nat"] and firewall.tables["nat"]["POSTROUTING"] == []
    assert fw.diff_firewall(off, asyncio.run(firewall.dump())) == []
    asyncio.run(firewall.apply(fw.teardown_firewall(asyncio.run(firewall.dump()))))
    assert "ATOLL-FORWARD" not in firewall.tables["filter"] and firewall.tables["filter"]["DOCKER-USER"] == []


def test_duplicate_jumps_are_reduced_to_one() -> None:
    desired = fw.render_firewall(NET, None, ip_masq=True)
    firewall = FakeFirewall()
    asyncio.run(firewall.apply(fw.diff_firewall(desired, asyncio.run(firewall.dump()))))
    firewall.tables["nat"]["POSTROUTING"].append("-m comment --comment atoll-overlay -j ATOLL-POSTRTG")
    ops = fw.diff_firewall(desired, asyncio.run(firewall.dump()))
    assert [op.line() for op in ops] == ["-D POSTROUTING -m comment --comment atoll-overlay -j ATOLL-POSTRTG"]


# -- the iptables driver, on the recording command runner -----------------------------------------


async def test_iptables_driver_dumps_with_save_and_applies_with_one_restore() -> None:
    runner = RecordingRunner().answer(stdout=DOCKER_SAVE)
    firewall = fw.IptablesFirewall(runner, command_prefix=["nsenter", "--net=/run/netns/t", "--"], timeout=9)
    tables = await firewall.dump()
    assert tables["filter"]["DOCKER-USER"] == ["-j RETURN"] and set(tables) == {"filter", "nat"}
    ops = fw.diff_firewall(fw.render_firewall(NET, None, ip_masq=True), tables)
    await firewall.apply(ops)
    await firewall.apply([])  # nothing to do: nothing run
    assert runner.calls == [
        Call(("nsenter", "--net=/run/netns/t", "--", "iptables-save"), None, 9),
        Call(
            ("nsenter", "--net=/run/netns/t", "--", "iptables-restore", "--noflush", "--wait", "5"),
            fw.restore_text(ops),
            9,
        ),
    ]


async def test_iptables_driver_failures_are_firewall_failures() -> None:
    runner = RecordingRunner()
    firewall = fw.IptablesFirewall(runner, save="/sbin/iptables-save")
    runner.answer(returncode=4, stderr="iptables-restore: line 3 failed")
    with pytest.raises(fw.FirewallFailure, match=r"exit 4\): iptables-restore: line 3 failed"):
        await firewall.apply([fw.FwOp("nat", "declare", fw.NAT_CHAIN)])
    runner.cannot_start()
    with pytest.raises(fw.FirewallFailure, match="/sbin/iptables-save: No such file"):
        await firewall.dump()
    runner.time_out()
    with pytest.raises(fw.FirewallFailure, match="did not finish within 15s"):
        await firewall.dump()


# -- noop mode ------------------------------------------------------------------------------------


async def test_noop_mode_logs_and_writes_nothing(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.network")
    overlay, nl, firewall, runtime = make_overlay(tmp_path, noop=True)
    vtep = await overlay.prepare(CONFIG, coordinator_ip="198.51.100.10")
    assert vtep.vtep_mac == plan.vtep_mac("198.51.100.10", 1)  # what would be created
    report = await overlay.apply(CONFIG, OWN, [lease(1)])
    assert report.noop and report.added == 5 and len(report.commands) == 6 and report.firewall
    assert nl.writes() == [] and nl.sysctls["net.ipv4.ip_forward"] == "0"
    assert firewall.transactions == [] and runtime.calls == [] and runtime.networks == {}
    assert not (tmp_path / "run/flannel/subnet.env").exists()
    noops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("NOOP: ")]
    assert "NOOP: ip route replace 10.100.1.0/24 via 10.100.1.0 dev flannel.1 onlink" in noops
    assert "NOOP: sysctl -w net.ipv4.ip_forward=1" in noops
    assert any(n.startswith("NOOP: iptables nat: -A ATOLL-POSTRTG") for n in noops)
    assert any(n.startswith("NOOP: write ") for n in noops)
