"""Build the node's status (capacity, allocatable, usage, conditions) from host metrics."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.host.metrics import HostMetrics
from atoll import version
from atoll.v1 import meta_pb2, node_pb2

READY = "Ready"


@dataclass(frozen=True)
class NodeFacts:
    name: str
    internal_ip: str
    agent_port: int
    runtime_version: str
    max_pods: int
    reserved_cpu_millis: int
    reserved_memory_bytes: int


def detect_node_ip(coordinator_host: str, coordinator_port: int) -> str:
    """The source address the kernel picks towards the coordinator; connect() on UDP sends nothing."""
    family = socket.AF_INET6 if ":" in coordinator_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((coordinator_host, coordinator_port or 9))
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def build_status(
    facts: NodeFacts,
    metrics: HostMetrics,
    *,
    ready: bool,
    ready_message: str,
    extended: Mapping[str, int] | None = None,
    conditions: Sequence[node_pb2.NodeCondition] = (),
) -> node_pb2.NodeStatus:
    """`extended`: extended resources (SR-IOV VFs by resource name), all allocatable;
    `conditions`: more conditions after Ready (SriovReady)."""
    snap = metrics.snapshot()
    info = metrics.system_info()
    capacity = meta_pb2.ResourceList(
        cpu_millis=snap.cpu_count * 1000,
        memory_bytes=snap.memory_total,
        pods=facts.max_pods,
        ephemeral_storage_bytes=snap.disk_total,
        extended=extended or {},
    )
    allocatable = meta_pb2.ResourceList(
        cpu_millis=max(0, capacity.cpu_millis - facts.reserved_cpu_millis),
        memory_bytes=max(0, capacity.memory_bytes - facts.reserved_memory_bytes),
        pods=facts.max_pods,
        ephemeral_storage_bytes=snap.disk_total,
        extended=extended or {},
    )
    status = node_pb2.NodeStatus(
        addresses=[
            node_pb2.NodeAddress(type="InternalIP", address=facts.internal_ip),
            node_pb2.NodeAddress(type="Hostname", address=info.hostname),
        ],
        capacity=capacity,
        allocatable=allocatable,
        usage=meta_pb2.ResourceList(
            cpu_millis=snap.cpu_used_millis,
            memory_bytes=snap.memory_used,
            ephemeral_storage_bytes=snap.disk_used,
        ),
        node_info=node_pb2.NodeSystemInfo(
            machine_id=info.machine_id,
            boot_id=info.boot_id,
            kernel_version=info.kernel_version,
            os_image=info.os_image,
            architecture=info.architecture,
            container_runtime_version=facts.runtime_version,
            agent_version=version(),
            hostname=info.hostname,
        ),
        agent_port=facts.agent_port,
        load_average=list(snap.load_average),
    )
    status.conditions.append(
        node_pb2.NodeCondition(
            type=READY,
            status=meta_pb2.CONDITION_STATUS_TRUE if ready else meta_pb2.CONDITION_STATUS_FALSE,
            reason="AgentReady" if ready else "AgentNotReady",
            message=ready_message,
        )
    )
    status.conditions.extend(conditions)
    return status
