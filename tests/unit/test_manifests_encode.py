"""atoll.v1 objects -> Kubernetes v1 dicts and text, and the round trip back."""

from __future__ import annotations

import json
from typing import Any

import yaml
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from coordinator import manifests
from coordinator.manifests import quantity


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


RUNNING_POD = pod_pb2.Pod(
    metadata=meta_pb2.ObjectMeta(
        name="apache",
        namespace="default",
        uid="5c6a1f2e",
        labels={"name": "apache"},
        resource_version=1234,
        generation=2,
        creation_timestamp=ts(1425211200),
    ),
    spec=pod_pb2.PodSpec(
        containers=[
            pod_pb2.Container(
                name="apache",
                image="fedora/apache",
                ports=[
                    pod_pb2.ContainerPort(container_port=80, host_port=80, protocol=meta_pb2.PROTOCOL_TCP)
                ],
                resources=pod_pb2.ResourceRequirements(
                    requests=meta_pb2.ResourceList(cpu_millis=500, memory_bytes=128 << 20),
                    limits=meta_pb2.ResourceList(
                        cpu_millis=2000, memory_bytes=10**9, ephemeral_storage_bytes=1 << 30
                    ),
                ),
                image_pull_policy=pod_pb2.PULL_POLICY_IF_NOT_PRESENT,
            )
        ],
        restart_policy=pod_pb2.RESTART_POLICY_ALWAYS,
        node_name="minion-1",
        termination_grace_period_seconds=30,
    ),
    status=pod_pb2.PodStatus(
        phase=pod_pb2.POD_PHASE_RUNNING,
        host_ip="10.0.0.5",
        pod_ip="10.244.1.7",
        start_time=ts(1425211205),
        conditions=[
            pod_pb2.PodCondition(
                type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE, last_transition_time=ts(1425211210)
            )
        ],
        container_statuses=[
            pod_pb2.ContainerStatus(
                name="apache",
                state=pod_pb2.ContainerState(
                    running=pod_pb2.ContainerStateRunning(started_at=ts(1425211209))
                ),
                last_state=pod_pb2.ContainerState(
                    terminated=pod_pb2.ContainerStateTerminated(exit_code=137, signal=9, reason="OOMKilled")
                ),
                ready=True,
                restart_count=1,
                image="fedora/apache",
                image_id="sha256:0123",
                container_id="docker://abc",
            )
        ],
    ),
)


def test_pod_looks_like_kubectl_output() -> None:
    assert manifests.to_dict(RUNNING_POD) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "apache",
            "namespace": "default",
            "uid": "5c6a1f2e",
            "resourceVersion": "1234",
            "generation": 2,
            "creationTimestamp": "2015-03-01T12:00:00Z",
            "labels": {"name": "apache"},
        },
        "spec": {
            "containers": [
                {
                    "name": "apache",
                    "image": "fedora/apache",
                    "ports": [{"containerPort": 80, "hostPort": 80, "protocol": "TCP"}],
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "128Mi"},
                        "limits": {"cpu": "2", "memory": "1G", "ephemeral-storage": "1Gi"},
                    },
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "nodeName": "minion-1",
            "terminationGracePeriodSeconds": 30,
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2015-03-01T12:00:10Z"}],
            "hostIP": "10.0.0.5",
            "podIP": "10.244.1.7",
            "startTime": "2015-03-01T12:00:05Z",
            "containerStatuses": [
                {
                    "name": "apache",
                    "state": {"running": {"startedAt": "2015-03-01T12:00:09Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "OOMKilled"}},
                    "ready": True,
                    "restartCount": 1,
                    "image": "fedora/apache",
                    "imageID": "sha256:0123",
                    "containerID": "docker://abc",
                }
            ],
        },
    }


def test_waiting_containers_and_pending_pods() -> None:
    status = pod_pb2.PodStatus(
        phase=pod_pb2.POD_PHASE_PENDING,
        reason="Unschedulable",
        container_statuses=[
            pod_pb2.ContainerStatus(
                name="c",
                state=pod_pb2.ContainerState(
                    waiting=pod_pb2.ContainerStateWaiting(reason="ErrImagePull", message="not found")
                ),
            )
        ],
    )
    out = manifests.to_dict(pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="p"), status=status))["status"]
    assert out["phase"] == "Pending" and out["reason"] == "Unschedulable"
    assert out["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImagePull", "message": "not found"}
    }
    assert out["containerStatuses"][0]["lastState"] == {}


def test_node_output() -> None:
    node = node_pb2.Node(
        metadata=meta_pb2.ObjectMeta(name="minion-1", labels={"zone": "a"}),
        spec=node_pb2.NodeSpec(unschedulable=True, pod_cidr="10.244.1.0/24"),
        status=node_pb2.NodeStatus(
            addresses=[node_pb2.NodeAddress(type="InternalIP", address="10.0.0.5")],
            capacity=meta_pb2.ResourceList(cpu_millis=4000, memory_bytes=8 << 30, pods=110),
            conditions=[
                node_pb2.NodeCondition(
                    type="Ready", status=meta_pb2.CONDITION_STATUS_FALSE, reason="NodeLost"
                )
            ],
            node_info=node_pb2.NodeSystemInfo(kernel_version="6.1.0", architecture="amd64"),
            agent_port=10250,
        ),
    )
    out = manifests.to_dict(node)
    assert out["apiVersion"] == "v1" and out["kind"] == "Node"
    assert out["spec"] == {"unschedulable": True, "podCIDR": "10.244.1.0/24"}
    assert out["status"]["capacity"] == {"cpu": "4", "memory": "8Gi", "pods": "110"}
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "False", "reason": "NodeLost"}]
    assert out["status"]["nodeInfo"] == {"kernelVersion": "6.1.0", "architecture": "amd64"}
    assert manifests.load_data(out) == [node_pb2.Node(metadata=node.metadata, spec=node.spec)]


def test_dumps_json_and_yaml_read_back() -> None:
    data = manifests.to_dict(RUNNING_POD)
    as_json = manifests.dumps(data, "json")
    assert as_json.startswith('{\n    "apiVersion": "v1",\n    "kind": "Pod",')
    as_yaml = manifests.dumps(data, "yaml")
    assert as_yaml.startswith("apiVersion: v1\nkind: Pod\nmetadata:\n  name: apache\n")
    assert "creationTimestamp: '2015-03-01T12:00:00Z'" in as_yaml  # quoted: stays a string
    expected = pod_pb2.Pod(metadata=RUNNING_POD.metadata, spec=RUNNING_POD.spec)
    assert manifests.load_text(as_json, "p.json") == [expected]
    assert manifests.load_text(as_yaml, "p.yaml") == [expected]


def test_several_objects_print_as_a_list() -> None:
    listed = manifests.to_list_dict([RUNNING_POD, RUNNING_POD])
    assert (listed["apiVersion"], listed["kind"], len(listed["items"])) == ("v1", "List", 2)
    assert len(manifests.load_text(manifests.dumps(listed, "yaml"), "l.yaml")) == 2


def test_fractional_seconds_survive() -> None:
    pod = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="p", creation_timestamp=ts(1, 500_000_000)))
    assert manifests.to_dict(pod)["metadata"]["creationTimestamp"] == "1970-01-01T00:00:01.500Z"


# ------------------------------------------------------------------ properties

INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=12)
STRING_MAPS = st.dictionaries(TEXT, TEXT, max_size=3)
PULL_POLICIES = [
    pod_pb2.PULL_POLICY_UNSPECIFIED,
    pod_pb2.PULL_POLICY_IF_NOT_PRESENT,
    pod_pb2.PULL_POLICY_ALWAYS,
    pod_pb2.PULL_POLICY_NEVER,
]
RESTART_POLICIES = [
    pod_pb2.RESTART_POLICY_UNSPECIFIED,
    pod_pb2.RESTART_POLICY_ALWAYS,
    pod_pb2.RESTART_POLICY_ON_FAILURE,
    pod_pb2.RESTART_POLICY_NEVER,
]
TIMESTAMPS = st.builds(ts, st.integers(-62135596800, 253402300799), st.integers(0, 999_999_999))


@given(INT64)
def test_quantities_round_trip(amount: int) -> None:
    assert quantity.cpu_millis(quantity.format_cpu(amount)) == amount
    assert quantity.whole_units(quantity.format_bytes(amount)) == amount


@st.composite
def object_meta(draw: st.DrawFn, *, namespaced: bool = True) -> meta_pb2.ObjectMeta:
    meta = meta_pb2.ObjectMeta(
        name=draw(TEXT),
        namespace=draw(TEXT) if namespaced else "",
        uid=draw(TEXT),
        labels=draw(STRING_MAPS),
        annotations=draw(STRING_MAPS),
        resource_version=draw(st.integers(0, 2**63 - 1)),
        generation=draw(INT64),
    )
    for field in ("creation_timestamp", "deletion_timestamp"):
        if draw(st.booleans()):
            getattr(meta, field).CopyFrom(draw(TIMESTAMPS))
    refs = st.builds(meta_pb2.OwnerReference, kind=TEXT, name=TEXT, uid=TEXT, controller=st.booleans())
    meta.owner_references.extend(draw(st.lists(refs, max_size=2)))
    return meta


@st.composite
def containers(draw: st.DrawFn) -> pod_pb2.Container:
    c = pod_pb2.Container(
        name=draw(TEXT),
        image=draw(TEXT),
        command=draw(st.lists(TEXT, max_size=3)),
        args=draw(st.lists(TEXT, max_size=3)),
        env=draw(st.lists(st.builds(pod_pb2.EnvVar, name=TEXT, value=TEXT), max_size=2)),
        ports=draw(
            st.lists(
                st.builds(
                    pod_pb2.ContainerPort,
                    name=TEXT,
                    container_port=st.integers(-(2**31), 2**31 - 1),
                    host_port=st.integers(-(2**31), 2**31 - 1),
                    protocol=st.sampled_from(
                        [0, meta_pb2.PROTOCOL_TCP, meta_pb2.PROTOCOL_UDP, meta_pb2.PROTOCOL_SCTP]
                    ),
                    host_ip=TEXT,
                ),
                max_size=2,
            )
        ),
        volume_mounts=draw(
            st.lists(
                st.builds(pod_pb2.VolumeMount, name=TEXT, mount_path=TEXT, read_only=st.booleans()),
                max_size=2,
            )
        ),
        working_dir=draw(TEXT),
        image_pull_policy=draw(st.sampled_from(PULL_POLICIES)),
    )
    for rl in (c.resources.requests, c.resources.limits):
        if draw(st.booleans()):
            rl.CopyFrom(meta_pb2.ResourceList(cpu_millis=draw(INT64), memory_bytes=draw(INT64)))
            rl.ephemeral_storage_bytes = draw(INT64)
    for name in ("requests", "limits"):
        if getattr(c.resources, name) == meta_pb2.ResourceList():
            c.resources.ClearField(name)
    if c.resources == pod_pb2.ResourceRequirements():
        c.ClearField("resources")
    return c


VOLUMES = st.one_of(
    st.builds(
        pod_pb2.Volume,
        name=TEXT,
        empty_dir=st.builds(pod_pb2.EmptyDirVolumeSource, medium=TEXT, size_limit_bytes=INT64),
    ),
    st.builds(
        pod_pb2.Volume, name=TEXT, host_path=st.builds(pod_pb2.HostPathVolumeSource, path=TEXT, type=TEXT)
    ),
)


@st.composite
def pods(draw: st.DrawFn) -> pod_pb2.Pod:
    spec = pod_pb2.PodSpec(
        containers=draw(st.lists(containers(), max_size=2)),
        volumes=draw(st.lists(VOLUMES, max_size=2)),
        restart_policy=draw(st.sampled_from(RESTART_POLICIES)),
        node_name=draw(TEXT),
        node_selector=draw(STRING_MAPS),
        hostname=draw(TEXT),
    )
    if draw(st.booleans()):
        spec.termination_grace_period_seconds = draw(INT64)
    return pod_pb2.Pod(metadata=draw(object_meta()), spec=spec)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(pods())
def test_decode_of_encode_is_identity_for_any_pod(pod: pod_pb2.Pod) -> None:
    data = manifests.to_dict(pod)
    assert manifests.load_data(data, validate=False) == [pod]
    assert manifests.load_data(json.loads(json.dumps(data)), validate=False) == [pod]


@given(
    st.builds(
        node_pb2.Node,
        metadata=object_meta(namespaced=False),
        spec=st.builds(node_pb2.NodeSpec, unschedulable=st.booleans(), pod_cidr=TEXT, provider_id=TEXT),
    )
)
def test_decode_of_encode_is_identity_for_any_node(node: node_pb2.Node) -> None:
    assert manifests.load_data(manifests.to_dict(node), validate=False) == [node]


# Valid objects make the full trip through text, validation included.

DNS_LABELS = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
LABEL_VALUES = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?)?", fullmatch=True)
SAFE_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@st.composite
def valid_pods(draw: st.DrawFn) -> pod_pb2.Pod:
    volume_names = draw(st.lists(DNS_LABELS, unique=True, max_size=2))
    volumes = [
        pod_pb2.Volume(name=n, host_path=pod_pb2.HostPathVolumeSource(path=f"/srv/{n}"))
        if draw(st.booleans())
        else pod_pb2.Volume(
            name=n, empty_dir=pod_pb2.EmptyDirVolumeSource(size_limit_bytes=draw(st.integers(0, 2**40)))
        )
        for n in volume_names
    ]
    host_ports = iter(draw(st.lists(st.integers(1, 65535), unique=True, min_size=4, max_size=4)))
    cs = []
    for i in range(draw(st.integers(1, 2))):
        cpu = draw(st.integers(0, 64_000))
        mem = draw(st.integers(0, 2**40))
        c = pod_pb2.Container(
            name=f"c{i}",
            image=draw(st.sampled_from(["fedora/apache", "nginx:1.27", "registry.example.com:5000/a/b"])),
            command=draw(st.lists(SAFE_TEXT, max_size=2)),
            args=draw(st.lists(SAFE_TEXT, max_size=2)),
            env=[pod_pb2.EnvVar(name=f"V{j}", value=draw(SAFE_TEXT)) for j in range(draw(st.integers(0, 2)))],
            ports=[
                pod_pb2.ContainerPort(
                    container_port=draw(st.integers(1, 65535)),
                    host_port=next(host_ports),
                    protocol=meta_pb2.PROTOCOL_TCP,
                )
                for _ in range(draw(st.integers(0, 2)))
            ],
            volume_mounts=[pod_pb2.VolumeMount(name=n, mount_path=f"/mnt/{n}") for n in volume_names],
        )
        if cpu or mem:
            c.resources.limits.CopyFrom(meta_pb2.ResourceList(cpu_millis=cpu, memory_bytes=mem))
        cs.append(c)
    labels = draw(st.dictionaries(DNS_LABELS, LABEL_VALUES, max_size=3))
    return pod_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name=draw(DNS_LABELS), labels=labels),
        spec=pod_pb2.PodSpec(
            containers=cs,
            volumes=volumes,
            restart_policy=draw(st.sampled_from(RESTART_POLICIES)),
        ),
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(valid_pods(), st.sampled_from(["json", "yaml"]))
def test_valid_pods_survive_text(pod: pod_pb2.Pod, fmt: Any) -> None:
    text = manifests.dumps(manifests.to_dict(pod), fmt)
    if fmt == "yaml":
        assert yaml.safe_load(text)["kind"] == "Pod"
    assert manifests.load_text(text, f"pod.{fmt}") == [pod]
