"""Three coordinator processes on a real 3-member etcd: kill -9 the leader mid-work, kill an etcd member mid-stream.

Agents are in-process fake-runtime agents (tests/functional/harness.py)
connected to a coordinator that is not killed: what is under test is the
control plane's hand-over, not the agents' own failover.
"""

from __future__ import annotations

import asyncio
import collections
import pathlib
import time
from collections.abc import AsyncIterator

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator.client.api import Client
from tests.functional.harness import FakeNode, eventually
from tests.integration.coordinators import CoordinatorProcesses
from tests.integration.etcd import EtcdCluster

pytestmark = [pytest.mark.timeout(240)]
POD = kinds.by_name("Pod")
RC = kinds.by_name("ReplicationController")


@pytest.fixture
async def three(etcd_cluster: EtcdCluster, tmp_path: pathlib.Path) -> AsyncIterator[CoordinatorProcesses]:
    coordinators = CoordinatorProcesses(etcd_cluster, tmp_path).start()
    try:
        for i in range(3):
            await eventually(lambda i=i: _answers(coordinators, i), timeout=60, what=f"coordinator {i} up")
        yield coordinators
    finally:
        coordinators.stop()


async def _answers(coordinators: CoordinatorProcesses, i: int) -> bool:
    try:
        return await coordinators.leader(i) is not None
    except errors.AtollError:
        return False


def make_rc(name: str, replicas: int) -> workloads_pb2.ReplicationController:
    rc = workloads_pb2.ReplicationController()
    rc.metadata.name = name
    rc.spec.replicas = replicas
    rc.spec.selector["app"] = name
    rc.spec.template.metadata.labels["app"] = name
    rc.spec.template.spec.containers.add(name="main", image="busybox", command=["sleep", "1d"])
    return rc


async def test_leader_kill_during_scale_up_and_node_death(
    three: CoordinatorProcesses, tmp_path: pathlib.Path
) -> None:
    (old,) = await eventually(lambda: _leader(three, 0), what="a leader")
    served_by = next(i for i in range(3) if i != old)  # agents and the test talk to a survivor
    nodes = [
        await FakeNode(
            tmp_path, f"node-{k}", three.ports[served_by], images=("busybox",), insecure=True
        ).start()
        for k in range(3)
    ]
    try:
        async with three.client(served_by) as client:
            await client.create(make_rc("web", 6))
            await eventually(lambda: _running(client, "app=web", 6), timeout=60, what="6 replicas running")
            pods = await _pods(client, "app=web")
            doomed = collections.Counter(p.spec.node_name for p in pods).most_common(1)[0][0]

            # Scale up, stop a node's agent for good, and kill the leader -9, all at once.
            rc = await client.get(RC, "default", "web")
            rc.spec.replicas = 30  # type: ignore[attr-defined]
            await client.update(rc)
            await next(n for n in nodes if n.name == doomed).stop()
            killed_at = time.monotonic()
            three.kill(old)

            (new,) = await eventually(lambda: _leader(three, served_by, old), timeout=30, what="a new leader")
            took = time.monotonic() - killed_at
            print(f"\nleader {old} killed: coordinator {new} leads after {took:.2f}s")
            assert took <= 10, took

            async def settled() -> list[pod_pb2.Pod] | None:
                live = await _running(client, "app=web", 30)
                if live is None or any(p.spec.node_name == doomed for p in live):
                    return None
                return live

            live = await eventually(settled, timeout=90, what="30 replicas on the live nodes")
            names = [p.metadata.name for p in await _pods(client, "app=web")]
            assert len(names) == len(set(names)) == 30, names  # no duplicate, no extra
            assert {p.spec.node_name for p in live} <= {n.name for n in nodes if n.name != doomed}
    finally:
        for n in nodes:
            await n.stop()


async def test_etcd_member_kill_during_a_thousand_creates(
    three: CoordinatorProcesses, etcd_cluster: EtcdCluster
) -> None:
    total, workers = 1000, 8
    acknowledged: list[str] = []
    failures: list[str] = []

    async def create(client_index: int, names: list[str]) -> None:
        async with three.client(client_index) as client:
            for name in names:
                pod = pod_pb2.Pod()
                pod.metadata.name = name
                pod.spec.node_name = "nowhere"  # bound: no scheduling work, a pure write stream
                pod.spec.containers.add(name="main", image="busybox")
                try:
                    await client.create(pod)
                    acknowledged.append(name)
                except errors.AtollError as exc:
                    failures.append(f"{name}: {exc}")

    names = [f"p-{i:04d}" for i in range(total)]
    batches = [names[w::workers] for w in range(workers)]
    stream = asyncio.gather(*(create(w % 3, batch) for w, batch in enumerate(batches)))
    victim = 0  # the first endpoint: the one every coordinator's channel picked
    try:
        await eventually(lambda: _at_least(acknowledged, total // 4), timeout=120, what="a quarter written")
        await asyncio.to_thread(etcd_cluster.kill, victim)
        killed_after = len(acknowledged)
        await stream
    finally:
        await asyncio.to_thread(etcd_cluster.restart, victim)
    async with three.client(0) as client:
        items, _ = await client.list(POD, "default")
    stored = [p.metadata.name for p in items]  # type: ignore[attr-defined]
    print(f"\netcd member {victim} killed after {killed_after} creates; {len(failures)} failed calls")
    assert not failures, failures[:5]
    assert len(acknowledged) == total
    assert sorted(stored) == sorted(names)  # every acknowledged write, once


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n


async def _leader(three: CoordinatorProcesses, via: int, other_than: int = -1) -> tuple[int] | None:
    """(index,) of the leader other than `other_than`: a tuple, since coordinator 0 is falsy."""
    leader = await three.leader(via)
    return (leader,) if leader is not None and leader != other_than else None


async def _pods(client, selector: str) -> list[pod_pb2.Pod]:  # type: ignore[no-untyped-def]
    items, _ = await client.list(POD, "default", selector)
    return [p for p in items if isinstance(p, pod_pb2.Pod)]


async def _running(client, selector: str, n: int) -> list[pod_pb2.Pod] | None:  # type: ignore[no-untyped-def]
    pods = await _pods(client, selector)
    ok = [p for p in pods if p.status.phase == pod_pb2.POD_PHASE_RUNNING]
    return ok if len(ok) == n and len(pods) == n else None


async def test_an_agent_on_three_coordinators_survives_the_kill_of_its_own(
    three: CoordinatorProcesses, tmp_path: pathlib.Path
) -> None:
    everyone = ",".join(three.address(i) for i in range(3))
    node = await FakeNode(
        tmp_path, "node-0", three.ports[0], images=("busybox",), insecure=True, coordinator=everyone
    ).start()
    try:
        async with three.client(1) as client:
            await client.create(make_rc("web", 3))
            await eventually(lambda: _running(client, "app=web", 3), timeout=60, what="3 replicas running")
            created = sum(1 for c in node.runtime.calls if c[0] == "create_container")
            # The agent's channel picked the first coordinator listed: kill that one.
            killed_at = time.monotonic()
            three.kill(0)

            # Heartbeats go on through another coordinator (no failed call even: the channel moves).
            await asyncio.sleep(4)  # more than the 3 s grace period
            node_obj = await client.get(kinds.by_name("Node"), "", "node-0")
            ready = [c for c in node_obj.status.conditions if c.type == "Ready"]  # type: ignore[attr-defined]
            assert ready and ready[0].status == 1, ready
            # Assignments and status flow too: a replaced pod is started and reported Running.
            victim = (await _pods(client, "app=web"))[0]
            await client.delete(POD, "default", victim.metadata.name)
            await eventually(
                lambda: _replaced(client, victim.metadata.name), timeout=30, what="the replacement Running"
            )
            print(
                f"\nagent served through another coordinator; all good {time.monotonic() - killed_at:.1f}s after"
            )
            # The CLI's client on the same list answers as well, the dead coordinator first in it.
            async with Client(everyone) as many:
                assert len(await _pods(many, "app=web")) == 3
            # The pods that were not replaced kept their containers: two new ones, for the new pod.
            assert sum(1 for c in node.runtime.calls if c[0] == "create_container") == created + 2
    finally:
        await node.stop()


async def _replaced(client, gone: str) -> bool:  # type: ignore[no-untyped-def]
    running = await _running(client, "app=web", 3)
    return running is not None and gone not in {p.metadata.name for p in running}
