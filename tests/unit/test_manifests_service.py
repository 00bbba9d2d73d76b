"""Service manifests: v1, v1beta3 and 2014's flat v1beta1, both directions."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.v1 import meta_pb2, workloads_pb2
from coordinator import manifests
from coordinator.manifests.errors import ManifestError

FRONTEND_V1BETA1: dict[str, Any] = {
    "kind": "Service",
    "id": "frontend",
    "apiVersion": "v1beta1",
    "port": 80,
    "containerPort": 80,
    "protocol": "TCP",
    "selector": {"name": "apache"},
    "publicIPs": ["192.168.2.15", "192.168.2.16"],
    "labels": {"name": "frontend"},
    "portalIP": "10.254.0.10",
}

FRONTEND_V1: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "frontend", "labels": {"name": "frontend"}},
    "spec": {
        "selector": {"name": "apache"},
        "ports": [{"protocol": "TCP", "port": 80, "targetPort": 80}],
        "clusterIP": "10.254.0.10",
        "externalIPs": ["192.168.2.15", "192.168.2.16"],
    },
}

EXPECTED = workloads_pb2.Service(
    metadata=meta_pb2.ObjectMeta(name="frontend", labels={"name": "frontend"}),
    spec=workloads_pb2.ServiceSpec(
        selector={"name": "apache"},
        ports=[workloads_pb2.ServicePort(protocol=meta_pb2.PROTOCOL_TCP, port=80, target_port=80)],
        cluster_ip="10.254.0.10",
        external_ips=["192.168.2.15", "192.168.2.16"],
    ),
)


def svc(data: Any, source: str = "svc.json") -> workloads_pb2.Service:
    (obj,) = manifests.load_text(json.dumps(data), source)
    assert isinstance(obj, workloads_pb2.Service)
    return obj


def error(data: Any, source: str = "bad.json") -> str:
    with pytest.raises(ManifestError) as info:
        manifests.load_text(json.dumps(data), source)
    return str(info.value)


def v1(**spec: Any) -> dict[str, Any]:
    data = copy.deepcopy(FRONTEND_V1)
    data["spec"].update(spec)
    return data


def flat(**fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(FRONTEND_V1BETA1)
    data.update(fields)
    return data


# ------------------------------------------------------------------ decoding


def test_v1_and_v1beta1_are_the_same_service() -> None:
    assert svc(FRONTEND_V1) == EXPECTED
    assert svc(FRONTEND_V1BETA1) == EXPECTED


def test_v1_every_field() -> None:
    got = svc(
        v1(
            ports=[
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
            ],
            sessionAffinity="ClientIP",
            type="ClusterIP",
        )
    )
    assert list(got.spec.ports) == [
        workloads_pb2.ServicePort(name="http", port=80, target_port_name="web"),
        workloads_pb2.ServicePort(name="dns", port=53, protocol=meta_pb2.PROTOCOL_UDP, target_port=5353),
    ]
    assert got.spec.session_affinity == "ClientIP"


def test_v1beta1_named_container_port_and_no_container_port() -> None:
    assert svc(flat(containerPort="http")).spec.ports[0].target_port_name == "http"
    data = flat()
    del data["containerPort"]
    port = svc(data).spec.ports[0]
    assert (port.port, port.target_port) == (80, 0)  # the server makes it the port itself


def test_v1beta1_ports_list_and_matching_flat_fields() -> None:
    ports = [{"name": "http", "port": 80, "containerPort": 8080}, {"name": "https", "port": 443}]
    data = flat(ports=ports, portName="http", containerPort=8080)
    got = svc(data).spec.ports
    assert [(p.name, p.port, p.target_port) for p in got] == [("http", 80, 8080), ("https", 443, 0)]
    data["port"] = 81
    assert error(data) == (
        "bad.json: port: conflicts with ports[0]; write the port once, in ports or in the top-level fields"
    )


def test_v1beta3_portal_and_public_ips() -> None:
    data: dict[str, Any] = {
        "apiVersion": "v1beta3",
        "kind": "Service",
        "metadata": {"name": "frontend", "labels": {"name": "frontend"}},
        "spec": {
            "selector": {"name": "apache"},
            "ports": [{"protocol": "TCP", "port": 80, "targetPort": 80}],
            "portalIP": "10.254.0.10",
            "publicIPs": ["192.168.2.15", "192.168.2.16"],
            "createExternalLoadBalancer": False,
        },
    }
    assert svc(data) == EXPECTED
    data["spec"]["publicIPs"] = ["0.0.0.0"]
    assert error(data) == (
        "bad.json: spec.publicIPs[0]: 0.0.0.0 cannot be an external IP "
        "(unspecified, loopback, link-local or multicast)"
    )


def test_a_2014_service_without_kind() -> None:
    # api/examples/service.json, mid-2014.
    data = {"id": "example", "port": 8000, "labels": {"name": "nginx"}, "selector": {"name": "nginx"}}
    got = svc(data)
    assert (got.metadata.name, got.spec.ports[0].port) == ("example", 8000)


# ------------------------------------------------------------------ refusals


def test_node_port_and_load_balancer_services_with_their_node_ports() -> None:
    got = svc(v1(type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert got.spec.type == workloads_pb2.SERVICE_TYPE_NODE_PORT
    assert got.spec.ports[0].node_port == 30080
    assert svc(v1(type="LoadBalancer")).spec.type == workloads_pb2.SERVICE_TYPE_LOAD_BALANCER
    assert svc(v1(type="ClusterIP")).spec.type == workloads_pb2.SERVICE_TYPE_UNSPECIFIED
    # v1beta1/v1beta3's way of asking for a load balancer, as Kubernetes converted it.
    assert svc(flat(createExternalLoadBalancer=True)).spec.type == workloads_pb2.SERVICE_TYPE_LOAD_BALANCER


def test_load_balancer_fields_and_external_names_are_refused_with_the_reason() -> None:
    assert error(v1(loadBalancerIP="1.2.3.4")) == (
        "bad.json: spec.loadBalancerIP: Atoll does not support this Kubernetes field; Atoll provisions "
        "no load balancers: a LoadBalancer service is served on every node's addresses on its node "
        "ports, as a NodePort service"
    )
    assert error(v1(type="ExternalName")) == (
        "bad.json: spec.type: Atoll does not support ExternalName services (DNS aliases)"
    )
    assert error(v1(type="nodePort")) == (
        "bad.json: spec.type: expected one of ClusterIP, LoadBalancer, NodePort, "
        'got "nodePort" (did you mean "NodePort"?)'
    )
    assert error(v1(clusterIPs=["10.254.0.10"])) == (
        "bad.json: spec.clusterIPs: Atoll does not support this Kubernetes field; set clusterIP"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            v1(ports=[{"port": 80, "nodePort": 30080}]),
            "spec.ports[0].nodePort: may only be set on NodePort and LoadBalancer services",
        ),
        (
            v1(type="NodePort", ports=[{"port": 80, "nodePort": 70000}]),
            "spec.ports[0].nodePort: must be between 1 and 65535, got 70000",
        ),
        (
            v1(
                type="NodePort",
                ports=[
                    {"name": "a", "port": 80, "nodePort": 30080},
                    {"name": "b", "port": 81, "nodePort": 30080},
                ],
            ),
            "spec.ports[1].nodePort: node port 30080/TCP is listed twice",
        ),
        (
            v1(type="LoadBalancer", clusterIP="None"),
            "spec.clusterIP: may not be None (headless) on a NodePort or LoadBalancer service",
        ),
        (v1(type="NodePort", ports=[{"port": 80, "nodePort": "x"}]), "spec.ports[0].nodePort: expected"),
    ],
)
def test_node_port_errors_name_the_field(data: dict[str, Any], expected: str) -> None:
    assert error(data).startswith(f"bad.json: {expected}")


def test_the_same_node_port_for_tcp_and_udp_of_one_service() -> None:
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
        {"name": "dns-tcp", "port": 53, "nodePort": 30053},
    ]
    assert [p.node_port for p in svc(v1(type="NodePort", ports=ports)).spec.ports] == [30053, 30053]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (v1(ports=[]), "spec.ports: must have at least one port"),
        (v1(ports=[{"port": 70000}]), "spec.ports[0].port: must be between 1 and 65535, got 70000"),
        (
            v1(ports=[{"port": 80}, {"port": 443}]),
            "spec.ports[0].name: is required when the service has more than one port",
        ),
        (
            v1(ports=[{"name": "a", "port": 80}, {"name": "a", "port": 81}]),
            "spec.ports[1].name: duplicate port name 'a'",
        ),
        (
            v1(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]),
            "spec.ports[1].port: port 80/TCP is listed twice",
        ),
        (
            v1(ports=[{"port": 80, "targetPort": "8080"}]),
            "spec.ports[0].targetPort: '8080' is a number written as text: write it without quotes for a port number",
        ),
        (
            v1(ports=[{"port": 80, "targetPort": True}]),
            "spec.ports[0].targetPort: expected a port number or a container port's name, got true",
        ),
        (
            v1(clusterIP="10.254.0.300"),
            "spec.clusterIP: '10.254.0.300' must be empty (allocated), None (a headless service) or an IPv4 address",
        ),
        (v1(externalIPs=["example.com"]), "spec.externalIPs[0]: 'example.com' is not an IP address"),
        (v1(sessionAffinity="Sticky"), 'spec.sessionAffinity: must be "None" or "ClientIP", got \'Sticky\''),
        (v1(selector={"name": "a b"}), "spec.selector[name]: invalid label value 'a b'"),
        (flat(port=0), "port: must be between 1 and 65535, got 0"),
        (flat(containerPort=99999), "containerPort: must be between 1 and 65535, got 99999"),
        (flat(portalIP="none"), "portalIP: 'none' must be empty (allocated), None"),
        (flat(publicIPs=["127.0.0.1"]), "publicIPs[0]: 127.0.0.1 cannot be an external IP"),
        (flat(sessionAffinity="sticky"), 'sessionAffinity: must be "None" or "ClientIP"'),
        (flat(id="front.end"), "id: 'front.end' must be a DNS-1123 label"),
        (flat(portName="HTTP"), "portName: 'HTTP' must be a DNS-1123 label"),
        (flat(prot="TCP"), 'prot: unknown field; did you mean "port"?'),
        (
            flat(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81, "containerPort": 0}], port=None),
            None,
        ),
        (
            flat(
                ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81, "containerPort": "8080"}],
                port=None,
            ),
            "ports[1].containerPort: '8080' is a number written as text",
        ),
    ],
)
def test_errors_point_into_each_shape(data: dict[str, Any], expected: str | None) -> None:
    if expected is None:
        svc(data)
    else:
        assert error(data).startswith(f"bad.json: {expected}")


def test_service_names_are_dns_labels() -> None:
    data = v1()
    data["metadata"]["name"] = "front.end"
    assert error(data) == (
        "bad.json: metadata.name: 'front.end' must be a DNS-1123 label: lower-case letters, digits and '-', "
        "starting and ending with a letter or digit"
    )


# ------------------------------------------------------------------ encoding


def test_output_looks_like_kubectl() -> None:
    got = svc(v1(ports=[{"name": "http", "port": 80, "targetPort": "web"}], sessionAffinity="None"))
    assert manifests.to_dict(got) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "frontend", "labels": {"name": "frontend"}},
        "spec": {
            "selector": {"name": "apache"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
            "clusterIP": "10.254.0.10",
            "type": "ClusterIP",
            "externalIPs": ["192.168.2.15", "192.168.2.16"],
            "sessionAffinity": "None",
        },
    }
    assert manifests.to_dict(svc(FRONTEND_V1BETA1)) == manifests.to_dict(svc(FRONTEND_V1))


def test_node_port_output_and_the_status_the_server_wrote() -> None:
    got = svc(v1(type="LoadBalancer", ports=[{"port": 80, "nodePort": 30080}], externalIPs=[]))
    got.status.load_balancer.SetInParent()
    got.status.conditions.add(
        type="LoadBalancerProvisioned",
        status=meta_pb2.CONDITION_STATUS_FALSE,
        reason="NoLoadBalancerProvider",
        observed_generation=1,
    )
    out = manifests.to_dict(got)
    assert out["spec"]["type"] == "LoadBalancer"
    assert out["spec"]["ports"] == [{"port": 80, "nodePort": 30080}]
    assert out["status"] == {
        "loadBalancer": {},
        "conditions": [
            {
                "type": "LoadBalancerProvisioned",
                "status": "False",
                "observedGeneration": 1,
                "reason": "NoLoadBalancerProvider",
            }
        ],
    }
    assert manifests.load_data(out) == [
        svc(v1(type="LoadBalancer", ports=[{"port": 80, "nodePort": 30080}], externalIPs=[]))
    ]


TEXT = st.text(max_size=8)
PORTS = st.one_of(
    st.builds(
        workloads_pb2.ServicePort,
        name=TEXT,
        protocol=st.sampled_from([0, 1, 2, 3]),
        port=st.integers(-(2**31), 2**31 - 1),
        target_port=st.integers(-(2**31), 2**31 - 1),
        node_port=st.integers(-(2**31), 2**31 - 1),
    ),
    st.builds(workloads_pb2.ServicePort, name=TEXT, port=st.integers(0, 65535), target_port_name=TEXT),
)


@given(
    st.builds(
        workloads_pb2.Service,
        metadata=st.builds(
            meta_pb2.ObjectMeta, name=TEXT, namespace=TEXT, labels=st.dictionaries(TEXT, TEXT)
        ),
        spec=st.builds(
            workloads_pb2.ServiceSpec,
            selector=st.dictionaries(TEXT, TEXT, max_size=2),
            ports=st.lists(PORTS, max_size=3),
            cluster_ip=TEXT,
            external_ips=st.lists(TEXT, max_size=2),
            session_affinity=TEXT,
            type=st.sampled_from([0, 2, 3]),
        ),
    )
)
def test_decode_of_encode_is_identity(service: workloads_pb2.Service) -> None:
    assert manifests.load_data(manifests.to_dict(service), validate=False) == [service]
