"""kubectl-style tables and describe text for every kind."""

from __future__ import annotations

import re
import time

import pytest
from google.protobuf import timestamp_pb2

from atoll import kinds
from atoll.v1 import meta_pb2, network_pb2, node_pb2, pod_pb2, workloads_pb2
from coordinator.cli import printers

NOW = time.time()


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ages are relative to NOW, whenever the test runs (collection may be minutes earlier)."""
    monkeypatch.setattr(time, "time", lambda: NOW)


def ago(seconds: float) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=int(NOW - seconds))


def meta(name: str, age: float = 300, **kw: object) -> meta_pb2.ObjectMeta:
    return meta_pb2.ObjectMeta(name=name, namespace="default", creation_timestamp=ago(age), **kw)  # type: ignore[arg-type]


RC = workloads_pb2.ReplicationController(
    metadata=meta("apache-controller", labels={"name": "apache"}),
    spec=workloads_pb2.ReplicationControllerSpec(
        replicas=3,
        selector={"name": "apache"},
        template=workloads_pb2.PodTemplateSpec(
            metadata=meta_pb2.ObjectMeta(labels={"name": "apache"}),
            spec=pod_pb2.PodSpec(
                containers=[
                    pod_pb2.Container(name="apache", image="fedora/apache"),
                    pod_pb2.Container(name="log", image="busybox"),
                ]
            ),
        ),
    ),
    status=workloads_pb2.ReplicationControllerStatus(replicas=2, ready_replicas=1),
)

SVC = workloads_pb2.Service(
    metadata=meta("frontend", labels={"name": "frontend"}),
    spec=workloads_pb2.ServiceSpec(
        selector={"name": "apache"},
        ports=[
            workloads_pb2.ServicePort(
                name="http", port=80, protocol=meta_pb2.PROTOCOL_TCP, target_port_name="web"
            ),
            workloads_pb2.ServicePort(name="dns", port=53, protocol=meta_pb2.PROTOCOL_UDP, target_port=5353),
        ],
        cluster_ip="10.254.0.10",
        external_ips=["192.168.2.15", "192.168.2.16"],
        session_affinity="None",
    ),
)


def endpoints(n: int) -> workloads_pb2.Endpoints:
    return workloads_pb2.Endpoints(
        metadata=meta("frontend"),
        subsets=[
            workloads_pb2.EndpointSubset(
                addresses=[workloads_pb2.EndpointAddress(ip=f"10.244.1.{i}") for i in range(n)],
                not_ready_addresses=[workloads_pb2.EndpointAddress(ip="10.244.9.9")],
                ports=[workloads_pb2.EndpointPort(name="http", port=8080)],
            )
        ],
    )


def event(
    reason: str, message: str, count: int = 1, last: float = 60, first: float = 600
) -> workloads_pb2.Event:
    return workloads_pb2.Event(
        metadata=meta(f"apache.{reason.lower()}"),
        involved_object=workloads_pb2.ObjectReference(kind="Pod", namespace="default", name="apache"),
        reason=reason,
        message=message,
        type="Normal",
        source_component="agent",
        source_host="minion-1",
        first_timestamp=ago(first),
        last_timestamp=ago(last),
        count=count,
    )


def lines(text: str) -> list[list[str]]:
    """Table cells, split on the three-space column gap."""
    return [[cell.strip() for cell in line.split("   ") if cell.strip()] for line in text.split("\n")]


def test_every_kind_has_a_table() -> None:
    assert {k.message for k in kinds.KINDS} <= set(printers.ROWS)


def test_replication_controllers() -> None:
    assert lines(printers.render_table(type(RC), [RC], wide=False)) == [
        ["CONTROLLER", "CONTAINER(S)", "IMAGE(S)", "SELECTOR", "REPLICAS", "CURRENT", "AGE"],
        ["apache-controller", "apache,log", "fedora/apache,busybox", "name=apache", "3", "2", "5m"],
    ]
    wide = lines(printers.render_table(type(RC), [RC], wide=True))
    assert wide[0][-1] == "READY" and wide[1][-1] == "1"
    unset = workloads_pb2.ReplicationController()
    unset.CopyFrom(RC)
    unset.spec.ClearField("replicas")
    assert lines(printers.render_table(type(RC), [unset], wide=False))[1][4] == "1"  # unset means 1


def test_services() -> None:
    assert lines(printers.render_table(type(SVC), [SVC], wide=False)) == [
        ["NAME", "TYPE", "LABELS", "SELECTOR", "IP", "PORT(S)", "AGE"],
        ["frontend", "ClusterIP", "name=frontend", "name=apache", "10.254.0.10", "80/TCP,53/UDP", "5m"],
    ]
    node_port = workloads_pb2.Service()
    node_port.CopyFrom(SVC)
    node_port.spec.type = workloads_pb2.SERVICE_TYPE_NODE_PORT
    node_port.spec.ports[0].node_port = 30080
    row = lines(printers.render_table(type(SVC), [node_port], wide=False))[1]
    assert (row[1], row[5]) == ("NodePort", "80:30080/TCP,53/UDP")
    described = printers.describe(node_port)
    assert "Type:" in described and "NodePort" in described
    assert "30080/TCP" in described
    wide = lines(printers.render_table(type(SVC), [SVC], wide=True))
    assert wide[0][-2:] == ["EXTERNAL IP(S)", "SESSION AFFINITY"]
    assert wide[1][-2:] == ["192.168.2.15,192.168.2.16", "None"]


def test_endpoints_are_cut_like_kubectl() -> None:
    assert printers.endpoints_text(endpoints(2)) == "10.244.1.0:8080,10.244.1.1:8080"
    assert printers.endpoints_text(endpoints(5)) == (
        "10.244.1.0:8080,10.244.1.1:8080,10.244.1.2:8080 + 2 more..."
    )
    assert printers.endpoints_text(workloads_pb2.Endpoints()) == "<none>"
    table = lines(printers.render_table(workloads_pb2.Endpoints, [endpoints(1)], wide=True))
    assert table == [["NAME", "ENDPOINTS", "AGE", "NOT READY"], ["frontend", "10.244.1.0:8080", "5m", "1"]]


def test_events() -> None:
    # Ages in hours and days: the table reads the clock, and a slow run must not tip 60s into 61s.
    pulled = event("Pulled", "pulled\nfedora/apache", 3, last=3 * 3600, first=3 * 86400)
    rows = lines(printers.render_table(workloads_pb2.Event, [pulled], wide=True))
    assert rows == [
        ["LAST SEEN", "COUNT", "TYPE", "REASON", "OBJECT", "MESSAGE", "FIRST SEEN", "SOURCE"],
        ["3h", "3", "Normal", "Pulled", "pod/apache", "pulled fedora/apache", "3d", "agent, minion-1"],
    ]
    long = event("Failed", "x" * 200)
    assert lines(printers.render_table(workloads_pb2.Event, [long], wide=False))[1][-1] == "x" * 77 + "..."


def test_events_section() -> None:
    text = printers.describe_events(
        [event("Started", "started", last=30), event("Pulled", "pulled", 3)], now=NOW
    )
    assert text.split("\n") == [
        "Events:",
        "  Type     Reason    Age                 From              Message",
        "  ----     ------    ---                 ----              -------",
        "  Normal   Pulled    60s (x3 over 10m)   agent, minion-1   pulled",
        "  Normal   Started   30s                 agent, minion-1   started",
    ]
    assert printers.describe_events([]) == "Events:  <none>"


def test_describe_replication_controller() -> None:
    pods = [
        pod_pb2.Pod(
            metadata=meta_pb2.ObjectMeta(name=f"apache-{i}", namespace="default", labels={"name": "apache"}),
            status=pod_pb2.PodStatus(phase=phase),
        )
        for i, phase in enumerate(
            [pod_pb2.POD_PHASE_RUNNING, pod_pb2.POD_PHASE_RUNNING, pod_pb2.POD_PHASE_PENDING]
        )
    ]
    pods.append(
        pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="other", namespace="default", labels={"name": "web"}))
    )
    text = printers.describe(RC, pods=pods, events=[])
    assert text.split("\n")[:7] == [
        "Name:         apache-controller",
        "Namespace:    default",
        "Image(s):     fedora/apache,busybox",
        "Selector:     name=apache",
        "Labels:       name=apache",
        "Replicas:     2 current / 3 desired",
        "Pods Status:  2 Running / 1 Waiting / 0 Succeeded / 0 Failed",
    ]
    assert text.endswith("Events:  <none>")
    assert "Pods Status" not in printers.describe_replication_controller(RC)


def test_describe_service_with_endpoints() -> None:
    text = printers.describe(SVC, endpoints=endpoints(5))
    assert "External IPs:      192.168.2.15,192.168.2.16" in text
    assert (
        "Port:              http  80/TCP\nTargetPort:        web/TCP\nEndpoints:         10.244.1.0:8080,"
        in text
    )
    assert "10.244.1.4:8080" in text  # describe lists them all
    assert "Port:              dns  53/UDP\nTargetPort:        5353/UDP\nEndpoints:         <none>" in text
    assert "Events" not in text


def test_networks_show_the_values_in_force() -> None:
    net = network_pb2.Network(
        metadata=meta_pb2.ObjectMeta(name="default"), spec=network_pb2.NetworkSpec(network="10.100.0.0/16")
    )
    assert lines(printers.render_table(network_pb2.Network, [net], wide=True)) == [
        ["NAME", "NETWORK", "SUBNET LEN", "RANGE", "BACKEND", "VNI", "MTU", "PORT", "IP MASQ", "AGE"],
        [
            "default",
            "10.100.0.0/16",
            "24",
            "10.100.1.0 - 10.100.255.0",
            "vxlan",
            "1",
            "auto",
            "8472/udp",
            "true",
            "<unknown>",
        ],
    ]


def test_subnet_leases() -> None:
    lease = network_pb2.Subnet(
        metadata=meta_pb2.ObjectMeta(name="10.100.50.0-24"),
        spec=network_pb2.SubnetSpec(
            cidr="10.100.50.0/24",
            node_name="minion-1",
            public_ip="192.168.1.5",
            vtep_mac="0a:58:0a:64:32:00",
            expiration=timestamp_pb2.Timestamp(seconds=int(NOW + 3 * 3600 + 30)),
        ),
    )
    expired = network_pb2.Subnet()
    expired.CopyFrom(lease)
    expired.spec.expiration.seconds = int(NOW - 600)
    assert lines(printers.render_table(network_pb2.Subnet, [lease, expired], wide=False)) == [
        ["SUBNET", "NODE", "PUBLIC IP", "VTEP MAC", "EXPIRES"],
        ["10.100.50.0/24", "minion-1", "192.168.1.5", "0a:58:0a:64:32:00", "in 3h"],
        ["10.100.50.0/24", "minion-1", "192.168.1.5", "0a:58:0a:64:32:00", "expired 10m ago"],
    ]


REGISTRIES = network_pb2.Registries(
    metadata=meta_pb2.ObjectMeta(name="default"),
    spec=network_pb2.RegistriesSpec(
        search=["registry.example.com", "docker.io"],
        insecure=["registry.example.com:5000"],
        auths=[
            network_pb2.RegistryAuth(registry="registry.example.com", username="deploy", password="s3cret")
        ],
    ),
)


def test_registries_never_show_a_password() -> None:
    table = printers.render_table(network_pb2.Registries, [REGISTRIES], wide=True)
    assert lines(table) == [
        ["NAME", "SEARCH", "INSECURE", "BLOCKED", "MIRRORS", "AUTHS", "AGE"],
        [
            "default",
            "registry.example.com,docker.io",
            "registry.example.com:5000",
            "<none>",
            "<none>",
            "registry.example.com (deploy)",
            "<unknown>",
        ],
    ]
    text = printers.describe(REGISTRIES)
    assert "s3cret" not in text and "passwordSet: true" in text


def test_generic_describe() -> None:
    lease = network_pb2.Subnet(
        metadata=meta_pb2.ObjectMeta(name="10.100.50.0-24", labels={"node": "minion-1"}),
        spec=network_pb2.SubnetSpec(cidr="10.100.50.0/24", node_name="minion-1"),
    )
    assert printers.describe(lease, events=[]).split("\n") == [
        "Name:     10.100.50.0-24",
        "Labels:   node=minion-1",
        "Created:  <none>",
        "Spec:",
        "  cidr: 10.100.50.0/24",
        "  nodeName: minion-1",
        "Events:  <none>",
    ]
    text = printers.describe(event("Pulled", "pulled"))
    assert re.search(r"^Reason: +Pulled$", text, re.MULTILINE) and "InvolvedObject:\n  kind: Pod" in text


def test_pods_and_nodes_still_describe_as_before() -> None:
    pod = pod_pb2.Pod(
        metadata=meta("apache"), spec=pod_pb2.PodSpec(containers=[pod_pb2.Container(name="a", image="b")])
    )
    assert printers.describe(pod) == printers.describe_pod(pod)
    assert printers.describe(pod, events=[]).endswith("\nEvents:  <none>")
    node = node_pb2.Node(metadata=meta_pb2.ObjectMeta(name="minion-1"))
    assert printers.describe(node, pods=[pod]) == printers.describe_node(node, [pod])
    assert "apache" in printers.describe_node(node, [pod])


@pytest.mark.parametrize("message_type", list(printers.ROWS))
def test_no_headers_and_empty_messages(message_type: type) -> None:
    empty = message_type()
    text = printers.render_table(message_type, [empty], wide=True, headers=False)
    assert "\n" not in text and text
    assert printers.render_table(message_type, [], wide=False, headers=False) == ""
