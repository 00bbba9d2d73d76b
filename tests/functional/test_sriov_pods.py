"""SR-IOV end to end on the fake NIC: agents report VFs, the scheduler counts them, pods get clean VFs.

The agents are real (in-process, real gRPC) with ``--sriov-driver fake``: a fake
sysfs tree per node under the test's tmp dir, VF attributes and placements kept
as a NIC and the kernel would. Only the hardware is fake.
"""

from __future__ import annotations

import pathlib

import pytest

from agent.sriov.model import CLEAN, VfSettings
from atoll import kinds
from atoll.v1 import pod_pb2
from coordinator import manifests
from coordinator.cli.provisioning import cloudinit
from tests.functional.harness import Cluster, FakeNode, eventually
from tests.functional.test_agent_behaviour import app_container
from tests.functional.test_cli import EXAMPLES

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")
VF = "atoll.io/sriov_ens1f0"


async def sriov_node(cluster: Cluster, name: str, tmp: pathlib.Path, vfs: int = 2) -> FakeNode:
    return await cluster.add_node(
        name,
        images=("busybox",),
        sriov_pfs=[f"ens1f0:{vfs}"],
        sriov_driver="fake",
        sysfs_root=str(tmp / f"sys-{name}"),
    )


def vf_pod(name: str, annotation: str = "sriov-a") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.annotations["k8s.v1.cni.cncf.io/networks"] = annotation
    p.spec.containers.add(name="main", image="busybox")
    return p


@pytest.fixture
async def with_network(cluster: Cluster) -> Cluster:
    assert cluster.client is not None
    (net,) = manifests.load_file(EXAMPLES / "sriov-network.yaml")
    await cluster.client.create(net)
    return cluster


async def phase(cluster: Cluster, name: str) -> int:
    got = await cluster.client.get(POD, "default", name)  # type: ignore[union-attr]
    return int(got.status.phase)  # type: ignore[attr-defined]


async def test_vfs_are_node_resources_and_pods_get_them_clean(
    with_network: Cluster, tmp_path: pathlib.Path
) -> None:
    cluster = with_network
    node = await sriov_node(cluster, "node-a", tmp_path)

    async def capacity() -> dict[str, int]:
        got = await cluster.client.get(NODE, "", "node-a")  # type: ignore[union-attr]
        return dict(got.status.allocatable.extended)  # type: ignore[attr-defined]

    assert await eventually(capacity, what="VFs in the node's allocatable") == {VF: 2}
    await cluster.client.create(vf_pod("one"))  # type: ignore[union-attr]
    await cluster.client.create(vf_pod("two", "sriov-a@fast1"))  # type: ignore[union-attr]
    for name in ("one", "two"):
        await eventually(
            lambda name=name: _running(cluster, name),
            what=f"pod {name} Running with its VF",  # type: ignore[misc]
        )
    sriov = node.agent.sriov
    assert sriov is not None
    held = sriov.manager.pool.allocations()
    assert sorted(a.ifname for a in held) == ["fast1", "net1"] and all(a.phase == "attached" for a in held)
    links = sriov.manager._links  # the fake kernel's view: each VF inside its pod, renamed, addressed
    for allocation in held:
        place = links.where(allocation.pci)  # type: ignore[attr-defined]
        assert place.netns == allocation.netns and place.name == allocation.ifname and place.up
        assert place.addresses[0].startswith("10.56.217.17")  # host-local from 10.56.217.171
        settings = sriov.manager._configurator.read(allocation.pf, allocation.index)
        assert settings == VfSettings(vlan=100, spoofchk=True, trust=False)

    # The pods' status shows each attachment, as Multus's network-status does.
    two = await cluster.client.get(POD, "default", "two")  # type: ignore[union-attr]
    (status,) = two.status.networks  # type: ignore[attr-defined]
    mine = next(a for a in held if a.ifname == "fast1")
    assert (status.name, status.interface, list(status.ips), status.device_pci) == (
        "sriov-a",
        "fast1",
        list(mine.addresses),
        mine.pci,
    )
    assert manifests.to_dict(two)["status"]["networkStatus"][0]["device"] == {"pci": mine.pci}

    # A third pod finds the node full and says which resource.
    await cluster.client.create(vf_pod("three"))  # type: ignore[union-attr]

    async def reason() -> str:
        got = await cluster.client.get(POD, "default", "three")  # type: ignore[union-attr]
        return next((c.message for c in got.status.conditions if c.type == "PodScheduled"), "")  # type: ignore[attr-defined]

    assert await eventually(reason, what="three Pending") == f"0/1 nodes available: 1 insufficient {VF}"

    # Deleting a pod returns its VF reset and at home; the waiting pod then gets it.
    gone = next(a for a in held if a.ifname == "net1")
    await cluster.client.delete(POD, "default", "one")  # type: ignore[union-attr]
    await eventually(lambda: _running(cluster, "three"), timeout=20, what="three Running on the freed VF")
    history = [c for c in sriov.manager._configurator.calls if c[:2] == (gone.pf, gone.index)]  # type: ignore[attr-defined]
    assert CLEAN in [c[2] for c in history], "the VF was not reset between pods"


async def test_a_restarted_agent_keeps_pods_vfs_and_frees_the_rest(
    with_network: Cluster, tmp_path: pathlib.Path
) -> None:
    cluster = with_network
    node = await sriov_node(cluster, "node-a", tmp_path, vfs=2)
    await cluster.client.create(vf_pod("keep"))  # type: ignore[union-attr]
    await eventually(lambda: _running(cluster, "keep"), what="keep Running")
    assert node.agent.sriov is not None
    (before,) = node.agent.sriov.manager.pool.allocations()
    await node.restart()
    assert node.agent.sriov is not None
    (after,) = node.agent.sriov.manager.pool.allocations()
    assert (after.pci, after.netns, after.phase) == (before.pci, before.netns, "attached")
    assert len(node.agent.sriov.manager.pool.free(VF)) == 1


async def _running(cluster: Cluster, name: str) -> bool:
    return await phase(cluster, name) == pod_pb2.POD_PHASE_RUNNING


async def test_an_enrolled_hosts_agent_reports_the_vfs_enroll_asked_for(
    cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    """`coordinator enroll --sriov-pf ens1f0:8`: the user-data it renders makes an agent that reports
    8 VFs. Ironic's fake-hardware boots nothing, so the agent here starts from that user-data's
    agent.yaml itself, on the fake NIC."""
    host = cloudinit.HostConfig(
        hostname="bm-01",
        coordinator="127.0.0.1:6443",
        join_token="abcdef.0123456789abcdef",
        ca_hash="sha256:" + "0" * 64,
        sriov_pfs=(cloudinit.SriovPF("ens1f0", 8),),
    )
    agent_yaml = cloudinit.agent_config_of(cloudinit.render(host))
    assert agent_yaml["sriov_pfs"] == ["ens1f0:8"]
    await cluster.add_node(
        "bm-01", sriov_pfs=agent_yaml["sriov_pfs"], sriov_driver="fake", sysfs_root=str(tmp_path / "sys")
    )

    async def capacity() -> dict[str, int]:
        got = await cluster.client.get(NODE, "", "bm-01")  # type: ignore[union-attr]
        return dict(got.status.allocatable.extended)  # type: ignore[attr-defined]

    assert await eventually(capacity, what="8 VFs on bm-01") == {VF: 8}


async def test_a_pod_that_finished_gives_its_vf_back(with_network: Cluster, tmp_path: pathlib.Path) -> None:
    cluster = with_network
    node = await sriov_node(cluster, "node-a", tmp_path, vfs=1)
    job = vf_pod("job")
    job.spec.restart_policy = pod_pb2.RESTART_POLICY_NEVER
    await cluster.client.create(job)  # type: ignore[union-attr]
    await eventually(lambda: _running(cluster, "job"), what="job Running with its VF")
    assert node.agent.sriov is not None and node.agent.sriov.manager.pool.free(VF) == []
    node.runtime.exit(app_container(node, "job"), 3)

    async def released() -> bool:
        return node.agent.sriov is not None and len(node.agent.sriov.manager.pool.free(VF)) == 1

    await eventually(released, what="the failed pod's VF free again")

    async def failed() -> bool:
        return await phase(cluster, "job") == pod_pb2.POD_PHASE_FAILED

    await eventually(failed, what="job Failed")
