"""What the scheduler knows about each node: the node, and what its pods already hold."""

from __future__ import annotations

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


def requests_of(pod: pod_pb2.Pod) -> tuple[int, int]:
    cpu = sum(c.resources.requests.cpu_millis for c in pod.spec.containers)
    mem = sum(c.resources.requests.memory_bytes for c in pod.spec.containers)
    return cpu, mem


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


def host_ports_of(pod: pod_pb2.Pod) -> list[HostPort]:
    return [
        HostPort(p.host_port, p.protocol, p.host_ip)
        for c in pod.spec.containers
        for p in c.ports
        if p.host_port
    ]


@dataclass
class NodeInfo:
    node: node_pb2.Node
    pods: dict[str, pod_pb2.Pod] = field(default_factory=dict)
    requested_cpu: int = 0
    requested_memory: int = 0
    host_ports: list[HostPort] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.node.metadata.name

    def add(self, pod: pod_pb2.Pod) -> None:
        key = pod_key(pod)
        if key in self.pods:
            self.remove(self.pods[key])
        self.pods[key] = pod
        cpu, mem = requests_of(pod)
        self.requested_cpu += cpu
        self.requested_memory += mem
        self.host_ports.extend(host_ports_of(pod))

    def remove(self, pod: pod_pb2.Pod) -> None:
        old = self.pods.pop(pod_key(pod), None)
        if old is None:
            return
        cpu, mem = requests_of(old)
        self.requested_cpu -= cpu
        self.requested_memory -= mem
        for hp in host_ports_of(old):
            self.host_ports.remove(hp)


def holds_resources(pod: pod_pb2.Pod) -> bool:
    return bool(pod.spec.node_name) and pod.status.phase not in TERMINAL
