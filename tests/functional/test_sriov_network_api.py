"""SriovNetwork through the real API and CLI: admins write it, operators read it, mistakes store nothing."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from atoll import errors, kinds
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator import manifests
from coordinator.client.api import Client
from tests.functional.harness import Cluster, eventually
from tests.functional.test_cli import EXAMPLES, cli
from tests.functional.test_security import cert_config

SRIOV_NETWORK = kinds.by_name("SriovNetwork")


async def test_create_get_and_round_trip(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(cluster, capsys, "create", "-f", str(EXAMPLES / "sriov-network.yaml"))
    assert code == 0 and out.strip() == "sriovnetwork/sriov-a created", err
    code, out, _ = await cli(cluster, capsys, "get", "sriovnetworks")
    header, row = out.strip().splitlines()
    assert header.split() == ["NAME", "RESOURCE", "VLAN", "IPAM", "ADDRESSES", "AGE"]
    assert row.split()[:5] == ["sriov-a", "atoll.io/sriov_ens1f0", "100", "host-local", "10.56.217.0/24"]
    code, out, _ = await cli(cluster, capsys, "get", "sriovnetwork", "sriov-a", "-o", "yaml")
    doc = yaml.safe_load(out)
    assert doc["apiVersion"] == "sriovnetwork.openshift.io/v1" and doc["spec"]["vlan"] == 100
    code, out, _ = await cli(cluster, capsys, "apply", "-f", str(EXAMPLES / "sriov-network.yaml"))
    assert out.strip() == "sriovnetwork/sriov-a unchanged"


async def test_a_bad_network_names_the_field_and_stores_nothing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    doc = yaml.safe_load((EXAMPLES / "sriov-network.yaml").read_text())
    doc["spec"]["vlan"] = 5000
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    code, _, err = await cli(cluster, capsys, "create", "-f", str(bad))
    assert code != 0 and "spec.vlan: must be within 0..4094, got 5000" in err
    assert cluster.client is not None
    items, _ = await cluster.client.list(SRIOV_NETWORK)
    assert items == []


async def test_operators_read_but_do_not_write_sriov_networks(secure: Cluster) -> None:
    (net,) = manifests.load_file(EXAMPLES / "sriov-network.yaml")
    assert secure.client is not None
    async with Client(config=cert_config(secure, "olga", "atoll:operators")) as op:
        with pytest.raises(errors.PermissionDenied, match="may not create sriovnetworks"):
            await op.create(net)
        await secure.client.create(net)
        items, _ = await op.list(SRIOV_NETWORK)
        assert [n.metadata.name for n in items] == ["sriov-a"]  # type: ignore[attr-defined]


POD = kinds.by_name("Pod")
RC = kinds.by_name("ReplicationController")
VF = "atoll.io/sriov_ens1f0"


def sriov_pod(name: str, annotation: str = "", **spec_networks: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    if annotation:
        p.metadata.annotations["k8s.v1.cni.cncf.io/networks"] = annotation
    p.spec.containers.add(name="main", image="busybox")
    for net, iface in spec_networks.items():
        p.spec.networks.add(name=net.replace("_", "-"), interface=iface)
    return p


async def test_pods_name_networks_and_ask_for_vfs(cluster: Cluster) -> None:
    assert cluster.client is not None
    (net,) = manifests.load_file(EXAMPLES / "sriov-network.yaml")
    await cluster.client.create(net)
    created = await cluster.client.create(sriov_pod("multus", "sriov-a, sriov-a@fast1"))
    assert isinstance(created, pod_pb2.Pod)
    assert [(n.name, n.interface) for n in created.spec.networks] == [
        ("sriov-a", "net1"),
        ("sriov-a", "fast1"),
    ]
    resources = created.spec.containers[0].resources
    assert dict(resources.requests.extended) == {VF: 2} and dict(resources.limits.extended) == {VF: 2}
    own = await cluster.client.create(sriov_pod("native", sriov_a="net1"))
    assert dict(own.spec.containers[0].resources.requests.extended) == {VF: 1}  # type: ignore[attr-defined]
    # Re-applying the manifest as written (without the injected requests) is no change.
    await cluster.client.update(sriov_pod("native", sriov_a="net1"))


async def test_an_unknown_network_is_refused_and_nothing_is_stored(cluster: Cluster) -> None:
    assert cluster.client is not None
    with pytest.raises(errors.InvalidArgument, match=r'spec\.networks\[0\]\.name: no SriovNetwork "nope"'):
        await cluster.client.create(sriov_pod("lost", "nope"))
    with pytest.raises(errors.InvalidArgument, match=r"spec\.networks\[0\]\.interface"):
        await cluster.client.create(sriov_pod("bad", "nope@eth0"))
    rc = workloads_pb2.ReplicationController()
    rc.metadata.name = "web"
    rc.spec.replicas = 1
    rc.spec.selector["app"] = "web"
    rc.spec.template.metadata.labels["app"] = "web"
    rc.spec.template.metadata.annotations["k8s.v1.cni.cncf.io/networks"] = "nope"
    rc.spec.template.spec.containers.add(name="main", image="busybox")
    with pytest.raises(errors.InvalidArgument, match=r"spec\.template\.spec\.networks\[0\]\.name"):
        await cluster.client.create(rc)
    pods, _ = await cluster.client.list(POD)
    rcs, _ = await cluster.client.list(RC)
    assert pods == [] and rcs == []


async def test_a_pod_that_fits_nowhere_says_which_resource(cluster: Cluster) -> None:
    assert cluster.client is not None
    await cluster.add_node("node-1")
    (net,) = manifests.load_file(EXAMPLES / "sriov-network.yaml")
    await cluster.client.create(net)
    await cluster.client.create(sriov_pod("waits", "sriov-a"))

    async def reason() -> str:
        got = await cluster.client.get(POD, "default", "waits")  # type: ignore[union-attr]
        return next((c.message for c in got.status.conditions if c.type == "PodScheduled"), "")  # type: ignore[attr-defined]

    message = await eventually(reason, what="the PodScheduled condition")
    assert message == f"0/1 nodes available: 1 insufficient {VF}"
