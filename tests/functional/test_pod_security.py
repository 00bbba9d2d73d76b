"""Pod security levels at admission, against a real coordinator over mutual TLS.

An operator's pod with a hostPath of / (or the Docker socket) would be a bind
mount of the host's root: on an all-in-one host that holds the cluster CA's
key, and so admin. Namespaces are baseline unless an admin says otherwise.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from agent.runtime.base import ContainerSpec
from atoll import errors, kinds
from atoll.v1 import meta_pb2, namespace_pb2, pod_pb2, workloads_pb2
from coordinator import manifests
from coordinator.client.api import Client
from tests.functional.harness import Cluster, eventually
from tests.functional.test_security import cert_config

POD = kinds.by_name("Pod")
RC = kinds.by_name("ReplicationController")
NAMESPACE = kinds.by_name("Namespace")
EVENT = kinds.by_name("Event")
LABEL = "pod-security.atoll.io/enforce"
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def pod(name: str, namespace: str = "default", *, host_path: str = "", host_port: int = 0) -> pod_pb2.Pod:
    p = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace))
    c = p.spec.containers.add(name="c", image="busybox")
    if host_path:
        p.spec.volumes.add(name="host", host_path=pod_pb2.HostPathVolumeSource(path=host_path))
        c.volume_mounts.add(name="host", mount_path="/host")
    if host_port:
        c.ports.add(container_port=80, host_port=host_port)
    return p


def namespace(name: str, level: str = "") -> namespace_pb2.Namespace:
    ns = namespace_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name=name))
    if level:
        ns.metadata.labels[LABEL] = level
    return ns


def controller(name: str, template: pod_pb2.Pod) -> workloads_pb2.ReplicationController:
    rc = workloads_pb2.ReplicationController(metadata=meta_pb2.ObjectMeta(name=name))
    rc.spec.replicas = 1
    rc.spec.selector["app"] = name
    rc.spec.template.metadata.labels["app"] = name
    rc.spec.template.spec.CopyFrom(template.spec)
    return rc


@pytest.fixture
async def operator(secure: Cluster) -> AsyncIterator[Client]:
    async with Client(config=cert_config(secure, "olga", "atoll:operators")) as op:
        yield op


async def test_an_operator_gets_no_host_root(secure: Cluster, operator: Client) -> None:
    with pytest.raises(errors.PermissionDenied) as caught:
        await operator.create(pod("root", host_path="/"))
    assert str(caught.value) == (
        'spec.volumes[0].hostPath.path: "/" is not allowed at pod security level "baseline" in namespace "default"'
    )
    with pytest.raises(errors.PermissionDenied, match=r'"/var/run/docker.sock" is not allowed'):
        await operator.create(pod("docker", host_path="/var/run/docker.sock"))
    for port in (1, 22, 53):
        with pytest.raises(errors.PermissionDenied, match=rf"hostPort: {port} is not allowed"):
            await operator.create(pod(f"port-{port}", host_port=port))
    await operator.create(pod("web", host_port=80))
    # Admins too: the level is the namespace's, not the caller's.
    assert secure.client is not None
    with pytest.raises(errors.PermissionDenied, match=r"hostPath\.path"):
        await secure.client.create(pod("root", host_path="/"))
    items, _ = await operator.list(POD, "default")
    assert [p.metadata.name for p in items] == ["web"]  # type: ignore[attr-defined]


async def test_an_admin_labels_a_namespace_privileged(secure: Cluster, operator: Client) -> None:
    assert secure.client is not None
    await secure.client.create(namespace("system", "privileged"))
    await operator.create(pod("root", "system", host_path="/"))
    got = await operator.get(NAMESPACE, "", "system")
    assert got.metadata.labels[LABEL] == "privileged"  # type: ignore[attr-defined]


async def test_an_operator_cannot_loosen_a_namespace(secure: Cluster, operator: Client) -> None:
    assert secure.client is not None
    with pytest.raises(errors.PermissionDenied) as caught:
        await operator.create(namespace("mine", "privileged"))
    assert str(caught.value) == (
        f"metadata.labels[{LABEL}]: only admins may move namespace "
        '"mine" from pod security level "baseline" to "privileged"'
    )
    await operator.create(namespace("mine", "restricted"))  # stricter is anyone's to choose
    ns = await operator.get(NAMESPACE, "", "mine")
    for level in ("baseline", "privileged"):
        ns.metadata.labels[LABEL] = level  # type: ignore[attr-defined]
        with pytest.raises(
            errors.PermissionDenied, match=f'from pod security level "restricted" to "{level}"'
        ):
            await operator.update(ns)
    with pytest.raises(errors.PermissionDenied, match="only admins may delete namespace"):
        await operator.delete(NAMESPACE, "", "mine")
    with pytest.raises(errors.InvalidArgument, match="'root' is not a pod security level"):
        await secure.client.create(namespace("typo", "root"))
    ns.metadata.labels[LABEL] = "privileged"  # type: ignore[attr-defined]
    ns = await secure.client.update(ns)
    ns.metadata.labels["team"] = "a"  # type: ignore[attr-defined]
    ns = await operator.update(ns)  # not looser: fine
    ns.metadata.labels[LABEL] = "baseline"  # type: ignore[attr-defined]
    await operator.update(ns)  # stricter: fine


async def test_a_controller_with_a_bad_template_is_refused_when_written(
    secure: Cluster, operator: Client
) -> None:
    with pytest.raises(errors.PermissionDenied) as caught:
        await operator.create(controller("grab", pod("x", host_path="/")))
    assert str(caught.value) == (
        'spec.template.spec.volumes[0].hostPath.path: "/" is not allowed at pod security level "baseline" '
        'in namespace "default"'
    )
    rc = await operator.create(controller("web", pod("x", host_port=8080)))
    rc.spec.template.spec.containers[0].ports[0].host_port = 22  # type: ignore[attr-defined]
    rc.metadata.resource_version = 0  # type: ignore[attr-defined]  # the manager writes its status meanwhile
    with pytest.raises(
        errors.PermissionDenied, match=r"spec\.template\.spec\.containers\[0\]\.ports\[0\]\.hostPort: 22"
    ):
        await operator.update(rc)
    items, _ = await operator.list(RC, "default")
    assert [r.metadata.name for r in items] == ["web"]  # type: ignore[attr-defined]


async def test_restricted_refuses_host_ports_and_requires_non_root(secure: Cluster, operator: Client) -> None:
    await operator.create(namespace("locked", "restricted"))
    with pytest.raises(errors.PermissionDenied) as caught:
        await operator.create(pod("web", "locked", host_port=8080))
    assert str(caught.value) == (
        'spec.containers[0].ports[0].hostPort: 8080 is not allowed at pod security level "restricted" '
        'in namespace "locked" (and 1 more)'
    )
    with pytest.raises(errors.PermissionDenied) as caught:
        await operator.create(pod("web", "locked"))
    assert str(caught.value) == (
        "spec.containers[0].securityContext.runAsNonRoot: must be true (here or in the pod's "
        'securityContext) at pod security level "restricted" in namespace "locked"'
    )
    ok = pod("web", "locked")
    ok.spec.security_context.run_as_non_root = True
    ok.spec.containers[0].security_context.run_as_user = 1000
    created = await operator.create(ok)
    assert created.spec.containers[0].security_context.run_as_user == 1000  # type: ignore[attr-defined]


async def test_the_examples_pass_baseline_as_an_operator(secure: Cluster, operator: Client) -> None:
    created = []
    for path in sorted(EXAMPLES.glob("*")):
        if path.is_dir():
            continue
        for obj in manifests.load_file(path):
            if kinds.of(obj).plural in ("pods", "replicationcontrollers"):  # what pod security checks
                await operator.create(obj)
                created.append(f"{kinds.of(obj).name}/{obj.metadata.name}")  # type: ignore[attr-defined]
    assert len(created) >= 4, created


async def test_the_agent_runs_as_the_security_context_says(cluster: Cluster) -> None:
    """runAsNonRoot with an image that runs as root fails the container, as kubelet does."""
    assert cluster.client is not None
    node = await cluster.add_node("node-1", images=("busybox", "app"))
    node.runtime.image_users["app"] = "1000"
    await cluster.client.create(namespace("locked", "restricted"))
    rootful = pod("rootful", "locked")
    rootful.spec.security_context.run_as_non_root = True
    await cluster.client.create(rootful)
    app = pod("app", "locked")
    app.spec.containers[0].image = "app"
    app.spec.security_context.run_as_non_root = True
    app.spec.security_context.run_as_group = 3000
    app.spec.containers[0].security_context.run_as_user = 1000
    app.spec.containers[0].security_context.read_only_root_filesystem = True
    await cluster.client.create(app)

    async def waiting(name: str) -> str:
        got = await cluster.client.get(POD, "locked", name)  # type: ignore[union-attr]
        statuses = got.status.container_statuses  # type: ignore[attr-defined]
        if statuses and statuses[0].state.waiting.reason == "CreateContainerConfigError":
            return str(statuses[0].state.waiting.message)
        return ""

    message = await eventually(lambda: waiting("rootful"), what="rootful refused by the agent")
    assert message == "container has runAsNonRoot and image will run as root"

    async def app_spec() -> ContainerSpec | None:
        specs = [
            s
            for s in node.runtime.specs.values()
            if s.labels.get("io.atoll.pod.name") == "app" and s.labels.get("io.atoll.container.name") == "c"
        ]
        return specs[0] if specs else None

    spec = await eventually(app_spec, what="app's container created")
    assert spec is not None and (spec.user, spec.read_only_rootfs) == ("1000:3000", True)
    assert not [
        s
        for s in node.runtime.specs.values()
        if s.labels.get("io.atoll.pod.name") == "rootful" and s.labels.get("io.atoll.container.name") == "c"
    ]


async def test_a_controller_makes_no_pods_its_namespace_no_longer_allows(
    secure: Cluster, operator: Client
) -> None:
    """The template passed when written; after an admin tightens the namespace, new pods are refused."""
    assert secure.client is not None
    ns = await secure.client.create(namespace("legacy", "privileged"))
    rc = controller("grab", pod("x", host_path="/"))
    rc.metadata.namespace = "legacy"
    rc = await operator.create(rc)

    async def pods() -> int:
        items, _ = await operator.list(POD, "legacy")
        return len(items)

    assert await eventually(pods, what="the first pod") == 1
    ns.metadata.labels[LABEL] = "baseline"  # type: ignore[attr-defined]
    await secure.client.update(ns)
    rc.spec.replicas = 2  # type: ignore[attr-defined]
    rc.metadata.resource_version = 0  # type: ignore[attr-defined]
    await operator.update(rc)  # a scale: the template did not change

    async def refused() -> str:
        items, _ = await operator.list(EVENT, "legacy")
        return next((e.message for e in items if e.reason == "FailedCreate"), "")  # type: ignore[attr-defined]

    message = await eventually(refused, what="FailedCreate")
    assert message == (
        'Error creating: spec.volumes[0].hostPath.path: "/" is not allowed at pod security level "baseline" '
        'in namespace "legacy"'
    )
    assert await pods() == 1
