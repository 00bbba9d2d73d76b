"""Node ports for NodePort and LoadBalancer services, from one range, never handed out twice.

Like cluster IPs (coordinator.network.serviceips), each allocated port has its
own key, `/nodeports/<port>`, created in the same transaction as the Service
write that takes it and deleted in the one that gives it up (the service's
delete, a port removed, the type going back to ClusterIP), so the store
guarantees that no two services hold one port.

A port's number is taken whatever its protocol, as in Kubernetes; one service
may use the same node port for a TCP and a UDP port (one key).
"""

from __future__ import annotations

import random
import time

from atoll import errors
from atoll.v1 import meta_pb2, workloads_pb2
from coordinator.store.base import Op, Store

PREFIX = "/nodeports/"
_WITH_NODE_PORTS = (workloads_pb2.SERVICE_TYPE_NODE_PORT, workloads_pb2.SERVICE_TYPE_LOAD_BALANCER)


def has_node_ports(svc: workloads_pb2.Service) -> bool:
    return svc.spec.type in _WITH_NODE_PORTS


def held(svc: workloads_pb2.Service | None) -> set[int]:
    """The node ports a stored service holds keys for."""
    if svc is None or not has_node_ports(svc):
        return set()
    return {p.node_port for p in svc.spec.ports if p.node_port}


def _key(port: int) -> str:
    return f"{PREFIX}{port}"


def carry_over(svc: workloads_pb2.Service, old: workloads_pb2.Service) -> None:
    """On update, before validation: keep the node ports the new spec leaves out (as clusterIP is
    kept), matched by protocol and port; drop the ones it only repeats when the type goes back to
    ClusterIP (a read-modify-write of the type alone), as Kubernetes does."""
    previous = {_port_key(p): p.node_port for p in old.spec.ports if p.node_port}
    if has_node_ports(svc):
        for port in svc.spec.ports:
            if not port.node_port:
                port.node_port = previous.get(_port_key(port), 0)
    elif has_node_ports(old):
        for port in svc.spec.ports:
            if port.node_port and previous.get(_port_key(port)) == port.node_port:
                port.node_port = 0


def _port_key(port: workloads_pb2.ServicePort) -> tuple[int, int]:
    return (port.protocol or meta_pb2.PROTOCOL_TCP, port.port)


LOAD_BALANCER_CONDITION = "LoadBalancerProvisioned"
NO_LOAD_BALANCER_REASON = "NoLoadBalancerProvider"
NO_LOAD_BALANCER_MESSAGE = (
    "Atoll provisions no load balancers: the service is served on every node's addresses "
    "on its node ports, as a NodePort service"
)


def set_status(svc: workloads_pb2.Service, now: float | None = None) -> None:
    """The status the coordinator writes with every create and update: an empty loadBalancer
    (Kubernetes' "pending" shape) and, for a LoadBalancer service, a condition saying none will
    come. The condition's transition time is kept while it holds."""
    before = {c.type: c for c in svc.status.conditions}
    svc.ClearField("status")
    svc.status.load_balancer.SetInParent()
    if svc.spec.type != workloads_pb2.SERVICE_TYPE_LOAD_BALANCER:
        return
    condition = svc.status.conditions.add(
        type=LOAD_BALANCER_CONDITION,
        status=meta_pb2.CONDITION_STATUS_FALSE,
        reason=NO_LOAD_BALANCER_REASON,
        message=NO_LOAD_BALANCER_MESSAGE,
        observed_generation=svc.metadata.generation,
    )
    previous = before.get(LOAD_BALANCER_CONDITION)
    if previous is not None and previous.status == condition.status:
        condition.last_transition_time.CopyFrom(previous.last_transition_time)
    else:
        condition.last_transition_time.FromNanoseconds(int((time.time() if now is None else now) * 1e9))


class NodePortAllocator:
    def __init__(self, store: Store, ports: range, rng: random.Random | None = None) -> None:
        if not ports:
            raise errors.InvalidArgument("the node port range is empty")
        self._store = store
        self.ports = ports
        self._rng = rng or random.Random()

    @property
    def range_text(self) -> str:
        return f"{self.ports.start}-{self.ports.stop - 1}"

    async def claim(
        self,
        svc: workloads_pb2.Service,
        old: workloads_pb2.Service | None = None,
        *,
        reserved: frozenset[int] = frozenset(),
    ) -> list[Op]:
        """Check the node ports `svc` asks for and allocate the ones left at 0; return the ops that
        take the new ones and give up those `old` (the stored version) held and `svc` does not.

        `reserved` ports (sshd's, Atoll's daemons': a node port is open on every node address,
        CVE-2020-8554 again) are never allocated, and refused when asked for."""
        before = held(old)
        if not has_node_ports(svc):
            return [Op("delete", _key(p)) for p in sorted(before)]
        ops: list[Op] = []
        taken_here: set[int] = set()
        for i, port in enumerate(svc.spec.ports):
            if not port.node_port or port.node_port in taken_here:
                continue
            field = f"spec.ports[{i}].nodePort"
            # A port it already holds stays valid after the range was changed (as clusterIP does).
            if port.node_port not in self.ports and port.node_port not in before:
                raise errors.InvalidArgument(
                    f"{port.node_port}: provided port is not in the valid range; "
                    f"the range of valid ports is {self.range_text}",
                    field=field,
                )
            if port.node_port in reserved and port.node_port not in before:
                raise errors.InvalidArgument(
                    f"{port.node_port}: reserved for Atoll's daemons and sshd", field=field
                )
            taken_here.add(port.node_port)
            if port.node_port in before:
                continue
            if await self._store.get(_key(port.node_port)) is not None:
                raise errors.InvalidArgument(
                    f"{port.node_port}: provided port is already allocated", field=field
                )
            ops.append(Op("create", _key(port.node_port), _owner(svc)))
        for port in svc.spec.ports:
            if not port.node_port:
                port.node_port = await self._free(taken_here | reserved)
                taken_here.add(port.node_port)
                ops.append(Op("create", _key(port.node_port), _owner(svc)))
        ops += [Op("delete", _key(p)) for p in sorted(before - taken_here)]
        return ops

    async def _free(self, skip: set[int]) -> int:
        start = self._rng.randrange(len(self.ports))
        for i in range(len(self.ports)):
            candidate = self.ports[(start + i) % len(self.ports)]
            if candidate not in skip and await self._store.get(_key(candidate)) is None:
                return candidate
        raise errors.ResourceExhausted(f"the node port range {self.range_text} is full")

    @staticmethod
    def release(svc: workloads_pb2.Service) -> list[Op]:
        return [Op("delete", _key(p)) for p in sorted(held(svc))]


def _owner(svc: workloads_pb2.Service) -> bytes:
    return f"{svc.metadata.namespace}/{svc.metadata.name}".encode()
