"""Issue #4's seed walkthrough on three namespace hosts, end to end, and node-loss failover.

The classic Kubernetes-on-OpenStack walkthrough with the 2015 (v1beta1) files
from examples/: the apache pod, the frontend service with public IPs, the
replication controller with hostPort 80; then a host dies. Services are
verified by traffic: every host's publicIP:80, the cluster IP from inside
pods on every node (so across hosts, over the overlay), and the guestbook's
NodePort frontend (examples/guestbook-v1.yaml) on every node's address from
the master, another host, and from a pod.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from atoll import kinds
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator import manifests
from tests.integration.cluster import Cluster, pinned_pod, start_cluster
from tests.integration.daemons import eventually, node_ready, wait_running
from tests.integration.testbed import TestBed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POD = kinds.by_name("Pod")
SVC = kinds.by_name("Service")


def load(name: str, edit: Callable[[dict], None] | None = None) -> object:  # type: ignore[type-arg]
    doc = json.loads((EXAMPLES / name).read_text())
    if edit is not None:
        edit(doc)
    (obj,) = manifests.load_data(doc, name)
    return obj


async def apache_pods(cluster: Cluster) -> list[pod_pb2.Pod]:
    items, _ = await cluster.client.list(POD, "default", "name=apache")
    return [p for p in items if isinstance(p, pod_pb2.Pod)]


@pytest.fixture
async def three(testbed_factory: Callable[..., TestBed]) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(testbed_factory, 3)
    try:
        yield cluster
    finally:
        await cluster.close()


async def http_from_master(cluster: Cluster, url: str) -> str:
    try:
        return (await asyncio.to_thread(cluster.master.http_get, url, 5)).body
    except ConnectionError:
        return ""


async def test_seed_walkthrough(three: Cluster) -> None:
    c = three.client
    for i in range(3):
        assert await node_ready(c, three.node(i))
    # The apache pod (v1beta1) runs on one node.
    await c.create(load("apache-pod.json"))  # type: ignore[arg-type]
    apache = await wait_running(c, "apache")
    # The frontend service (v1beta1), public on every host's underlay address.
    public = [h.ip for h in three.workers]

    def publish(doc: dict) -> None:  # type: ignore[type-arg]
        doc["publicIPs"] = public

    svc = await c.create(load("frontend-service.json", publish))  # type: ignore[arg-type]
    assert isinstance(svc, workloads_pb2.Service)
    for ip in public:
        page = await eventually(
            lambda ip=ip: _has_apache(http_from_master(three, f"http://{ip}:80/")), what=f"{ip}:80"
        )
        assert "Apache" in page
    # The cluster IP from inside pods on every node: two of them reach the endpoint on another host.
    clients = []
    for i in range(3):
        helper = pinned_pod(f"client-{i}", three.node(i), image="atoll/busybox")
        helper.spec.containers[0].command.extend(
            ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        )
        await c.create(helper)
        clients.append(await wait_running(c, f"client-{i}"))
    for i, pod in enumerate(clients):

        async def fetch(i: int = i, pod: pod_pb2.Pod = pod) -> str:
            code, out = await three.pod_exec(
                i, pod, "timeout", "5", "wget", "-qO-", f"http://{svc.spec.cluster_ip}/"
            )
            return out if code == 0 else ""

        assert "Apache" in await eventually(fetch, what=f"cluster IP from a pod on node-{i}")
    await _guestbook_node_port(three, clients)

    # The replication controller: 3 replicas with hostPort 80, adopting the apache pod.
    def with_host_port(doc: dict) -> None:  # type: ignore[type-arg]
        doc["desiredState"]["podTemplate"]["desiredState"]["manifest"]["containers"][0]["ports"][0][
            "hostPort"
        ] = 80

    await c.create(load("apache-controller.json", with_host_port))  # type: ignore[arg-type]

    async def one_per_node() -> list[pod_pb2.Pod] | None:
        pods = await apache_pods(three)
        running = [p for p in pods if p.status.phase == pod_pb2.POD_PHASE_RUNNING]
        nodes = sorted(p.spec.node_name for p in running)
        return pods if len(pods) == 3 and nodes == ["node-0", "node-1", "node-2"] else None

    pods = await eventually(one_per_node, timeout=90, what="exactly 3 apache pods, one per node")
    assert "apache" in {p.metadata.name for p in pods}  # adopted, not replaced
    # A host dies: its agent and its engine.
    victim = next(i for i in range(3) if three.node(i) != apache.spec.node_name)
    three.kill_agent(victim)
    three.workers[victim].stop_docker(sig=signal.SIGKILL)

    async def replacement_pending() -> str:
        for p in await apache_pods(three):
            if not p.spec.node_name and p.status.reason == "Unschedulable":
                return p.status.message
        return ""

    message = await eventually(replacement_pending, timeout=60, what="a Pending replacement")
    assert "hostPort 80/TCP in use" in message, message
    # The host comes back: three Running again, one per node.
    three.workers[victim].start_docker()
    await three.start_agent(victim)
    await eventually(one_per_node, timeout=120, what="3 apache pods Running again after the host returned")


async def _guestbook_node_port(cluster: Cluster, clients: list[pod_pb2.Pod]) -> None:
    """The guestbook's frontend (two replicas on three nodes, so at least one node has none of
    its own) answers on every node's address at its node port: from the master, which is
    another host, and from a pod on node 0 to every other node's address."""
    c = cluster.client
    objs = manifests.load_file(EXAMPLES / "guestbook-v1.yaml")
    for obj in objs:
        if obj.metadata.name == "guestbook":  # type: ignore[attr-defined]
            await c.create(obj)
    svc = await c.get(SVC, "default", "guestbook")
    assert isinstance(svc, workloads_pb2.Service)
    node_port = svc.spec.ports[0].node_port
    assert 30000 <= node_port <= 32767, svc

    async def two_running() -> bool:
        items, _ = await c.list(POD, "default", "app=guestbook")
        return (
            sum(isinstance(p, pod_pb2.Pod) and p.status.phase == pod_pb2.POD_PHASE_RUNNING for p in items)
            == 2
        )

    await eventually(two_running, timeout=60, what="2 guestbook frontends Running")
    for host in cluster.workers:
        url = f"http://{host.ip}:{node_port}/"
        for _ in range(4):  # both endpoints are picked at random: local and remote alike work
            page = await eventually(lambda url=url: _has_apache(http_from_master(cluster, url)), what=url)
            assert "Apache" in page
    for host in cluster.workers[1:]:

        async def from_pod(ip: str = host.ip) -> str:
            code, out = await cluster.pod_exec(
                0, clients[0], "timeout", "5", "wget", "-qO-", f"http://{ip}:{node_port}/"
            )
            return out if code == 0 and "Apache" in out else ""

        assert "Apache" in await eventually(from_pod, what=f"{host.ip}:{node_port} from a pod on node-0")


async def _has_apache(fetch: object) -> str:
    body = await fetch  # type: ignore[misc]
    return body if "Apache" in body else ""


async def test_failover_without_host_ports_within_15s(testbed_factory: Callable[..., TestBed]) -> None:
    # The coordinator's defaults decide how fast a dead node's pods move: no test overrides here.
    cluster = await start_cluster(
        testbed_factory,
        3,
        overlay=False,
        coordinator_args=(
            "--heartbeat-interval",
            "3",
            "--node-grace-period",
            "8",
            "--pod-eviction-timeout",
            "2",
        ),
    )
    try:
        c = cluster.client
        rc = workloads_pb2.ReplicationController()
        rc.metadata.name = "spread"
        rc.spec.replicas = 3
        rc.spec.selector["app"] = "spread"
        rc.spec.template.metadata.labels["app"] = "spread"
        rc.spec.template.spec.termination_grace_period_seconds = 1
        rc.spec.template.spec.containers.add(
            name="main",
            image="atoll/busybox",
            command=["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
        )
        await c.create(rc)

        async def spread() -> list[pod_pb2.Pod] | None:
            items, _ = await c.list(POD, "default", "app=spread")
            running = [p for p in items if p.status.phase == pod_pb2.POD_PHASE_RUNNING]  # type: ignore[attr-defined]
            return running if len(running) == 3 and len(items) == 3 else None  # type: ignore[return-value]

        await eventually(spread, timeout=60, what="3 replicas")
        dead = cluster.node(2)
        started = time.monotonic()
        cluster.kill_agent(2)
        cluster.workers[2].stop_docker(sig=signal.SIGKILL)

        async def replaced() -> bool:
            items, _ = await c.list(POD, "default", "app=spread")
            healthy = [
                p
                for p in items
                if p.spec.node_name != dead and p.status.phase == pod_pb2.POD_PHASE_RUNNING  # type: ignore[attr-defined]
            ]
            return len(healthy) == 3

        await eventually(replaced, timeout=30, interval=0.2, what="a replacement Running on a healthy node")
        elapsed = time.monotonic() - started
        print(f"replacement Running {elapsed:.1f}s after the node died")
        assert elapsed <= 15.0, elapsed
    finally:
        await cluster.close()
