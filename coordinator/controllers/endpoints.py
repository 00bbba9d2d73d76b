"""The endpoints controller: each service's ready pod IP:port list, kept current.

For every Service with a selector, the Endpoints object of the same name
lists the matching pods that have an IP: ready ones under `addresses`, the
others under `notReadyAddresses`, grouped by the ports they resolve to (a
named targetPort can mean different numbers in different pods).
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.message import Message

from atoll import errors, kinds, labels
from atoll.v1 import meta_pb2, pod_pb2, workloads_pb2
from coordinator.controllers.queue import WorkQueue
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry

log = logging.getLogger(__name__)

ENDPOINTS = kinds.by_name("Endpoints")
RUNNING = pod_pb2.POD_PHASE_RUNNING


def pod_ready(pod: pod_pb2.Pod) -> bool:
    return pod.status.phase == RUNNING and any(
        c.type == "Ready" and c.status == meta_pb2.CONDITION_STATUS_TRUE for c in pod.status.conditions
    )


def resolve_port(pod: pod_pb2.Pod, port: workloads_pb2.ServicePort) -> int | None:
    if not port.target_port_name:
        return port.target_port or port.port
    for c in pod.spec.containers:
        for p in c.ports:
            if p.name == port.target_port_name and p.protocol == (port.protocol or meta_pb2.PROTOCOL_TCP):
                return p.container_port
    return None


def build_subsets(svc: workloads_pb2.Service, pods: list[pod_pb2.Pod]) -> list[workloads_pb2.EndpointSubset]:
    groups: dict[tuple[tuple[str, int, int], ...], workloads_pb2.EndpointSubset] = {}
    for pod in sorted(pods, key=lambda p: (p.status.pod_ip, p.metadata.name)):
        if not pod.status.pod_ip or pod.status.phase not in (
            pod_pb2.POD_PHASE_RUNNING,
            pod_pb2.POD_PHASE_PENDING,
        ):
            continue
        resolved = []
        for sp in svc.spec.ports:
            number = resolve_port(pod, sp)
            if number is not None:
                resolved.append((sp.name, number, sp.protocol or meta_pb2.PROTOCOL_TCP))
        if not resolved:
            continue
        key = tuple(resolved)
        subset = groups.get(key)
        if subset is None:
            subset = groups[key] = workloads_pb2.EndpointSubset(
                ports=[workloads_pb2.EndpointPort(name=n, port=p, protocol=pr) for n, p, pr in resolved]
            )
        address = workloads_pb2.EndpointAddress(
            ip=pod.status.pod_ip,
            node_name=pod.spec.node_name,
            target_ref=workloads_pb2.ObjectReference(
                kind="Pod", namespace=pod.metadata.namespace, name=pod.metadata.name, uid=pod.metadata.uid
            ),
        )
        (subset.addresses if pod_ready(pod) else subset.not_ready_addresses).append(address)
    return list(groups.values())


class EndpointsController:
    def __init__(self, registry: Registry, services: Informer, pods: Informer) -> None:
        self._registry = registry
        self._services = services
        self._pods = pods
        self.queue = WorkQueue("endpoints", self.sync)
        services.add_handler(self._on_service)
        pods.add_handler(self._on_pod)

    def _on_service(self, type_: str, obj: Message, old: Message | None) -> None:
        self.queue.add(f"{obj.metadata.namespace}/{obj.metadata.name}")  # type: ignore[attr-defined]

    def _on_pod(self, type_: str, obj: Message, old: Message | None) -> None:
        assert isinstance(obj, pod_pb2.Pod)
        label_sets = [obj.metadata.labels] + ([old.metadata.labels] if isinstance(old, pod_pb2.Pod) else [])
        for svc in self._services.items():
            assert isinstance(svc, workloads_pb2.Service)
            if svc.metadata.namespace != obj.metadata.namespace or not svc.spec.selector:
                continue
            selector = labels.Selector.from_map(svc.spec.selector)
            if any(selector.matches(ls) for ls in label_sets):
                self.queue.add(f"{svc.metadata.namespace}/{svc.metadata.name}")

    async def sync(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        svc = self._services.get(namespace, name)
        if not isinstance(svc, workloads_pb2.Service):
            try:
                await self._registry.delete(ENDPOINTS, namespace, name)
            except errors.NotFound:
                pass
            return
        if not svc.spec.selector:
            return  # endpoints of a selector-less service are managed by hand
        selector = labels.Selector.from_map(svc.spec.selector)
        pods = [
            p
            for p in self._pods.items()
            if isinstance(p, pod_pb2.Pod)
            and p.metadata.namespace == namespace
            and selector.matches(p.metadata.labels)
        ]
        wanted = workloads_pb2.Endpoints(subsets=build_subsets(svc, pods))
        wanted.metadata.name, wanted.metadata.namespace = name, namespace
        wanted.metadata.labels.update(svc.metadata.labels)
        try:
            current = await self._registry.get(ENDPOINTS, namespace, name)
        except errors.NotFound:
            await self._registry.create(wanted)
            return
        assert isinstance(current, workloads_pb2.Endpoints)
        if list(current.subsets) == list(wanted.subsets) and dict(current.metadata.labels) == dict(
            wanted.metadata.labels
        ):
            return
        current.ClearField("subsets")
        current.subsets.extend(wanted.subsets)
        current.metadata.labels.clear()
        current.metadata.labels.update(wanted.metadata.labels)
        await self._registry.update(current, expected_revision=current.metadata.resource_version)

    async def run(self, stop: asyncio.Event) -> None:
        await self._services.synced.wait()
        await self._pods.synced.wait()
        self.queue.add_all(f"{o.metadata.namespace}/{o.metadata.name}" for o in self._services.items())  # type: ignore[attr-defined]
        await self.queue.run(stop)


def endpoints_count(ep: workloads_pb2.Endpoints) -> int:
    return sum(len(s.addresses) for s in ep.subsets)
