"""Control characters in names, labels, images and every other string field, on protos directly.

`re.match(r"^...$")` let a final "\\n" through: every name check is a full
match now, and atoll.validation.text refuses control characters in every
string field as a second line (free text keeps tab and newline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.message import Message

from atoll import agentconfig, errors, validation
from atoll.v1 import meta_pb2, namespace_pb2, network_pb2, node_pb2, pod_pb2, workloads_pb2
from coordinator.admission import podsecurity
from coordinator.auth import certs, tokens
from coordinator.cli.provisioning import cloudinit

TAILS = pytest.mark.parametrize("tail", ["\n", "\r", "\t", "\x00"], ids=["LF", "CR", "TAB", "NUL"])


def pod() -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace = "web", "default"
    c = p.spec.containers.add(name="main", image="registry.example.com:5000/team/web:1.0")
    c.ports.add(name="http", container_port=80)
    c.env.add(name="MODE", value="x")
    c.volume_mounts.add(name="data", mount_path="/data")
    p.spec.volumes.add(name="data").empty_dir.SetInParent()
    p.spec.networks.add(name="sriov-a", interface="net1")
    validation.default_pod(p)
    return p


def service() -> workloads_pb2.Service:
    s = workloads_pb2.Service()
    s.metadata.name, s.metadata.namespace = "web", "default"
    s.spec.ports.add(name="http", port=80, target_port_name="http")
    s.spec.cluster_ip = "10.254.0.10"
    s.spec.external_ips.append("198.51.100.10")
    validation.default_service(s)
    return s


def endpoints() -> workloads_pb2.Endpoints:
    e = workloads_pb2.Endpoints()
    e.metadata.name, e.metadata.namespace = "web", "default"
    subset = e.subsets.add()
    subset.addresses.add(ip="10.100.1.2", node_name="h0")
    subset.ports.add(name="http", port=80)
    return e


def subnet() -> network_pb2.Subnet:
    s = network_pb2.Subnet()
    s.metadata.name = "10.100.5.0-24"
    s.spec.cidr, s.spec.node_name, s.spec.vtep_mac = "10.100.5.0/24", "h0", "0a:58:0a:64:05:00"
    return s


P = pod_pb2.Pod
S = workloads_pb2.Service
# (what, a valid object, its field path, how to append the tail to that field)
CASES: list[tuple[str, Callable[[], Message], str, Callable[[Any, str], None]]] = [
    ("pod name", pod, "metadata.name", lambda o, t: setattr(o.metadata, "name", "web" + t)),
    ("namespace", pod, "metadata.namespace", lambda o, t: setattr(o.metadata, "namespace", "default" + t)),
    ("label value", pod, "metadata.labels[app]", lambda o, t: o.metadata.labels.update(app="web" + t)),
    (
        "container name",
        pod,
        "spec.containers[0].name",
        lambda o, t: setattr(o.spec.containers[0], "name", "main" + t),
    ),
    (
        "image",
        pod,
        "spec.containers[0].image",
        lambda o, t: setattr(o.spec.containers[0], "image", "busybox" + t),
    ),
    (
        "container port name",
        pod,
        "spec.containers[0].ports[0].name",
        lambda o, t: setattr(o.spec.containers[0].ports[0], "name", "http" + t),
    ),
    (
        "env name",
        pod,
        "spec.containers[0].env[0].name",
        lambda o, t: setattr(o.spec.containers[0].env[0], "name", "MODE" + t),
    ),
    ("volume name", pod, "spec.volumes[0].name", lambda o, t: setattr(o.spec.volumes[0], "name", "data" + t)),
    ("node name", pod, "spec.nodeName", lambda o, t: setattr(o.spec, "node_name", "h0" + t)),
    (
        "node selector",
        pod,
        "spec.nodeSelector[disk]",
        lambda o, t: o.spec.node_selector.update(disk="ssd" + t),
    ),
    (
        "network",
        pod,
        "spec.networks[0].name",
        lambda o, t: setattr(o.spec.networks[0], "name", "sriov-a" + t),
    ),
    (
        "interface",
        pod,
        "spec.networks[0].interface",
        lambda o, t: setattr(o.spec.networks[0], "interface", "net1" + t),
    ),
    ("service name", service, "metadata.name", lambda o, t: setattr(o.metadata, "name", "web" + t)),
    (
        "service port name",
        service,
        "spec.ports[0].name",
        lambda o, t: setattr(o.spec.ports[0], "name", "http" + t),
    ),
    (
        "target port name",
        service,
        "spec.ports[0].targetPort",
        lambda o, t: setattr(o.spec.ports[0], "target_port_name", "http" + t),
    ),
    ("cluster IP", service, "spec.clusterIP", lambda o, t: setattr(o.spec, "cluster_ip", "10.254.0.10" + t)),
    (
        "external IP",
        service,
        "spec.externalIPs[0]",
        lambda o, t: o.spec.external_ips.__setitem__(0, "198.51.100.10" + t),
    ),
    ("service selector", service, "spec.selector[app]", lambda o, t: o.spec.selector.update(app="web" + t)),
    (
        "endpoint IP",
        endpoints,
        "subsets[0].addresses[0].ip",
        lambda o, t: setattr(o.subsets[0].addresses[0], "ip", "10.100.1.2" + t),
    ),
    (
        "endpoint node",
        endpoints,
        "subsets[0].addresses[0].nodeName",
        lambda o, t: setattr(o.subsets[0].addresses[0], "node_name", "h0" + t),
    ),
    (
        "endpoint port",
        endpoints,
        "subsets[0].ports[0].name",
        lambda o, t: setattr(o.subsets[0].ports[0], "name", "http" + t),
    ),
    ("lease node", subnet, "spec.nodeName", lambda o, t: setattr(o.spec, "node_name", "h0" + t)),
    ("vtep MAC", subnet, "spec.vtepMAC", lambda o, t: setattr(o.spec, "vtep_mac", "0a:58:0a:64:05:00" + t)),
    (
        "node",
        lambda: node_pb2.Node(metadata=meta_pb2.ObjectMeta(name="h0")),
        "metadata.name",
        lambda o, t: setattr(o.metadata, "name", "h0" + t),
    ),
    (
        "namespace object",
        lambda: namespace_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name="team")),
        "metadata.name",
        lambda o, t: setattr(o.metadata, "name", "team" + t),
    ),
]
VALIDATORS: dict[type[Message], Callable[[Message], validation.Problems]] = {
    pod_pb2.Pod: validation.validate_pod,  # type: ignore[dict-item]
    workloads_pb2.Service: validation.validate_service,  # type: ignore[dict-item]
    workloads_pb2.Endpoints: validation.validate_endpoints,  # type: ignore[dict-item]
    network_pb2.Subnet: validation.validate_subnet,  # type: ignore[dict-item]
    node_pb2.Node: validation.validate_node,  # type: ignore[dict-item]
    namespace_pb2.Namespace: podsecurity.validate_namespace,  # type: ignore[dict-item]
}


def check(obj: Message) -> list[tuple[str, str]]:
    return VALIDATORS[type(obj)](obj).items


@pytest.mark.parametrize(("what", "build", "field", "spoil"), CASES, ids=[c[0] for c in CASES])
@TAILS
def test_a_trailing_control_character_is_refused_naming_the_field(
    what: str, build: Callable[[], Message], field: str, spoil: Callable[[Any, str], None], tail: str
) -> None:
    obj = build()
    assert check(obj) == [], what  # valid as built
    spoil(obj, tail)
    problems = check(obj)
    assert problems and problems[0][0] == field, problems
    with pytest.raises(errors.InvalidArgument) as caught:
        VALIDATORS[type(obj)](obj).raise_first()
    assert caught.value.field == field


@TAILS
def test_label_and_annotation_keys(tail: str) -> None:
    p = pod()
    p.metadata.labels["app" + tail] = "web"
    assert check(p)[0][0] == f"metadata.labels[app{tail}]"
    p = pod()
    p.metadata.annotations["note" + tail] = "x"
    assert check(p)[0][0] == f"metadata.annotations[note{tail}]"


def test_free_text_keeps_tab_and_newline_and_nothing_else() -> None:
    def texty() -> pod_pb2.Pod:
        p = pod()
        c = p.spec.containers[0]
        c.env[0].value = "line one\n\tline two\n"
        c.command.extend(["sh", "-c"])
        c.args.append("echo a\n\techo b\n")
        p.metadata.annotations["note"] = "multi\nline\ttext"
        return p

    assert check(texty()) == []
    spoilers: list[tuple[str, str, Callable[[pod_pb2.Pod, str], int]]] = [
        (
            "\r",
            "spec.containers[0].env[0].value",
            lambda p, b: _append(p.spec.containers[0].env[0], "value", b),
        ),
        ("\x00", "spec.containers[0].args[0]", lambda p, b: _append_item(p.spec.containers[0].args, 0, b)),
        (
            "\x1b[2J",
            "metadata.annotations[note]",
            lambda p, b: _append_item(p.metadata.annotations, "note", b),
        ),
        (
            "\x7f",
            "spec.containers[0].command[0]",
            lambda p, b: _append_item(p.spec.containers[0].command, 0, b),
        ),
    ]
    for bad, field, spoil in spoilers:
        p = texty()
        at = spoil(p, bad)
        assert check(p) == [(field, f"contains a control character (U+{ord(bad[0]):04X}) at position {at}")]


def _append(obj: Message, name: str, text: str) -> int:
    at = len(getattr(obj, name))
    setattr(obj, name, getattr(obj, name) + text)
    return at


def _append_item(container: Any, key: Any, text: str) -> int:
    at = len(container[key])
    container[key] = container[key] + text
    return at


def test_every_string_field_is_walked_with_its_path() -> None:
    p = pod()
    p.spec.containers[0].working_dir = "/srv\n"
    p.spec.volumes.add(name="host").host_path.path = "/var/\x00log"
    p.spec.containers[0].volume_mounts[0].mount_path = "/data\r"
    fields = sorted(f for f, _ in check(p))
    assert fields == [
        "spec.containers[0].volumeMounts[0].mountPath",
        "spec.containers[0].workingDir",
        "spec.volumes[1].hostPath.path",
    ]
    # The status is Atoll's own (an engine's error text); it is not walked.
    p = pod()
    p.status.message = "pull failed:\r\x1b[31mdenied"
    assert check(p) == []


@TAILS
def test_the_other_name_checks(tail: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="node_name"):
        agentconfig.load(["--node-name", "h0" + tail], environ={})
    with pytest.raises(errors.InvalidArgument, match="join_token"):
        agentconfig.load(["--join-token", "abcdef.0123456789abcdef" + tail], environ={})
    with pytest.raises(errors.InvalidArgument) as user:
        certs.check_user("alice" + tail)
    assert user.value.field == "user"
    token = tokens.new_token("abcdef", "0123456789abcdef", ttl=60)
    token.metadata.name += tail
    with pytest.raises(errors.InvalidArgument) as token_id:
        tokens.validate(token)
    assert token_id.value.field == "metadata.name"
    host = cloudinit.HostConfig(
        hostname="h0" + tail, coordinator="10.0.0.1:6443", join_token="t", ca_hash="h"
    )
    with pytest.raises(errors.InvalidArgument, match="hostname"):
        cloudinit.validate(host)
