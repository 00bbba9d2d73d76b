"""ClusterService: the API of operators, the CLI and automation."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from atoll import callchain, errors, kinds, labels, rpc, validation
from atoll.kinds import KindInfo
from atoll.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    machines_pb2,
    namespace_pb2,
    network_pb2,
    node_pb2,
    pod_pb2,
    quota_pb2,
    sriov_pb2,
    workloads_pb2,
)
from coordinator.admission.podsecurity import PodSecurityConfig
from coordinator.api import objectlimits, paging, podnetworks, serverversion
from coordinator.api.encodedlist import ListEncoder
from coordinator.api.externalips import ExternalIPPolicy
from coordinator.api.podsecurity import PodSecurityAdmission
from coordinator.api.strategy import STRATEGIES, carry_system_metadata, redact
from coordinator.auth import revocation, roles
from coordinator.auth.certs import ClusterPki
from coordinator.controllers import nodeleases
from coordinator.controllers.nodelifecycle import NodeHealth
from coordinator.network import nodeports
from coordinator.network.nodeports import NodePortAllocator
from coordinator.network.serviceips import ServiceIPAllocator
from coordinator.network.subnetleases import ensure_no_orphans
from coordinator.objects import quota
from coordinator.objects.quota import NamespaceQuota
from coordinator.objects.registry import Page, Registry
from coordinator.store.base import Op
from coordinator.store.election import Member

log = logging.getLogger(__name__)

_EVENT_TYPES = {
    "ADDED": cluster_pb2.EVENT_TYPE_ADDED,
    "MODIFIED": cluster_pb2.EVENT_TYPE_MODIFIED,
    "DELETED": cluster_pb2.EVENT_TYPE_DELETED,
}

AgentConnector = Callable[[str], agent_pb2_grpc.AgentServiceStub]


def _quantity(key: str, value: int) -> str:
    return f"{value}m" if key == quota.CPU else str(value)


async def _no_members() -> list[Member]:
    return []


def _is_admin() -> bool:
    identity = roles.CURRENT.get()  # set by the auth interceptor on every call
    return identity is not None and identity.role == "admin"


def _namespace(info: KindInfo, namespace: str) -> str:
    if not info.namespaced:
        return ""
    return namespace or validation.DEFAULT_NAMESPACE


_UNCONDITIONAL_UPDATE_ATTEMPTS = 16


# Kinds the API shows as they are stored (a node with its live heartbeat time, which
# coordinator.api.encodedlist overlays as _present does): a gRPC List of these is joined from
# kept encodings. A kind whose presentation changes anything else must not be here.
_PRESENTED_AS_STORED: frozenset[type[Message]] = frozenset(
    {
        node_pb2.Node,
        pod_pb2.Pod,
        workloads_pb2.ReplicationController,
        workloads_pb2.Service,
        workloads_pb2.Endpoints,
        workloads_pb2.Event,
        network_pb2.Network,
        network_pb2.Subnet,
        machines_pb2.Machine,
        sriov_pb2.SriovNetwork,
        namespace_pb2.Namespace,
    }
)


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(
        self,
        registry: Registry,
        health: NodeHealth,
        agent_stub: AgentConnector,
        service_ips: ServiceIPAllocator,
        *,
        pki: ClusterPki | None = None,
        cluster_info: Callable[[], cluster_pb2.GetClusterInfoResponse] = cluster_pb2.GetClusterInfoResponse,
        members: Callable[[], Awaitable[list[Member]]] | None = None,
        quotas: NamespaceQuota | None = None,
        external_ips: ExternalIPPolicy | None = None,
        max_replicas: int = objectlimits.DEFAULT_MAX_REPLICAS,
        pod_security: PodSecurityConfig | None = None,
        node_ports: NodePortAllocator | None = None,
    ) -> None:
        self._registry = registry
        self._health = health
        self._agent_stub = agent_stub
        self._service_ips = service_ips
        self._node_ports = node_ports or NodePortAllocator(registry.store, range(30000, 32768))
        self._pki = pki
        self._cluster_info = cluster_info
        self._members = members or _no_members
        self._quotas = quotas
        self._external_ips = external_ips or ExternalIPPolicy()
        self._max_replicas = max_replicas
        self._pod_security = PodSecurityAdmission(registry, pod_security)
        self._list_encoder = ListEncoder(health.last_heartbeat)

    async def _admit(self, obj: Message, old: Message | None = None) -> None:
        """Checks that need the store or the caller, after validation and before the write."""
        objectlimits.check_replicas(obj, self._max_replicas)
        await self._pod_security.check_workload(obj, old)
        if isinstance(obj, namespace_pb2.Namespace):
            self._pod_security.check_namespace(obj, old, admin=_is_admin())
        if isinstance(obj, network_pb2.Network):
            await ensure_no_orphans(self._registry, obj)
        if isinstance(obj, workloads_pb2.Service):
            previous = old if isinstance(old, workloads_pb2.Service) else None
            self._external_ips.check(obj, admin=_is_admin(), old=previous)

    async def _attach_networks(self, obj: Message) -> None:
        """Before validation and the immutability check: a pod's VF requests follow from its networks."""
        if isinstance(obj, pod_pb2.Pod):
            await podnetworks.admit(self._registry, obj.spec, obj.metadata.annotations)
        elif isinstance(obj, workloads_pb2.ReplicationController) and obj.spec.HasField("template"):
            template = obj.spec.template
            await podnetworks.admit(
                self._registry, template.spec, template.metadata.annotations, "spec.template.spec"
            )

    def _present(self, obj: Message) -> Message:
        """Overlay live facts that are not written to the store on every change; hide secrets."""
        redact(obj)
        if isinstance(obj, quota_pb2.ResourceQuota) and self._quotas is not None:
            # Computed, as Kubernetes' quota controller keeps it: the limits in force and the usage.
            namespace = obj.metadata.namespace
            obj.status.hard.update({k: _quantity(k, v) for k, v in self._quotas.hard_for(namespace).items()})
            obj.status.used.update({k: _quantity(k, v) for k, v in self._quotas.used(namespace).items()})
        if isinstance(obj, node_pb2.Node):
            beat = self._health.last_heartbeat.get(obj.metadata.name)
            if beat is not None:
                obj.status.last_heartbeat_time.FromNanoseconds(int(beat * 1e9))
        return obj

    async def Create(self, request: cluster_pb2.CreateRequest, context: Any) -> cluster_pb2.CreateResponse:
        info, obj = kinds.unwrap(request.object)
        obj.metadata.namespace = _namespace(info, obj.metadata.namespace)  # type: ignore[attr-defined]
        await self._attach_networks(obj)
        STRATEGIES[info.message].prepare_create(obj)
        await self._admit(obj)
        if request.dry_run:
            self._registry.prepare_new(obj)
            return cluster_pb2.CreateResponse(object=kinds.wrap(self._present(obj)))
        if isinstance(obj, workloads_pb2.Service):
            created = await self._create_service(obj)
        else:
            created = await self._registry.create(obj)
        log.info("created %s %s", info.name, obj.metadata.name)  # type: ignore[attr-defined]
        return cluster_pb2.CreateResponse(object=kinds.wrap(self._present(created)))

    async def _create_service(self, svc: workloads_pb2.Service) -> Message:
        fixed = bool(svc.spec.cluster_ip)
        asked = [p.node_port for p in svc.spec.ports]
        for _ in range(8):
            claim = await self._service_ips.claim(svc, fixed=fixed)
            ports = await self._node_ports.claim(svc, reserved=self._reserved_node_ports(svc))
            try:
                return await self._registry.create(svc, extra=[*([claim] if claim else []), *ports])
            except errors.AlreadyExists as exc:
                if "services" in str(exc) or (fixed and nodeports.PREFIX not in str(exc)):
                    raise
                # Lost an address or a port to a concurrent create: pick again (what was asked
                # for by name is checked again, and refused by name if it is gone).
                if not fixed:
                    svc.spec.cluster_ip = ""
                for port, number in zip(svc.spec.ports, asked, strict=True):
                    port.node_port = number
        raise errors.Unavailable("could not allocate a cluster IP or node port: too much contention, retry")

    def _reserved_node_ports(self, svc: workloads_pb2.Service) -> frozenset[int]:
        """sshd's and the daemons' ports: open on every node address, a node port must not take one."""
        return self._external_ips.reserved() if nodeports.has_node_ports(svc) else frozenset()

    async def Get(self, request: cluster_pb2.GetRequest, context: Any) -> cluster_pb2.GetResponse:
        info = kinds.by_kind(request.kind)
        if not request.name:
            raise errors.InvalidArgument("name is required", field="name")
        obj = await self._registry.get(info, _namespace(info, request.namespace), request.name)
        return cluster_pb2.GetResponse(object=kinds.wrap(self._present(obj)))

    async def List(
        self, request: cluster_pb2.ListRequest, context: Any
    ) -> cluster_pb2.ListResponse | callchain.Encoded:
        """For gRPC callers, kinds shown as stored come as bytes joined from each object's kept
        encoding (coordinator.api.encodedlist); the rest are parsed."""
        info = kinds.by_kind(request.kind)
        if context is None or info.message not in _PRESENTED_AS_STORED:
            return await self.list_objects(request, context)
        selector = labels.parse(request.label_selector)
        page = await self._list_page(info, request, selector, paging.PAGE_BYTES)
        try:
            return callchain.Encoded(
                self._list_encoder.reply(
                    info,
                    page.entries,
                    self._list_tail(page),
                    current=not request.continue_token,
                    whole_kind=not (info.namespaced and request.namespace)
                    and selector.empty
                    and not request.continue_token
                    and not page.last_key,
                )
            )
        except ValueError as exc:
            # A stored value that is not an object: the parsing path fails on it as it always did.
            log.warning("listing %s by parsing: %s", info.plural, exc)
            return await self.list_objects(request, context)

    async def list_objects(
        self, request: cluster_pb2.ListRequest, context: Any = None
    ) -> cluster_pb2.ListResponse:
        """List, each object parsed and presented: for in-process callers (the Kubernetes API,
        context None) and kinds whose presentation rewrites them."""
        info = kinds.by_kind(request.kind)
        # A gRPC reply stays under the 4 MiB clients in other languages accept; an in-process
        # caller (context None: the Kubernetes API) gets a list without a limit whole.
        page = await self._list_page(
            info,
            request,
            labels.parse(request.label_selector),
            paging.PAGE_BYTES if context is not None else paging.IN_PROCESS_PAGE_BYTES,
        )
        response = self._list_tail(page)
        for kv in page.entries:
            # Parsed once, in its place in the reply: what Registry.decode gives, without a copy.
            obj = getattr(response.items.add(), info.field)
            obj.MergeFromString(kv.value)
            obj.metadata.resource_version = kv.mod_revision
            self._present(obj)
        return response

    async def _list_page(
        self,
        info: KindInfo,
        request: cluster_pb2.ListRequest,
        selector: labels.Selector,
        max_bytes: int,
    ) -> Page:
        return await paging.list_page(
            self._registry,
            info,
            request.namespace if info.namespaced else "",
            selector,
            limit=request.limit,
            token=request.continue_token,
            max_bytes=max_bytes,
        )

    @staticmethod
    def _list_tail(page: Page) -> cluster_pb2.ListResponse:
        """A list reply's fields besides its items."""
        response = cluster_pb2.ListResponse(
            resource_version=page.revision, continue_token=paging.encode_token(page)
        )
        if page.last_key and page.remaining is not None:
            response.remaining_item_count = page.remaining
        return response

    async def Update(self, request: cluster_pb2.UpdateRequest, context: Any) -> cluster_pb2.UpdateResponse:
        info, sent = kinds.unwrap(request.object)
        meta = sent.metadata  # type: ignore[attr-defined]
        meta.namespace = _namespace(info, meta.namespace)
        expected = meta.resource_version or None
        # Without a resourceVersion an update is unconditional (as in Kubernetes): a write
        # that lands between our read and our compare-and-swap (the scheduler binding, a
        # status update) makes us read again, not fail the caller.
        for _ in range(_UNCONDITIONAL_UPDATE_ATTEMPTS):
            obj = type(sent)()
            obj.CopyFrom(sent)
            old = await self._registry.get(info, meta.namespace, meta.name)
            if expected is not None and old.metadata.resource_version != expected:  # type: ignore[attr-defined]
                raise errors.Conflict(
                    f'{info.plural} "{meta.name}" was modified (now at {old.metadata.resource_version}, '  # type: ignore[attr-defined]
                    f"you sent {expected}); read it again and retry"
                )
            carry_system_metadata(obj, old)
            if isinstance(obj, workloads_pb2.Service) and isinstance(old, workloads_pb2.Service):
                if not obj.spec.cluster_ip:
                    obj.spec.cluster_ip = old.spec.cluster_ip
                elif obj.spec.cluster_ip != old.spec.cluster_ip:
                    raise errors.InvalidArgument("field is immutable", field="spec.clusterIP")
                nodeports.carry_over(obj, old)
            await self._attach_networks(obj)
            STRATEGIES[info.message].prepare_update(obj, old)
            await self._admit(obj, old)
            extra: list[Op] = []
            if isinstance(obj, workloads_pb2.Service) and isinstance(old, workloads_pb2.Service):
                extra = await self._node_ports.claim(obj, old, reserved=self._reserved_node_ports(obj))
            if request.dry_run:
                return cluster_pb2.UpdateResponse(object=kinds.wrap(self._present(obj)))
            try:
                updated = await self._registry.update(
                    obj,
                    expected_revision=old.metadata.resource_version,  # type: ignore[attr-defined]
                    extra=extra,
                )
            except errors.Conflict:
                if expected is not None:
                    raise
                continue
            except errors.AlreadyExists:
                continue  # a node port picked here went to a concurrent write: pick again
            return cluster_pb2.UpdateResponse(object=kinds.wrap(self._present(updated)))
        raise errors.Conflict(
            f'{info.plural} "{meta.name}" kept changing; gave up after {_UNCONDITIONAL_UPDATE_ATTEMPTS} attempts'
        )

    async def Delete(self, request: cluster_pb2.DeleteRequest, context: Any) -> cluster_pb2.DeleteResponse:
        info = kinds.by_kind(request.kind)
        if not request.name:
            raise errors.InvalidArgument("name is required", field="name")
        if info.message is network_pb2.Network:
            leases, _ = await self._registry.list(kinds.by_name("Subnet"))
            if leases:
                raise errors.FailedPrecondition(
                    f"{len(leases)} node(s) hold leases on this network; delete their subnets first"
                )
        namespace = _namespace(info, request.namespace)
        if info.message is namespace_pb2.Namespace:
            await self._pod_security.check_namespace_delete(request.name, admin=_is_admin())
        extra: list[Op] = []
        if info.message is workloads_pb2.Service:
            current = await self._registry.get(info, namespace, request.name)
            assert isinstance(current, workloads_pb2.Service)
            extra = ServiceIPAllocator.release(current) + NodePortAllocator.release(current)
        deleted = await self._registry.delete(
            info, namespace, request.name, request.resource_version or None, extra=extra
        )
        # Dependents are handled after their owner is gone, so that it cannot adopt them back.
        if isinstance(deleted, workloads_pb2.ReplicationController):
            if request.orphan_dependents:
                await self._orphan_pods(deleted)
            else:
                await self._delete_dependents(deleted)
        if isinstance(deleted, node_pb2.Node):
            self._health.forget(deleted.metadata.name)
            await revocation.revoke_node(self._registry.store, deleted.metadata.name)  # cut off at once
            try:
                await self._registry.store.delete(f"{nodeleases.PREFIX}{deleted.metadata.name}")
            except errors.NotFound:
                pass
        log.info("deleted %s %s", info.name, request.name)
        return cluster_pb2.DeleteResponse(object=kinds.wrap(self._present(deleted)))

    async def _owned_pods(self, namespace: str, uid: str) -> list[pod_pb2.Pod]:
        pods, _ = await self._registry.list(kinds.by_name("Pod"), namespace)
        return [
            p
            for p in pods
            if isinstance(p, pod_pb2.Pod)
            and any(r.uid == uid and r.controller for r in p.metadata.owner_references)
        ]

    async def _delete_dependents(self, owner: workloads_pb2.ReplicationController) -> None:
        pod_kind = kinds.by_name("Pod")
        for pod in await self._owned_pods(owner.metadata.namespace, owner.metadata.uid):
            try:
                await self._registry.delete(pod_kind, pod.metadata.namespace, pod.metadata.name)
            except errors.NotFound:
                pass

    async def _orphan_pods(self, owner: workloads_pb2.ReplicationController) -> None:
        uid = owner.metadata.uid

        def release(obj: Message) -> bool:
            assert isinstance(obj, pod_pb2.Pod)
            keep = [r for r in obj.metadata.owner_references if r.uid != uid]
            if len(keep) == len(obj.metadata.owner_references):
                return False
            del obj.metadata.owner_references[:]
            obj.metadata.owner_references.extend(keep)
            return True

        for pod in await self._owned_pods(owner.metadata.namespace, uid):
            try:
                await self._registry.guaranteed_update(
                    kinds.by_name("Pod"), pod.metadata.namespace, pod.metadata.name, release
                )
            except errors.NotFound:
                pass

    async def Watch(
        self, request: cluster_pb2.WatchRequest, context: Any
    ) -> AsyncIterator[cluster_pb2.WatchResponse]:
        info = kinds.by_kind(request.kind)
        selector = labels.parse(request.label_selector)
        namespace = request.namespace if info.namespaced else ""
        revision = request.resource_version
        if revision == 0:
            items, revision = await self._registry.list(info, namespace, selector)
            for obj in items:
                yield cluster_pb2.WatchResponse(
                    type=cluster_pb2.EVENT_TYPE_ADDED, object=kinds.wrap(self._present(obj))
                )
        async for event in self._registry.watch(info, namespace, selector, revision):
            yield cluster_pb2.WatchResponse(
                type=_EVENT_TYPES[event.type], object=kinds.wrap(self._present(event.object))
            )

    async def GetLogs(
        self, request: cluster_pb2.GetLogsRequest, context: Any
    ) -> AsyncIterator[cluster_pb2.GetLogsResponse]:
        pod = await self._registry.get(kinds.by_name("Pod"), request.namespace or "default", request.pod)
        assert isinstance(pod, pod_pb2.Pod)
        if not pod.spec.node_name:
            raise errors.FailedPrecondition(f"pod {request.pod} is not scheduled yet: {pod.status.message}")
        stub = self._agent_stub(pod.spec.node_name)
        call = stub.GetContainerLogs(
            agent_pb2.GetContainerLogsRequest(
                namespace=pod.metadata.namespace,
                pod=pod.metadata.name,
                container=request.container,
                follow=request.follow,
                tail_lines=request.tail_lines,
                previous=request.previous,
                timestamps=request.timestamps,
            )
        )
        async for chunk in rpc.stream(call):
            yield cluster_pb2.GetLogsResponse(data=chunk.data)

    async def ListCoordinators(
        self, request: cluster_pb2.ListCoordinatorsRequest, context: Any
    ) -> cluster_pb2.ListCoordinatorsResponse:
        response = cluster_pb2.ListCoordinatorsResponse()
        for m in await self._members():
            member = response.members.add(id=m.id, address=m.address, leader=m.leader)
            member.started.FromNanoseconds(int(m.started * 1e9))
            if m.leader:
                member.leader_since.FromNanoseconds(int(m.leader_since * 1e9))
        return response

    async def GetClusterInfo(
        self, request: cluster_pb2.GetClusterInfoRequest, context: Any
    ) -> cluster_pb2.GetClusterInfoResponse:
        return self._cluster_info()

    async def GetVersion(
        self, request: cluster_pb2.GetVersionRequest, context: Any
    ) -> cluster_pb2.GetVersionResponse:
        return serverversion.response()

    async def SignUserCertificate(
        self, request: cluster_pb2.SignUserCertificateRequest, context: Any
    ) -> cluster_pb2.SignUserCertificateResponse:
        if self._pki is None:
            raise errors.FailedPrecondition("this coordinator runs --insecure: it issues no certificates")
        cert = self._pki.sign_user(request.csr, request.user, request.role, float(request.ttl_seconds))
        log.info("signed a %s certificate for user %s", request.role, request.user)
        return cluster_pb2.SignUserCertificateResponse(
            certificate=cert, ca_certificate=self._pki.authority.cert_pem
        )
