"""A pod's extra networks: Multus's annotation forms, field checks, and VFs counted by the scheduler."""

from __future__ import annotations

import pytest

from atoll import errors
from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from atoll.validation.core import Problems
from atoll.validation.pods import validate_networks
from coordinator.api.podnetworks import from_annotation
from coordinator.scheduler.nodeinfo import NodeInfo, PodFacts
from coordinator.scheduler.plugins import resources_fit

FIELD = "metadata.annotations[k8s.v1.cni.cncf.io/networks]"
VF = "atoll.io/sriov_ens1f0"


def test_the_annotations_short_form() -> None:
    nets = from_annotation(" sriov-a, tenant/sriov-b@fast0 ,sriov-c", FIELD)
    assert [(n.name, n.interface) for n in nets] == [("sriov-a", ""), ("sriov-b", "fast0"), ("sriov-c", "")]


def test_the_annotations_json_form() -> None:
    text = '[{"name": "sriov-a", "interface": "net9", "mac": "02:00:00:00:00:09", "ips": ["10.56.0.9/24"]}]'
    (net,) = from_annotation(text, FIELD)
    assert (net.name, net.interface, net.mac, list(net.ips)) == (
        "sriov-a",
        "net9",
        "02:00:00:00:00:09",
        ["10.56.0.9/24"],
    )
    for bad, message in (
        ("[{", "not a JSON list"),
        ('[{"name": "a", "cni": 1}]', "unknown field 'cni'"),
        ('[{"name": 1}]', "must be strings"),
        ('{"name": "a"}', "expected a JSON list"),
    ):
        with pytest.raises(errors.InvalidArgument, match=message) as info:
            from_annotation(bad, FIELD)
        assert info.value.field == FIELD


def test_every_mistake_in_spec_networks_names_its_field() -> None:
    nets = [
        pod_pb2.NetworkAttachment(name="Bad_Name"),
        pod_pb2.NetworkAttachment(name="a", interface="eth0"),
        pod_pb2.NetworkAttachment(name="b", interface="net1", mac="01:00:5e:00:00:01"),
        pod_pb2.NetworkAttachment(name="c", interface="net1", ips=["10.0.0.1"]),
        pod_pb2.NetworkAttachment(name="d", interface="net2\n"),
    ]
    p = Problems()
    validate_networks(p, nets, "spec.networks")
    fields = [field for field, _ in p.items]
    assert fields == [
        "spec.networks[0].name",
        "spec.networks[1].interface",
        "spec.networks[2].mac",
        "spec.networks[3].interface",
        "spec.networks[3].ips[0]",
        "spec.networks[4].interface",
    ]


def node(vfs: int) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = "n1"
    n.status.allocatable.cpu_millis, n.status.allocatable.memory_bytes, n.status.allocatable.pods = (
        4000,
        2**32,
        110,
    )
    if vfs:
        n.status.allocatable.extended[VF] = vfs
    n.status.conditions.add(type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE)
    return n


def pod(name: str, vfs: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.namespace, p.metadata.name = "default", name
    c = p.spec.containers.add(name="app", image="busybox")
    if vfs:
        c.resources.requests.extended[VF] = vfs
    p.spec.node_name = "n1"
    return p


def test_the_scheduler_counts_vfs_like_cpu() -> None:
    info = NodeInfo(node(2))
    assert resources_fit(PodFacts.of(pod("a", 1)), info) is None
    info.add(pod("a", 1))
    assert resources_fit(PodFacts.of(pod("b", 2)), info) == f"insufficient {VF}"
    assert resources_fit(PodFacts.of(pod("b", 1)), info) is None
    info.add(pod("b", 1))
    assert resources_fit(PodFacts.of(pod("c", 1)), info) == f"insufficient {VF}"
    info.remove(pod("a", 1))
    assert resources_fit(PodFacts.of(pod("c", 1)), info) is None
    assert resources_fit(PodFacts.of(pod("d", 1)), NodeInfo(node(0))) == f"insufficient {VF}"
    assert resources_fit(PodFacts.of(pod("e", 0)), NodeInfo(node(0))) is None
