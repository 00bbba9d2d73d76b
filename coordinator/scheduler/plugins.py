"""Scheduler plugins. A filter returns None when the node fits, else a short reason that
reads well after a count ("3 hostPort 80/TCP in use"); a score returns 0..100.

Both take PodFacts (computed once per decision) and a NodeInfo (kept current
as pods come and go), so each call is a handful of attribute reads.
"""

from __future__ import annotations

from collections.abc import Callable

from coordinator.scheduler.nodeinfo import NodeInfo, PodFacts

Filter = Callable[[PodFacts, NodeInfo], str | None]
Score = Callable[[PodFacts, NodeInfo], float]


def node_ready(pod: PodFacts, info: NodeInfo) -> str | None:
    return None if info.ready else "node(s) not ready"


def node_schedulable(pod: PodFacts, info: NodeInfo) -> str | None:
    return "node(s) cordoned" if info.node.spec.unschedulable else None


def node_selector(pod: PodFacts, info: NodeInfo) -> str | None:
    if not pod.node_selector:
        return None
    labels = info.node.metadata.labels
    for key, value in pod.node_selector:
        if labels.get(key) != value:
            return "node(s) didn't match the node selector"
    return None


def resources_fit(pod: PodFacts, info: NodeInfo) -> str | None:
    if info.allocatable_pods and len(info.pods) + 1 > info.allocatable_pods:
        return "too many pods"
    if pod.cpu and info.requested_cpu + pod.cpu > info.allocatable_cpu:
        return "insufficient cpu"
    if pod.memory and info.requested_memory + pod.memory > info.allocatable_memory:
        return "insufficient memory"
    for name, count in pod.extended:
        if info.requested_extended[name] + count > info.allocatable_extended.get(name, 0):
            return f"insufficient {name}"
    return None


def host_ports_free(pod: PodFacts, info: NodeInfo) -> str | None:
    for wanted in pod.host_ports:
        if any(wanted.conflicts(used) for used in info.host_ports):
            return f"hostPort {wanted} in use"
    return None


def least_allocated(pod: PodFacts, info: NodeInfo) -> float:
    total, parts = 0.0, 0
    if info.allocatable_cpu:
        total += 1 - min(1.0, (info.requested_cpu + pod.cpu) / info.allocatable_cpu)
        parts += 1
    if info.allocatable_memory:
        total += 1 - min(1.0, (info.requested_memory + pod.memory) / info.allocatable_memory)
        parts += 1
    if info.allocatable_pods:
        total += 1 - min(1.0, (len(info.pods) + 1) / info.allocatable_pods)
        parts += 1
    return 100 * total / parts if parts else 0.0


def selector_spread(pod: PodFacts, info: NodeInfo) -> float:
    """Fewer pods of the same controller (or, without one, with the same labels) on a node score higher."""
    if pod.controller:
        same = info.by_controller[pod.controller]
    elif pod.labels:
        same = info.by_labels[pod.labels]
    else:
        return 100.0
    return 100.0 / (1 + same)


FILTERS: tuple[Filter, ...] = (node_ready, node_schedulable, node_selector, resources_fit, host_ports_free)
# Spreading matters more than balance: weights as in Kubernetes' old defaults, where
# SelectorSpreadPriority decided between nodes that LeastRequested scored alike.
SCORES: tuple[tuple[Score, float], ...] = ((selector_spread, 2.0), (least_allocated, 1.0))

# The filters that read only what NodeInfo.add, remove and set_node change, and of the pod
# only PodFacts.shape(), like every score: their verdict on a node holds for every pod of
# that shape until the node changes, so Scheduler.decide() remembers it (NodeInfo.memo).
# The others read the node's object as it is now and run every time (inlined in decide()).
NODE_STATE_FILTERS: tuple[Filter, ...] = (resources_fit, host_ports_free)
LIVE_FILTERS: tuple[Filter, ...] = (node_ready, node_schedulable, node_selector)


def fit_and_score(pod: PodFacts, info: NodeInfo) -> float | None:
    """None if a NODE_STATE_FILTERS turns the pod away, else its weighted score: the same
    sum, in the same order, that ranks nodes without the memo, so ties stay ties."""
    for f in NODE_STATE_FILTERS:
        if f(pod, info) is not None:
            return None
    return sum(w * score(pod, info) for score, w in SCORES)
