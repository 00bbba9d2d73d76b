"""Endpoints manifests (v1), both directions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.v1 import meta_pb2, workloads_pb2
from coordinator import manifests
from coordinator.manifests.errors import ManifestError

FRONTEND: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Endpoints",
    "metadata": {"name": "frontend", "namespace": "default"},
    "subsets": [
        {
            "addresses": [
                {
                    "ip": "10.244.1.5",
                    "nodeName": "minion-1",
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": "default",
                        "name": "apache-x1",
                        "uid": "5c6a",
                        "apiVersion": "v1",
                        "resourceVersion": "42",
                    },
                }
            ],
            "notReadyAddresses": [{"ip": "10.244.2.7"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }
    ],
}


def error(data: Any) -> str:
    with pytest.raises(ManifestError) as info:
        manifests.load_text(json.dumps(data), "ep.json")
    return str(info.value)


def test_decode_every_field() -> None:
    (ep,) = manifests.load_data(FRONTEND)
    assert ep == workloads_pb2.Endpoints(
        metadata=meta_pb2.ObjectMeta(name="frontend", namespace="default"),
        subsets=[
            workloads_pb2.EndpointSubset(
                addresses=[
                    workloads_pb2.EndpointAddress(
                        ip="10.244.1.5",
                        node_name="minion-1",
                        target_ref=workloads_pb2.ObjectReference(
                            kind="Pod", namespace="default", name="apache-x1", uid="5c6a"
                        ),
                    )
                ],
                not_ready_addresses=[workloads_pb2.EndpointAddress(ip="10.244.2.7")],
                ports=[workloads_pb2.EndpointPort(name="http", port=80, protocol=meta_pb2.PROTOCOL_TCP)],
            )
        ],
    )


def test_encode_is_kubectls_shape_without_reference_extras() -> None:
    (ep,) = manifests.load_data(FRONTEND)
    out = manifests.to_dict(ep)
    address = out["subsets"][0]["addresses"][0]
    assert address["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "apache-x1", "uid": "5c6a"}
    assert out["subsets"][0]["notReadyAddresses"] == [{"ip": "10.244.2.7"}]
    assert manifests.load_data(out) == [ep]


def test_errors() -> None:
    data = json.loads(json.dumps(FRONTEND))
    data["subsets"][0]["addresses"][0]["ip"] = "10.244.1.500"
    assert error(data) == "ep.json: subsets[0].addresses[0].ip: '10.244.1.500' is not an IP address"
    data = json.loads(json.dumps(FRONTEND))
    data["subsets"][0]["ports"].append({"port": 443})
    assert (
        error(data) == "ep.json: subsets[0].ports[1].name: is required when the subset has more than one port"
    )
    data = json.loads(json.dumps(FRONTEND))
    data["subsets"][0]["addresses"][0]["hostname"] = "web-0"
    assert (
        error(data)
        == "ep.json: subsets[0].addresses[0].hostname: Atoll does not support this Kubernetes field"
    )
    data = json.loads(json.dumps(FRONTEND))
    data["subsets"][0]["ports"][0]["port"] = 0
    assert error(data) == "ep.json: subsets[0].ports[0].port: must be between 1 and 65535, got 0"


TEXT = st.text(max_size=8)
ADDRESSES = st.lists(
    st.builds(
        workloads_pb2.EndpointAddress,
        ip=TEXT,
        node_name=TEXT,
        target_ref=st.one_of(
            st.none(), st.builds(workloads_pb2.ObjectReference, kind=TEXT, name=TEXT, uid=TEXT)
        ),
    ),
    max_size=2,
)


@given(
    st.builds(
        workloads_pb2.Endpoints,
        metadata=st.builds(meta_pb2.ObjectMeta, name=TEXT, namespace=TEXT),
        subsets=st.lists(
            st.builds(
                workloads_pb2.EndpointSubset,
                addresses=ADDRESSES,
                not_ready_addresses=ADDRESSES,
                ports=st.lists(
                    st.builds(
                        workloads_pb2.EndpointPort,
                        name=TEXT,
                        port=st.integers(-(2**31), 2**31 - 1),
                        protocol=st.sampled_from([0, 1, 2, 3]),
                    ),
                    max_size=2,
                ),
            ),
            max_size=2,
        ),
    )
)
def test_decode_of_encode_is_identity(ep: workloads_pb2.Endpoints) -> None:
    assert manifests.load_data(manifests.to_dict(ep), validate=False) == [ep]
