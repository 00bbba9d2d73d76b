"""Scheduler plugins. A filter returns None when the node fits, else a short reason that
reads well after a count ("3 hostPort 80/TCP in use"); a score returns 0..100."""

from __future__ import annotations

from collections.abc import Callable

from atoll.v1 import meta_pb2, pod_pb2
from coordinator.scheduler.nodeinfo import NodeInfo, host_ports_of, requests_of

Filter = Callable[[pod_pb2.Pod, NodeInfo], str | None]
Score = Callable[[pod_pb2.Pod, NodeInfo], float]


def node_ready(pod: pod_pb2.Pod, info: NodeInfo) -> str | None:
    for cond in info.node.status.conditions:
        if cond.type == "Ready":
            return None if cond.status == meta_pb2.CONDITION_STATUS_TRUE else "node(s) not ready"
    return "node(s) not ready"


def node_schedulable(pod: pod_pb2.Pod, info: NodeInfo) -> str | None:
    return "node(s) cordoned" if info.node.spec.unschedulable else None


def node_selector(pod: pod_pb2.Pod, info: NodeInfo) -> str | None:
    labels = info.node.metadata.labels
    for key, value in pod.spec.node_selector.items():
        if labels.get(key) != value:
            return "node(s) didn't match the node selector"
    return None


def resources_fit(pod: pod_pb2.Pod, info: NodeInfo) -> str | None:
    alloc = info.node.status.allocatable
    if alloc.pods and len(info.pods) + 1 > alloc.pods:
        return "too many pods"
    cpu, mem = requests_of(pod)
    if cpu and info.requested_cpu + cpu > alloc.cpu_millis:
        return "insufficient cpu"
    if mem and info.requested_memory + mem > alloc.memory_bytes:
        return "insufficient memory"
    return None


def host_ports_free(pod: pod_pb2.Pod, info: NodeInfo) -> str | None:
    for wanted in host_ports_of(pod):
        if any(wanted.conflicts(used) for used in info.host_ports):
            return f"hostPort {wanted} in use"
    return None


def least_allocated(pod: pod_pb2.Pod, info: NodeInfo) -> float:
    alloc = info.node.status.allocatable
    cpu, mem = requests_of(pod)
    scores = []
    if alloc.cpu_millis:
        scores.append(1 - min(1.0, (info.requested_cpu + cpu) / alloc.cpu_millis))
    if alloc.memory_bytes:
        scores.append(1 - min(1.0, (info.requested_memory + mem) / alloc.memory_bytes))
    if alloc.pods:
        scores.append(1 - min(1.0, (len(info.pods) + 1) / alloc.pods))
    return 100 * sum(scores) / len(scores) if scores else 0.0


def selector_spread(pod: pod_pb2.Pod, info: NodeInfo) -> float:
    """Fewer pods of the same owner (or with the same labels) on a node score higher."""
    owners = {ref.uid for ref in pod.metadata.owner_references if ref.controller}
    labels = dict(pod.metadata.labels)
    if not owners and not labels:
        return 100.0
    same = 0
    for other in info.pods.values():
        if (owners and any(ref.uid in owners for ref in other.metadata.owner_references)) or (
            not owners and labels and dict(other.metadata.labels) == labels
        ):
            same += 1
    return 100.0 / (1 + same)


FILTERS: tuple[Filter, ...] = (node_ready, node_schedulable, node_selector, resources_fit, host_ports_free)
# Spreading matters more than balance: weights as in Kubernetes' old defaults, where
# SelectorSpreadPriority decided between nodes that LeastRequested scored alike.
SCORES: tuple[tuple[Score, float], ...] = ((selector_spread, 2.0), (least_allocated, 1.0))
