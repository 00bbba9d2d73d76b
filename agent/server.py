"""AgentService: the agent's own gRPC API (status, pods, container logs).

Served over mutual TLS with the node's certificate; `CoordinatorOnly` lets in
the coordinator's client certificate (CN atoll:coordinator, O atoll:system,
signed by the cluster CA) and nobody else, not other nodes nor users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from agent.pods import plan, render
from agent.pods.manager import PodManager
from agent.runtime.base import ContainerRuntime
from atoll import callchain, certinfo, errors, tls
from atoll.v1 import agent_pb2, agent_pb2_grpc, node_pb2, pod_pb2


class CoordinatorOnly(callchain.CallInterceptor):
    def __init__(self, *, insecure: bool = False) -> None:
        self._insecure = insecure

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        peer = tls.peer_of(context)
        if self._insecure and peer.transport in ("insecure", "local"):
            return None
        if not peer.verified_cert or peer.cert_pem is None:
            raise errors.Unauthenticated("the agent API requires the coordinator's client certificate")
        cn, orgs, lifetime = tls.describe_cert(peer.cert_pem)
        if cn != certinfo.COORDINATOR_CLIENT_CN or certinfo.SYSTEM_GROUP not in orgs:
            raise errors.PermissionDenied(f"only the coordinator may call the agent API, not {cn}")
        if lifetime.expired():
            raise errors.Unauthenticated("the coordinator's client certificate has expired")
        return None


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        *,
        node_name: str,
        manager: PodManager,
        runtime: ContainerRuntime,
        build_status: Callable[[], node_pb2.NodeStatus],
        connected: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self._node = node_name
        self._manager = manager
        self._runtime = runtime
        self._build_status = build_status
        self._connected = connected
        self._clock = clock

    async def GetStatus(
        self, request: agent_pb2.GetStatusRequest, context: Any
    ) -> agent_pb2.GetStatusResponse:
        last = self._manager.last_relist
        return agent_pb2.GetStatusResponse(
            node_name=self._node,
            status=self._build_status(),
            assignment_generation=self._manager.generation,
            seconds_since_relist=self._clock() - last if last else -1.0,
            connected=self._connected(),
        )

    async def ListPods(self, request: agent_pb2.ListPodsRequest, context: Any) -> agent_pb2.ListPodsResponse:
        pods = []
        for uid, desired in self._manager.desired.items():
            pod = pod_pb2.Pod()
            pod.CopyFrom(desired)
            if uid in self._manager.statuses:
                pod.status.CopyFrom(self._manager.statuses[uid])
            pods.append(pod)
        return agent_pb2.ListPodsResponse(pods=pods)

    async def GetContainerLogs(
        self, request: agent_pb2.GetContainerLogsRequest, context: Any
    ) -> AsyncIterator[agent_pb2.GetContainerLogsResponse]:
        pod = next(
            (
                p
                for p in self._manager.desired.values()
                if p.metadata.name == request.pod and p.metadata.namespace == (request.namespace or "default")
            ),
            None,
        )
        if pod is None:
            raise errors.NotFound(f'pod "{request.pod}" does not run on node {self._node}')
        name = request.container
        if not name:
            if len(pod.spec.containers) != 1:
                names = ", ".join(c.name for c in pod.spec.containers)
                raise errors.InvalidArgument(
                    f"pod {request.pod} has several containers; choose one of: {names}", field="container"
                )
            name = pod.spec.containers[0].name
        observed = plan.group(await self._runtime.list_containers({render.LABEL_POD_UID: pod.metadata.uid}))
        instances = observed.apps.get(name)
        if instances is None and name not in {c.name for c in pod.spec.containers}:
            raise errors.NotFound(f"container {name} is not part of pod {request.pod}", field="container")
        index = 1 if request.previous else 0
        if not instances or len(instances) <= index:
            which = "previous terminated" if request.previous else "running"
            raise errors.FailedPrecondition(
                f"container {name} in pod {request.pod} has no {which} instance yet"
            )
        stream = self._runtime.logs(
            instances[index].id, follow=request.follow, tail=request.tail_lines, timestamps=request.timestamps
        )
        async for chunk in stream:
            yield agent_pb2.GetContainerLogsResponse(data=chunk)
