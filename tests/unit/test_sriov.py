"""SR-IOV in the agent on fake hardware: sizing PFs, the VF pool's records, attach, release and recovery."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest

from agent.sriov.fake import FakeSriovHardware, FakeVfLinks, RecordingVfConfigurator
from agent.sriov.manager import SriovManager, VfRequest
from agent.sriov.model import CLEAN, PfSpec, VfSettings, is_unicast_mac
from agent.sriov.pool import VfPool
from agent.sriov.sysfs import ensure_num_vfs
from atoll import errors

RESOURCE = "atoll.io/sriov_ens1f0"
TENANT = VfSettings(vlan=100, qos=3, mac="02:00:00:00:01:01", spoofchk=False, trust=True, max_tx_rate=1000)


def hardware(root: pathlib.Path, total: int = 8) -> FakeSriovHardware:
    hw = FakeSriovHardware(root / "sys")
    hw.add_pf("ens1f0", total)
    return hw


class Rig:
    def __init__(self, tmp: pathlib.Path, num_vfs: int = 4, total: int = 8) -> None:
        self.tmp = tmp
        self.hw = hardware(tmp, total)
        self.pf = PfSpec("ens1f0", num_vfs)
        self.configurator = RecordingVfConfigurator()
        self.links = FakeVfLinks()
        self.manager = self.restart()

    def restart(self) -> SriovManager:
        """A new manager on the same state dir and hardware: the agent after a crash."""
        self.manager = SriovManager(
            [self.pf], self.hw, self.configurator, self.links, self.tmp / "state", call_timeout=5
        )
        return self.manager

    async def setup(self) -> None:
        assert await self.manager.setup() == []
        for vf in self.hw.vfs("ens1f0"):
            self.links.plug(vf.pci, vf.netdev)

    def assert_clean(self, pci: str) -> None:
        vf = next(v for v in self.hw.vfs("ens1f0") if v.pci == pci)
        assert self.configurator.read("ens1f0", vf.index) == CLEAN
        place = self.links.where(pci)
        assert (place.netns, place.name, place.addresses, place.up) == ("", vf.netdev, (), False)


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs, not even the manager's own cleanup."""


def request(network: str = "sriov-a", ifname: str = "net1", settings: VfSettings = TENANT) -> VfRequest:
    return VfRequest(network, RESOURCE, settings, ifname, ("10.56.0.10/24",))


def test_pf_specs_parse_and_validate() -> None:
    assert PfSpec.parse("ens1f0:8") == PfSpec("ens1f0", 8)
    assert PfSpec.parse("ens1f0:8:example.com/fast").resource_name == "example.com/fast"
    assert PfSpec("ens1f0", 8).resource_name == RESOURCE
    assert PfSpec.parse("ens1f0:2:intelnics").resource_name == "atoll.io/intelnics"
    for bad in ("ens1f0", "ens1f0:x", "ens1f0:300", "bad name:1", "ens1f0:1:bad name", "ens1f0\n:1"):
        with pytest.raises(ValueError):
            PfSpec.parse(bad)


def test_settings_problems_name_the_field() -> None:
    assert TENANT.problems() == []
    assert VfSettings(vlan=4095).problems() == [("vlan", "must be within 0..4094, got 4095")]
    assert [f for f, _ in VfSettings(qos=2).problems()] == ["vlanQoS"]
    assert [f for f, _ in VfSettings(mac="01:00:5e:00:00:01").problems()] == ["mac"]  # multicast
    assert [f for f, _ in VfSettings(link_state="up").problems()] == ["linkState"]
    assert [f for f, _ in VfSettings(min_tx_rate=10, max_tx_rate=5).problems()] == ["minTxRate"]
    assert not is_unicast_mac("00:00:00:00:00:00") and not is_unicast_mac("02:00:00:00:00:01\n")


def test_sysfs_reader_sees_the_vfs_a_pf_was_given(tmp_path: pathlib.Path) -> None:
    hw = hardware(tmp_path)
    assert hw.has_pf("ens1f0") and not hw.has_pf("ens9")
    assert (hw.total_vfs("ens1f0"), hw.num_vfs("ens1f0"), hw.vfs("ens1f0")) == (8, 0, [])
    ensure_num_vfs(hw, "ens1f0", 3)
    assert [(v.index, v.pci, v.netdev) for v in hw.vfs("ens1f0")] == [
        (0, "0000:03:10.0", "ens1f0v0"),
        (1, "0000:03:10.1", "ens1f0v1"),
        (2, "0000:03:10.2", "ens1f0v2"),
    ]
    ensure_num_vfs(hw, "ens1f0", 2)  # a change goes through 0, as drivers require
    ensure_num_vfs(hw, "ens1f0", 2)  # no change: no write
    assert hw.writes == [("ens1f0", 3), ("ens1f0", 0), ("ens1f0", 2)]
    assert len(hw.vfs("ens1f0")) == 2


async def test_missing_pf_and_too_few_vfs_are_problems_not_crashes(tmp_path: pathlib.Path) -> None:
    hw = hardware(tmp_path, total=2)
    manager = SriovManager(
        [PfSpec("ens1f0", 4), PfSpec("ens9", 2)],
        hw,
        RecordingVfConfigurator(),
        FakeVfLinks(),
        tmp_path / "state",
    )
    problems = await manager.setup()
    assert [(p.pf, p.reason) for p in problems] == [("ens1f0", "TooFewVFs"), ("ens9", "PFNotFound")]
    assert manager.capacity() == {RESOURCE: 0, "atoll.io/sriov_ens9": 0}
    assert hw.writes == []


async def test_attach_programs_the_vf_and_moves_it_into_the_pod(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    await rig.setup()
    assert rig.manager.capacity() == {RESOURCE: 4}
    (allocation,) = await rig.manager.attach("uid-1", "default/a", "/proc/10/ns/net", [request()])
    assert allocation.phase == "attached" and allocation.netdev == "ens1f0v0"
    assert rig.configurator.read("ens1f0", 0) == TENANT
    place = rig.links.where(allocation.pci)
    assert (place.netns, place.name, place.up) == ("/proc/10/ns/net", "net1", True)
    assert len(rig.manager.pool.free(RESOURCE)) == 3
    again = await rig.manager.attach("uid-1", "default/a", "/proc/10/ns/net", [request()])
    assert again == [] and len(rig.manager.pool.free(RESOURCE)) == 3  # idempotent per network


async def test_release_returns_the_vf_clean_and_the_next_pod_gets_a_clean_one(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path, num_vfs=1)
    await rig.setup()
    (first,) = await rig.manager.attach("uid-1", "default/a", "/proc/10/ns/net", [request()])
    with pytest.raises(errors.ResourceExhausted, match="no free VF"):
        await rig.manager.attach("uid-2", "default/b", "/proc/11/ns/net", [request()])
    await rig.manager.release_pod("uid-1")
    rig.assert_clean(first.pci)
    assert rig.configurator.calls[-1] == ("ens1f0", 0, CLEAN)
    plain = VfSettings(vlan=200)
    (second,) = await rig.manager.attach("uid-2", "default/b", "/proc/11/ns/net", [request(settings=plain)])
    assert second.pci == first.pci and rig.configurator.read("ens1f0", 0) == plain  # nothing left behind


async def test_a_vf_whose_pod_namespace_vanished_first_is_found_and_reset(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    await rig.setup()
    (allocation,) = await rig.manager.attach("uid-1", "default/a", "/proc/10/ns/net", [request()])
    rig.links.drop_netns("/proc/10/ns/net")  # the kernel sends it home still named net1
    assert rig.links.where(allocation.pci).name == "net1"
    released = await rig.restart().recover(lambda uid: False)
    assert released == [allocation.pci]
    rig.assert_clean(allocation.pci)


async def test_a_failed_attach_leaves_nothing_held(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    await rig.setup()
    two = [request("sriov-a", "net1"), request("sriov-b", "net2")]
    calls = 0
    original = rig.links.to_pod

    def flaky(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(16, "device busy")
        original(*args, **kwargs)  # type: ignore[arg-type]

    rig.links.to_pod = flaky  # type: ignore[method-assign]
    with pytest.raises(OSError, match="busy"):
        await rig.manager.attach("uid-1", "default/a", "/proc/10/ns/net", two)
    assert rig.manager.pool.allocations() == [] and len(rig.manager.pool.free(RESOURCE)) == 4
    for vf in rig.hw.vfs("ens1f0")[:2]:
        rig.assert_clean(vf.pci)


@pytest.mark.parametrize("crash_at", ["configure", "to_pod", "mark_attached"])
async def test_a_crash_during_attach_is_undone_on_restart(tmp_path: pathlib.Path, crash_at: str) -> None:
    rig = Rig(tmp_path)
    await rig.setup()
    manager = rig.manager

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash

    if crash_at == "configure":
        rig.configurator.configure = crash  # type: ignore[method-assign]
    elif crash_at == "to_pod":
        rig.links.to_pod = crash  # type: ignore[method-assign]
    else:
        manager.pool.mark = crash  # type: ignore[method-assign]
    manager._release = crash  # type: ignore[method-assign]  # kill -9: no cleanup runs either
    with pytest.raises(Crash):
        await manager.attach("uid-1", "default/a", "/proc/10/ns/net", [request()])
    (record,) = json.loads((tmp_path / "state" / "sriov" / "allocations.json").read_text())["allocations"]
    assert record["phase"] == "attaching"  # written before anything was touched
    vars(rig.configurator).pop("configure", None)  # the hardware itself is fine after the restart
    vars(rig.links).pop("to_pod", None)
    restarted = rig.restart()
    await restarted.setup()
    assert await restarted.recover(lambda uid: True) == [record["pci"]]  # half-attached: undone even if alive
    rig.assert_clean(record["pci"])
    assert len(restarted.pool.free(RESOURCE)) == 4


async def test_a_crash_during_release_is_finished_on_restart(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    await rig.setup()
    (allocation,) = await rig.manager.attach("uid-1", "default/a", "/proc/10/ns/net", [request()])

    def crash(*args: object) -> None:
        raise Crash  # kill -9 between resetting the VF and bringing it home

    rig.links.to_host = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await rig.manager.release_pod("uid-1")
    del rig.links.to_host
    restarted = rig.restart()
    assert [a.phase for a in restarted.pool.allocations()] == ["releasing"]
    assert restarted.pool.free(RESOURCE) == []  # not handed out while its release is unfinished
    await restarted.setup()
    assert len(restarted.pool.free(RESOURCE)) == 3
    assert await restarted.recover(lambda uid: True) == [allocation.pci]
    rig.assert_clean(allocation.pci)


async def test_restart_readopts_attached_vfs_and_never_hands_one_out_twice(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path, num_vfs=2)
    await rig.setup()
    (held,) = await rig.manager.attach("uid-1", "default/a", "/proc/10/ns/net", [request()])
    restarted = rig.restart()
    await restarted.setup()
    assert await restarted.recover(lambda uid: uid == "uid-1") == []
    assert rig.links.where(held.pci).netns == "/proc/10/ns/net"  # the pod keeps its VF
    (other,) = await restarted.attach("uid-2", "default/b", "/proc/11/ns/net", [request()])
    assert other.pci != held.pci
    with pytest.raises(errors.ResourceExhausted):
        await restarted.attach("uid-3", "default/c", "/proc/12/ns/net", [request()])


async def test_twenty_cycles_with_crashes_leave_the_pool_as_it_started(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path, num_vfs=4)
    await rig.setup()
    for cycle in range(20):
        manager = rig.restart()
        await manager.setup()
        await manager.recover(lambda uid: False)
        uid = f"uid-{cycle}"
        await manager.attach(uid, f"default/p{cycle}", f"/proc/{cycle}/ns/net", [request()])
        if cycle % 2:
            await manager.release_pod(uid)  # a clean delete; on even cycles the agent "dies" first
    final = rig.restart()
    await final.setup()
    await final.recover(lambda uid: False)
    assert final.pool.allocations() == [] and len(final.pool.free(RESOURCE)) == 4
    for vf in rig.hw.vfs("ens1f0"):
        rig.assert_clean(vf.pci)


def test_an_unreadable_allocation_file_is_kept_aside(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sriov" / "allocations.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert VfPool(tmp_path).allocations() == []
    assert (tmp_path / "sriov" / "allocations.unreadable").read_text() == "{not json"


def test_concurrent_allocation_is_serialised(tmp_path: pathlib.Path) -> None:
    async def main() -> set[str]:
        rig = Rig(tmp_path, num_vfs=4)
        await rig.setup()
        results = await asyncio.gather(
            *(
                rig.manager.attach(f"uid-{i}", f"default/p{i}", f"/proc/{i}/ns/net", [request()])
                for i in range(4)
            )
        )
        return {a.pci for (a,) in results}

    assert len(asyncio.run(main())) == 4


def test_pf_flags_repeat_and_add_up() -> None:
    from atoll import agentconfig

    cfg, _ = agentconfig.load(
        ["--sriov-pfs", "ens1f0:4", "--sriov-pf", "ens1f1:2:example.com/fast", "--sriov-pf", "ens2f0:1"],
        environ={},
    )
    assert cfg.sriov_pfs == ["ens1f0:4", "ens1f1:2:example.com/fast", "ens2f0:1"]
    mapping = agentconfig.from_mapping(
        {
            "sriov_pfs": [
                {"name": "ens1f0", "numVfs": 8, "resourceName": "intelnics", "deviceType": "netdevice"}
            ]
        }
    )
    assert mapping.sriov_pfs == ["ens1f0:8:intelnics"]
    with pytest.raises(Exception, match="deviceType 'vfio-pci' is not supported"):
        agentconfig.from_mapping({"sriov_pfs": [{"name": "ens1f0", "numVfs": 8, "deviceType": "vfio-pci"}]})


async def test_status_names_every_pf_that_could_not_be_set_up(tmp_path: pathlib.Path) -> None:
    from agent.sriov.ipam import HostLocalIpam
    from agent.sriov.pods import SriovPodNetworks
    from agent.sriov.setup import status_parts

    hw = hardware(tmp_path, total=2)
    manager = SriovManager(
        [PfSpec("ens1f0", 2), PfSpec("ens9", 2)], hw, RecordingVfConfigurator(), FakeVfLinks(), tmp_path / "s"
    )
    await manager.setup()
    capacity, (condition,) = status_parts(SriovPodNetworks(manager, HostLocalIpam(tmp_path / "s")))
    assert capacity == {RESOURCE: 2, "atoll.io/sriov_ens9": 0}
    assert (condition.type, condition.reason) == ("SriovReady", "PFNotFound")
    assert "no SR-IOV PF ens9" in condition.message


def test_requests_carry_the_networks_settings_addresses_and_routes(tmp_path: pathlib.Path) -> None:
    from agent.sriov.ipam import HostLocalIpam
    from agent.sriov.pods import SriovPodNetworks
    from atoll.v1 import pod_pb2, sriov_pb2

    rig = Rig(tmp_path)
    pods = SriovPodNetworks(rig.manager, HostLocalIpam(tmp_path / "state"))
    net = sriov_pb2.SriovNetwork()
    net.metadata.name = "sriov-a"
    net.spec.resource_name, net.spec.vlan, net.spec.trust = RESOURCE, 100, sriov_pb2.SRIOV_SWITCH_ON
    net.spec.ipam.type, net.spec.ipam.subnet, net.spec.ipam.gateway = (
        "host-local",
        "10.56.0.0/24",
        "10.56.0.1",
    )
    net.spec.ipam.routes.add(dst="10.57.0.0/16")
    pods.set_networks([net])
    pod = pod_pb2.Pod()
    pod.metadata.uid = "u1"
    pod.spec.networks.add(name="sriov-a", mac="02:00:00:00:00:07")
    (req,) = pods.requests(pod)
    assert req.settings == VfSettings(vlan=100, mac="02:00:00:00:00:07", trust=True)
    assert (req.ifname, req.addresses, req.routes) == (
        "net1",
        ("10.56.0.2/24",),
        (("10.57.0.0/16", "10.56.0.1"),),
    )
    assert pods.requests(pod)[0].addresses == ("10.56.0.2/24",)  # the same address again for the same pod
