"""What the scheduler knows: each node, what its pods already hold, and facts about a pod.

Everything a filter or score needs is precomputed, here, once: a pod's
requests, host ports, owners and labels when it is decided (`PodFacts`), and
per node the sums and counters that change as pods come and go (`NodeInfo`).
A decision then costs a few attribute reads per node, which is what lets one
scheduler place thousands of pods a second over a thousand nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from atoll.v1 import meta_pb2, node_pb2, pod_pb2

PROTOCOL_NAMES: dict[int, str] = {
    meta_pb2.PROTOCOL_TCP: "TCP",
    meta_pb2.PROTOCOL_UDP: "UDP",
    meta_pb2.PROTOCOL_SCTP: "SCTP",
}

TERMINAL = (pod_pb2.POD_PHASE_SUCCEEDED, pod_pb2.POD_PHASE_FAILED)


def pod_key(pod: pod_pb2.Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


@dataclass(frozen=True)
class HostPort:
    port: int
    protocol: int
    ip: str

    def conflicts(self, other: HostPort) -> bool:
        if self.port != other.port or self.protocol != other.protocol:
            return False
        wildcard = ("", "0.0.0.0", "::")
        return self.ip in wildcard or other.ip in wildcard or self.ip == other.ip

    def __str__(self) -> str:
        return f"{self.port}/{PROTOCOL_NAMES.get(self.protocol, 'TCP')}"


def controller_of(pod: pod_pb2.Pod) -> str:
    for ref in pod.metadata.owner_references:  # a loop, not next() over a generator: every decision
        if ref.controller:
            return ref.uid
    return ""


def label_key(pod: pod_pb2.Pod) -> frozenset[tuple[str, str]]:
    return frozenset(pod.metadata.labels.items())


@dataclass(frozen=True)
class PodFacts:
    """A pod as the scheduler sees it, computed once per decision."""

    pod: pod_pb2.Pod
    cpu: int
    memory: int
    host_ports: tuple[HostPort, ...]
    controller: str
    labels: frozenset[tuple[str, str]]
    node_selector: tuple[tuple[str, str], ...]
    extended: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, pod: pod_pb2.Pod) -> PodFacts:
        # Requests (cpu, memory, extended resources summed by name) and host ports in one pass over the containers:
        # this runs for every decision and every add and remove, and most pods have no
        # extended resources (no Counter then) and no host ports.
        cpu = mem = 0
        extended: Counter[str] | None = None
        ports: list[HostPort] = []
        for c in pod.spec.containers:
            requests = c.resources.requests
            cpu += requests.cpu_millis
            mem += requests.memory_bytes
            if requests.extended:
                if extended is None:
                    extended = Counter()
                extended.update(requests.extended)
            for p in c.ports:
                if p.host_port:
                    ports.append(HostPort(p.host_port, p.protocol, p.host_ip))
        return cls(
            pod=pod,
            cpu=cpu,
            memory=mem,
            host_ports=tuple(ports),
            controller=controller_of(pod),
            labels=label_key(pod),
            node_selector=tuple(pod.spec.node_selector.items()),
            extended=tuple(sorted((name, n) for name, n in extended.items() if n)) if extended else (),
        )

    def holds_alike(self, other: PodFacts) -> bool:
        """Whether the two hold the same on a node: what NodeInfo.add and remove count."""
        return (
            self.cpu == other.cpu
            and self.memory == other.memory
            and self.extended == other.extended
            and self.host_ports == other.host_ports
            and self.controller == other.controller
            and self.labels == other.labels
        )

    def shape(self) -> tuple[object, ...]:
        """All that plugins.NODE_STATE_FILTERS and plugins.SCORES read of a pod: pods alike in
        this fit and score alike on a node that has not changed (see NodeInfo.memo).
        Labels count only without a controller, as in selector_spread."""
        return (
            self.controller,
            None if self.controller else self.labels,
            self.cpu,
            self.memory,
            self.extended,
            self.host_ports,
        )


@dataclass(eq=False)  # one per node, known by identity (the scheduler's indexes compare lists of them)
class NodeInfo:
    node: node_pb2.Node
    pods: dict[str, pod_pb2.Pod] = field(default_factory=dict)
    requested_cpu: int = 0
    requested_memory: int = 0
    host_ports: list[HostPort] = field(default_factory=list)
    by_controller: Counter[str] = field(default_factory=Counter)
    by_labels: Counter[frozenset[tuple[str, str]]] = field(default_factory=Counter)
    ready: bool = False
    allocatable_cpu: int = 0
    allocatable_memory: int = 0
    allocatable_pods: int = 0
    requested_extended: Counter[str] = field(default_factory=Counter)
    allocatable_extended: dict[str, int] = field(default_factory=dict)
    # node.spec, held so the scheduler's cordon check is one read less per node. Like every
    # other field here, it changes through set_node (the informer hands a new Node), which
    # tells the scheduler; a change made in place to the message is not seen.
    spec: node_pb2.NodeSpec = field(init=False, repr=False, compare=False)
    # The scheduler's verdicts on this node by pod shape (a token per PodFacts.shape()):
    # the weighted score, or None when plugins.NODE_STATE_FILTERS turn the pod away. They
    # read only what add, remove and set_node change, so those forget it all.
    memo: dict[object, float | None] = field(default_factory=dict, init=False, repr=False, compare=False)
    # Told after every change that can alter a verdict (the scheduler's score indexes), and where
    # the scheduler last placed this node in its order.
    changed: Callable[[NodeInfo], None] | None = field(default=None, init=False, repr=False, compare=False)
    slot: int = field(default=-1, init=False, repr=False, compare=False)
    # What each pod counts for here, so that a pod's status update (the same requests) changes
    # nothing, and a removal does not work it out again.
    _facts: dict[str, PodFacts] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.set_node(self.node)

    def _forget(self) -> None:
        self.memo.clear()
        if self.changed is not None:
            self.changed(self)

    def set_node(self, node: node_pb2.Node) -> None:
        self.node = node
        self.spec = node.spec
        self.ready = any(
            c.type == "Ready" and c.status == meta_pb2.CONDITION_STATUS_TRUE for c in node.status.conditions
        )
        alloc = node.status.allocatable
        self.allocatable_cpu, self.allocatable_memory, self.allocatable_pods = (
            alloc.cpu_millis,
            alloc.memory_bytes,
            alloc.pods,
        )
        self.allocatable_extended = dict(alloc.extended)
        self._forget()

    @property
    def name(self) -> str:
        return self.node.metadata.name

    def add(self, pod: pod_pb2.Pod) -> None:
        key = pod_key(pod)
        facts = PodFacts.of(pod)
        held = self._facts.get(key)
        if held is not None:
            if held.holds_alike(facts):  # a newer version of the pod, holding the same
                self.pods[key], self._facts[key] = pod, facts
                return
            self.remove(held.pod)
        self.pods[key], self._facts[key] = pod, facts
        self.requested_cpu += facts.cpu
        self.requested_memory += facts.memory
        self.requested_extended.update(dict(facts.extended))
        self.host_ports.extend(facts.host_ports)
        if facts.controller:
            self.by_controller[facts.controller] += 1
        self.by_labels[facts.labels] += 1
        self._forget()

    def remove(self, pod: pod_pb2.Pod) -> None:
        key = pod_key(pod)
        if self.pods.pop(key, None) is None:
            return
        facts = self._facts.pop(key)
        self.requested_cpu -= facts.cpu
        self.requested_memory -= facts.memory
        self.requested_extended.subtract(dict(facts.extended))
        for hp in facts.host_ports:
            self.host_ports.remove(hp)
        if facts.controller:
            self.by_controller[facts.controller] -= 1
        self.by_labels[facts.labels] -= 1
        self._forget()


def holds_resources(pod: pod_pb2.Pod) -> bool:
    return bool(pod.spec.node_name) and pod.status.phase not in TERMINAL
