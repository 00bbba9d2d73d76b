"""A pod through the whole path: CLI client -> coordinator -> agent -> (fake) runtime -> status."""

from __future__ import annotations

from atoll import errors, kinds
from atoll.v1 import pod_pb2
from tests.functional.harness import Cluster, eventually

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")


def apache_pod(name: str = "apache", host_port: int = 8080) -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.labels["name"] = "apache"
    c = pod.spec.containers.add(name="apache", image="fedora/apache")
    c.ports.add(container_port=80, host_port=host_port)
    return pod


async def get_pod(cluster: Cluster, name: str) -> pod_pb2.Pod:
    assert cluster.client is not None
    pod = await cluster.client.get(POD, "default", name)
    assert isinstance(pod, pod_pb2.Pod)
    return pod


async def test_pod_runs_and_reports_status(cluster: Cluster) -> None:
    node = await cluster.add_node("node-1", images=("fedora/apache",))
    assert cluster.client is not None
    await eventually(lambda: _node_ready(cluster, "node-1"), what="node Ready")
    await cluster.client.create(apache_pod())

    async def running() -> bool:
        pod = await get_pod(cluster, "apache")
        return pod.status.phase == pod_pb2.POD_PHASE_RUNNING and bool(pod.status.pod_ip)

    await eventually(running, what="pod Running")
    pod = await get_pod(cluster, "apache")
    assert pod.spec.node_name == "node-1"
    assert pod.status.host_ip == "127.0.0.1"
    assert pod.status.container_statuses[0].ready
    infra = [c for c in node.runtime.containers.values() if c.labels["io.atoll.container.name"] == "POD"]
    assert len(infra) == 1 and infra[0].state == "running"
    app = node.runtime.by_name("atoll_apache_apache_default_" + pod.metadata.uid[:8] + "_0")
    assert node.runtime.specs[app.id].join_container == infra[0].id

    await cluster.client.delete(POD, "default", "apache")

    async def gone() -> bool:
        return not node.runtime.containers

    await eventually(gone, what="containers removed")


async def _node_ready(cluster: Cluster, name: str) -> bool:
    assert cluster.client is not None
    try:
        node = await cluster.client.get(NODE, "", name)
    except errors.NotFound:
        return False
    return any(c.type == "Ready" and c.status == 1 for c in node.status.conditions)  # type: ignore[attr-defined]
