"""A trailing newline (or any control character) in a name is refused over real gRPC, naming the field.

`re.match(r"^...$")` accepts "web\\n": `$` matches before a final newline.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.message import Message

from atoll import errors, kinds, pki
from atoll.v1 import meta_pb2, namespace_pb2, pod_pb2, workloads_pb2
from coordinator.auth import tokens
from tests.functional.harness import Cluster, eventually
from tests.functional.test_security import _join


def _pod(change: Callable[[pod_pb2.Pod], None]) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = "web"
    p.spec.containers.add(name="main", image="busybox")
    change(p)
    return p


def _service(change: Callable[[workloads_pb2.Service], None]) -> workloads_pb2.Service:
    s = workloads_pb2.Service()
    s.metadata.name = "web"
    s.spec.selector["app"] = "web"
    s.spec.ports.add(port=80, protocol=meta_pb2.PROTOCOL_TCP)
    change(s)
    return s


def _set(path: str, value: str) -> Callable[[Message], None]:
    def change(obj: Message) -> None:
        *parents, last = path.split(".")
        target = obj
        for part in parents:
            target = getattr(target, part)
        setattr(target, last, value)

    return change


CASES: list[tuple[str, Callable[[str], Message], str]] = [
    ("pod name", lambda t: _pod(_set("metadata.name", "web" + t)), "metadata.name"),
    ("pod namespace", lambda t: _pod(_set("metadata.namespace", "default" + t)), "metadata.namespace"),
    (
        "label value",
        lambda t: _pod(lambda p: p.metadata.labels.update(app="web" + t)),
        "metadata.labels[app]",
    ),
    (
        "image",
        lambda t: _pod(lambda p: setattr(p.spec.containers[0], "image", "busybox" + t)),
        "spec.containers[0].image",
    ),
    ("service name", lambda t: _service(_set("metadata.name", "web" + t)), "metadata.name"),
    (
        "service port name",
        lambda t: _service(lambda s: setattr(s.spec.ports[0], "name", "http" + t)),
        "spec.ports[0].name",
    ),
    (
        "namespace",
        lambda t: namespace_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name="team" + t)),
        "metadata.name",
    ),
]


@pytest.mark.parametrize("tail", ["\n", "\r", "\t", "\x00"], ids=["LF", "CR", "TAB", "NUL"])
async def test_names_ending_in_a_control_character_are_refused_naming_the_field(
    cluster: Cluster, tail: str
) -> None:
    client = cluster.client
    assert client is not None
    for what, build, field in CASES:
        with pytest.raises(errors.InvalidArgument) as caught:
            await client.create(build(tail))
        assert caught.value.field == field, what
    token_id, secret = tokens.generate()
    await client.create(tokens.new_token(token_id, secret, ttl=600, uses=2))
    with pytest.raises(errors.InvalidArgument) as joined:
        await _join(cluster, f"{token_id}.{secret}", "h-1" + tail)
    assert joined.value.field == "node_name"
    # Nothing was stored, and the token use was not spent: the right name still joins.
    assert (
        pki.subject_cn(pki.load_cert((await _join(cluster, f"{token_id}.{secret}", "h-1")).certificate))
        == "h-1"
    )


EVENT = kinds.by_name("Event")


async def test_a_bad_service_written_past_the_api_gets_an_event_and_blocks_no_other(cluster: Cluster) -> None:
    """Defence in depth: the agent refuses what the coordinator should have; the rest is served."""
    client, registry = cluster.client, cluster.coordinator.registry
    assert client is not None and registry is not None
    node = await cluster.add_node("node-a")
    good = workloads_pb2.Service()
    good.metadata.name = "api"
    good.spec.ports.add(port=80, protocol=meta_pb2.PROTOCOL_TCP)
    await client.create(good)
    bad = workloads_pb2.Service()
    bad.metadata.namespace, bad.metadata.name = "default", "web\n"
    bad.spec.cluster_ip = "10.254.9.9"
    bad.spec.session_affinity = "None"
    bad.spec.ports.add(port=80, target_port=80, protocol=meta_pb2.PROTOCOL_TCP)
    await registry.create(bad)  # straight into the store: the API would refuse it

    async def events() -> list[str]:
        items, _ = await client.list(EVENT)
        return [
            e.message  # type: ignore[attr-defined]
            for e in items
            if e.reason == "FailedProgramService"  # type: ignore[attr-defined]
            and e.involved_object.kind == "Node"  # type: ignore[attr-defined]
            and e.involved_object.name == "node-a"  # type: ignore[attr-defined]
        ]

    (message,) = await eventually(events, what="the agent's event about the bad service")
    assert "'default/web\\n'" in message and "\n" not in message
    # The good service went in all the same, no rule names the bad one, and nothing failed.
    assert node.netfilter.table is not None and node.netfilter.elements("no-endpoints")
    assert all("web\n" not in script for script in node.netfilter.scripts)
