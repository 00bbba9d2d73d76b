"""first_pod_problem finds what validate_pod finds first, with the spec's half kept per spec
(agent.pods.syncer.SpecVerdicts): the agent's refusal says the same as before, whatever is wrong."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pods.syncer import SpecVerdicts, refusal
from atoll import validation
from atoll.v1 import pod_pb2


def base_pod() -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "web", "default", "u-1"
    pod.metadata.labels["app"] = "web"
    c = pod.spec.containers.add(name="main", image="busybox", command=["sh", "-c", "sleep 1"])
    c.ports.add(name="http", container_port=80)
    c.env.add(name="MODE", value="a\tmulti\nline value")
    c.volume_mounts.add(name="data", mount_path="/data")
    pod.spec.volumes.add(name="data").empty_dir.SetInParent()
    validation.default_pod(pod)
    return pod


def _dup_container(p: pod_pb2.Pod) -> None:
    p.spec.containers.add().CopyFrom(p.spec.containers[0])


SPOILERS: dict[str, Callable[[pod_pb2.Pod], None]] = {
    "name": lambda p: setattr(p.metadata, "name", "Bad_Name"),
    "name control": lambda p: setattr(p.metadata, "name", "web\n"),
    "namespace": lambda p: setattr(p.metadata, "namespace", "-x"),
    "label key": lambda p: p.metadata.labels.__setitem__("bad key!", "v"),
    "label control": lambda p: p.metadata.labels.__setitem__("app", "w\x00eb"),
    "annotation control": lambda p: p.metadata.annotations.__setitem__("note", "a\x1bb"),
    "image": lambda p: setattr(p.spec.containers[0], "image", "UPPER/Case"),
    "image control": lambda p: setattr(p.spec.containers[0], "image", "busybox\r"),
    "command control": lambda p: p.spec.containers[0].command.append("x\x07"),
    "container name": lambda p: setattr(p.spec.containers[0], "name", "Main"),
    "duplicate container": _dup_container,
    "no containers": lambda p: p.spec.ClearField("containers"),
    "port": lambda p: setattr(p.spec.containers[0].ports[0], "container_port", 70000),
    "env name": lambda p: setattr(p.spec.containers[0].env[0], "name", "1BAD"),
    "mount": lambda p: setattr(p.spec.containers[0].volume_mounts[0], "name", "missing"),
    "volume path": lambda p: p.spec.volumes.add(name="h").host_path.SetInParent(),
}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(sorted(SPOILERS)), max_size=4, unique=True))
def test_the_first_problem_is_validate_pods_first(spoilers: list[str]) -> None:
    pod = base_pod()
    for name in sorted(
        spoilers, key=lambda n: n == "no containers"
    ):  # that one last: the rest need a container
        SPOILERS[name](pod)
    items = validation.validate_pod(pod).items
    assert validation.first_pod_problem(pod) == (items[0] if items else None)
    expected = f"{items[0][0]}: {items[0][1]}" if items else ""
    kept = SpecVerdicts()
    assert refusal(pod) == refusal(pod, kept) == refusal(pod, kept) == expected


def test_pods_of_one_spec_share_its_verdict_and_keep_their_own_metadatas() -> None:
    kept = SpecVerdicts(limit=2)
    good, bad = base_pod(), base_pod()
    bad.metadata.name = "Bad_Name"
    assert refusal(good, kept) == ""
    assert refusal(bad, kept).startswith("metadata.name: ")  # same spec, its own metadata
    spoiled = base_pod()
    spoiled.spec.containers[0].image = "busybox\r"
    assert refusal(spoiled, kept).startswith("spec.containers[0].image: ")
    for i in range(5):  # more specs than kept: the kept ones are dropped, the answers stay right
        other = base_pod()
        other.spec.containers[0].command.append(f"arg-{i}")
        assert refusal(other, kept) == ""
    assert refusal(spoiled, kept).startswith("spec.containers[0].image: ")


def test_the_problem_named_does_not_depend_on_a_maps_insertion_order() -> None:
    kept = SpecVerdicts()
    first, second = base_pod(), base_pod()
    for key in ("k19", "k21"):
        first.spec.node_selector[key] = "bad value!"
    for key in ("k21", "k19"):
        second.spec.node_selector[key] = "bad value!"
    assert first.spec.SerializeToString(deterministic=True) == second.spec.SerializeToString(
        deterministic=True
    )
    assert refusal(first, kept) == refusal(second, kept) == refusal(second)
