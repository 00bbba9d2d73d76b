"""A multi-host Atoll on the test bed: a master host with the coordinator, workers with agents.

The master is a bed host without an engine (like the classic master); each
worker runs its dockerd and an agent. The overlay is configured from a
flannel-style file, so agents build VXLAN between the workers. Tests talk to
the coordinator over its unix socket.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from atoll.v1 import pod_pb2
from coordinator.client.api import Client
from tests.integration.daemons import AgentProcess, CoordinatorProcess, eventually, node_ready
from tests.integration.testbed import Host, TestBed

FLANNEL = {
    "Network": "10.100.0.0/16",
    "SubnetLen": 24,
    "SubnetMin": "10.100.50.0",
    "SubnetMax": "10.100.199.0",
    "Backend": {"Type": "vxlan", "VNI": 1},
}


@dataclass
class Cluster:
    bed: TestBed
    master: Host
    workers: list[Host]
    coordinator: CoordinatorProcess
    client: Client
    agents: dict[str, AgentProcess] = field(default_factory=dict)

    def node(self, i: int) -> str:
        return f"node-{i}"

    def agent_for(self, i: int, extra: Sequence[str] = ()) -> AgentProcess:
        """`extra` may say {host_dir}: the worker's own directory (per-host files, like a fake sysfs)."""
        host = self.workers[i]
        extra = [arg.replace("{host_dir}", str(host.dir)) for arg in extra]
        return AgentProcess(
            host,
            f"{self.master.ip}:6443",
            host.dir / "agent",
            self.node(i),
            ("--subnet-env", str(host.dir / "subnet.env"), *extra),
        )

    async def start_agent(self, i: int, extra: Sequence[str] = ()) -> AgentProcess:
        agent = self.agent_for(i, extra).start()
        self.agents[self.node(i)] = agent
        await eventually(
            lambda: node_ready(self.client, self.node(i)), timeout=60, what=f"{self.node(i)} Ready"
        )
        return agent

    def kill_agent(self, i: int, sig: int = signal.SIGKILL) -> None:
        self.agents[self.node(i)].kill(sig)

    async def sh(self, i: int, *argv: str, timeout: float = 20) -> str:
        """Run a command in worker i's namespaces; its stdout."""
        res = await asyncio.to_thread(self.workers[i].run, list(argv), timeout)
        return res.stdout

    async def pod_exec(self, i: int, pod: pod_pb2.Pod, *argv: str, container: int = 0) -> tuple[int, str]:
        """Run a command inside a pod's container on worker i."""
        cid = pod.status.container_statuses[container].container_id.removeprefix("docker://")

        def run() -> tuple[int, str]:
            result = self.workers[i].docker().containers.get(cid).exec_run(list(argv))
            return result.exit_code, result.output.decode(errors="replace")

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)


async def start_cluster(
    testbed_factory: Callable[..., TestBed],
    workers: int,
    *,
    overlay: bool = True,
    coordinator_args: Sequence[str] = (),
    agent_args: Sequence[str] = (),
) -> Cluster:
    """A cluster on a bed made by the pytest fixture `testbed_factory` (torn down with the test)."""
    return await start_cluster_on(
        testbed_factory(workers),
        workers,
        overlay=overlay,
        coordinator_args=coordinator_args,
        agent_args=agent_args,
    )


async def start_cluster_on(
    bed: TestBed,
    workers: int,
    *,
    overlay: bool = True,
    coordinator_args: Sequence[str] = (),
    agent_args: Sequence[str] = (),
) -> Cluster:
    """A cluster on a started bed of your own (benchmarks): its first `workers` hosts run agents,
    one host without an engine is added as the master. The bed's teardown stops everything;
    `Cluster.close()` only closes the client."""
    if len(bed.hosts) < workers:
        raise ValueError(f"{bed!r} has {len(bed.hosts)} hosts, {workers} workers wanted")
    master = bed.add_host(docker=False)
    args = list(coordinator_args)
    if overlay:
        conf = master.dir / "flannel.json"
        conf.write_text(json.dumps(FLANNEL))
        args += ["--network-config", str(conf)]
    coordinator = CoordinatorProcess(master, master.dir / "coordinator", args).start()
    cluster = Cluster(bed, master, list(bed.hosts[:workers]), coordinator, Client(coordinator.server))
    try:
        await asyncio.gather(*(cluster.start_agent(i, agent_args) for i in range(workers)))
    except BaseException:
        await cluster.close()
        raise
    return cluster


def pinned_pod(
    name: str, node: str, *, image: str = "fedora/apache", labels: dict[str, str] | None = None
) -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.labels.update(labels or {"app": name})
    pod.spec.node_name = node
    pod.spec.termination_grace_period_seconds = 1
    pod.spec.containers.add(name="web", image=image).ports.add(container_port=80)
    return pod
