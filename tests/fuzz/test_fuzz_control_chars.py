"""Fuzzing names that end in (or hold) a control character, on both sides of the wire.

Each example takes a valid pod or service, puts a control character (LF, CR,
TAB, NUL most often: `re.match(r"^...$")` let a final LF through) into one
name-like field, and checks:

* the coordinator, over real gRPC, refuses the create with INVALID_ARGUMENT
  naming that field, and stores nothing;
* the agent, handed the same object past the coordinator, refuses it too: a pod
  gets no container (agent.pods.syncer.refusal), a service no nft rule, while a
  good service beside it is still served (agent.proxy on the recording fake).

Derandomized, so CI sees the same inputs every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.pods.syncer import refusal
from agent.proxy import FakeNetfilter, ServiceProxy
from atoll import errors, kinds, validation
from atoll.v1 import meta_pb2, node_api_pb2, pod_pb2, workloads_pb2
from tests.fuzz.test_fuzz_grpc import Server

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CONTROLS = st.one_of(
    st.sampled_from(["\n", "\r", "\t", "\x00"]), st.characters(max_codepoint=0x1F), st.just("\x7f")
)
valid = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)


@st.composite
def spoiled(draw: st.DrawFn) -> str:
    """A valid name with a control character at its end (mostly) or inside it."""
    name, control = draw(valid), draw(CONTROLS)
    at = draw(st.one_of(st.just(len(name)), st.integers(0, len(name))))
    return name[:at] + control + name[at:]


def base_pod() -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "web", "default", "u-1"
    pod.metadata.labels["app"] = "web"
    c = pod.spec.containers.add(name="main", image="busybox")
    c.ports.add(name="http", container_port=80)
    c.env.add(name="MODE", value="a\tmulti\nline value")  # free text: tab and newline are fine
    c.volume_mounts.add(name="data", mount_path="/data")
    pod.spec.volumes.add(name="data").empty_dir.SetInParent()
    validation.default_pod(pod)
    return pod


def base_service(name: str = "web", cluster_ip: str = "10.254.0.10") -> workloads_pb2.Service:
    svc = workloads_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = name, "default"
    svc.spec.selector["app"] = "web"
    svc.spec.cluster_ip = cluster_ip
    svc.spec.ports.add(name="http", port=80, target_port=80, protocol=meta_pb2.PROTOCOL_TCP)
    validation.default_service(svc)
    return svc


def _label_key(pod: pod_pb2.Pod, bad: str) -> None:
    del pod.metadata.labels["app"]
    pod.metadata.labels[bad] = "web"


# (field the error must name, how to spoil it); "{bad}" in a field is the spoiled text.
POD_FIELDS: list[tuple[str, Callable[[pod_pb2.Pod, str], None]]] = [
    ("metadata.name", lambda p, b: setattr(p.metadata, "name", b)),
    ("metadata.namespace", lambda p, b: setattr(p.metadata, "namespace", b)),
    ("metadata.labels[{bad}]", _label_key),
    ("metadata.labels[app]", lambda p, b: p.metadata.labels.update(app=b)),
    ("metadata.annotations[{bad}]", lambda p, b: p.metadata.annotations.update({b: "x"})),
    ("spec.containers[0].name", lambda p, b: setattr(p.spec.containers[0], "name", b)),
    ("spec.containers[0].image", lambda p, b: setattr(p.spec.containers[0], "image", b)),
    ("spec.containers[0].ports[0].name", lambda p, b: setattr(p.spec.containers[0].ports[0], "name", b)),
    ("spec.containers[0].env[0].name", lambda p, b: setattr(p.spec.containers[0].env[0], "name", b)),
    ("spec.volumes[0].name", lambda p, b: setattr(p.spec.volumes[0], "name", b)),
    ("spec.nodeSelector[disk]", lambda p, b: p.spec.node_selector.update(disk=b)),
]
SERVICE_FIELDS: list[tuple[str, Callable[[workloads_pb2.Service, str], None]]] = [
    ("metadata.name", lambda s, b: setattr(s.metadata, "name", b)),
    ("metadata.namespace", lambda s, b: setattr(s.metadata, "namespace", b)),
    ("spec.ports[0].name", lambda s, b: setattr(s.spec.ports[0], "name", b)),
    ("spec.selector[app]", lambda s, b: s.spec.selector.update(app=b)),
]
# Fields the proxy renders (the selector is the endpoints controller's business, not the proxy's).
RENDERED = {"metadata.name", "metadata.namespace", "spec.ports[0].name"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("fuzz-control"))
    yield s
    s.close()


def refused_over_grpc(server: Server, obj: pod_pb2.Pod | workloads_pb2.Service, field: str) -> None:
    obj.metadata.uid = ""
    with pytest.raises(errors.InvalidArgument) as caught:
        server.run(lambda: server.client.create(obj))
    assert caught.value.field == field, caught.value
    registry = server.cluster.coordinator.registry
    assert registry is not None
    with pytest.raises(errors.NotFound):
        server.run(lambda: registry.get(kinds.of(obj), obj.metadata.namespace, obj.metadata.name))


@FUZZ
@given(st.integers(0, len(POD_FIELDS) - 1), spoiled())
def test_pods(server: Server, which: int, bad: str) -> None:
    field, spoil = POD_FIELDS[which]
    field = field.replace("{bad}", bad)
    pod = base_pod()
    spoil(pod, bad)
    assert refusal(pod).startswith(f"{field}: "), refusal(pod)  # the agent
    refused_over_grpc(server, pod, field)  # the coordinator


@FUZZ
@given(st.integers(0, len(SERVICE_FIELDS) - 1), spoiled())
def test_services(server: Server, which: int, bad: str) -> None:
    field, spoil = SERVICE_FIELDS[which]
    svc = base_service()
    spoil(svc, bad)
    # The agent: the bad service gets no rule and is reported; the good one beside it is served.
    if field in RENDERED:
        good = base_service("api", "10.254.0.11")
        push = node_api_pb2.ServiceState(generation=1, services=[svc, good])
        for s in (svc, good):
            ep = push.endpoints.add()
            ep.metadata.name, ep.metadata.namespace = s.metadata.name, s.metadata.namespace
            subset = ep.subsets.add()
            subset.addresses.add(ip="10.100.1.2", node_name="h0")
            subset.ports.add(name=s.spec.ports[0].name, port=80, protocol=meta_pb2.PROTOCOL_TCP)
        failures: list[str] = []
        nf = FakeNetfilter()
        proxy = ServiceProxy(nf, on_failure=lambda owner, _why: failures.append(owner))
        report = asyncio.run(proxy.apply(push, {"10.100.1.1"}))
        assert report.added == ("default/api",) and report.failed
        assert failures == [f"{svc.metadata.namespace}/{svc.metadata.name}"]
        assert all(c == "\n" or c >= " " for c in nf.scripts[-1])
    refused_over_grpc(server, svc, field)  # the coordinator
