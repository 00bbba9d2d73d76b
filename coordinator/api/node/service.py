"""NodeService: what agents call. Registration, heartbeats, desired pods, pod status."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from google.protobuf.message import Message

from atoll import aio, callchain, errors, kinds, validation
from atoll.nodestatus import significant
from atoll.v1 import meta_pb2, node_api_pb2, node_api_pb2_grpc, node_pb2, pod_pb2, workloads_pb2
from coordinator.api.node import pushes
from coordinator.api.node.assignments import AssignmentTracker
from coordinator.api.node.nodeconfig import NodeConfigTracker
from coordinator.api.node.servicestate import ServiceStateTracker
from coordinator.auth import revocation, roles
from coordinator.auth.certs import ClusterPki
from coordinator.auth.tokens import TokenAuthenticator
from coordinator.controllers.nodelifecycle import NodeHealth
from coordinator.network.subnetleases import LeaseManager
from coordinator.objects.events import EventRecorder
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry

log = logging.getLogger(__name__)

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


NODE = kinds.by_name("Node")
STATUS_WRITE_WAIT = 1.0  # seconds a heartbeat on the API's listener waits for its node's status write
POD = kinds.by_name("Pod")
TERMINAL = (pod_pb2.POD_PHASE_SUCCEEDED, pod_pb2.POD_PHASE_FAILED)
# What a node's events may say: Kubernetes' two types, and its limit on a reason's length.
EVENT_TYPES = ("Normal", "Warning")
MAX_EVENT_REASON = 128


def merge_conditions(
    target: node_pb2.NodeStatus, reported: node_pb2.NodeStatus, now_ns: int, old: node_pb2.NodeStatus
) -> None:
    previous = {c.type: c for c in old.conditions}
    del target.conditions[:]
    for cond in reported.conditions:
        new = target.conditions.add()
        new.CopyFrom(cond)
        new.last_heartbeat_time.FromNanoseconds(now_ns)
        before = previous.get(cond.type)
        if before is not None and before.status == cond.status:
            new.last_transition_time.CopyFrom(before.last_transition_time)
        else:
            new.last_transition_time.FromNanoseconds(now_ns)


def merge_pod_status(pod: pod_pb2.Pod, reported: pod_pb2.PodStatus) -> bool:
    """Apply an agent's report; keep what the coordinator owns. False when nothing changes."""
    if pod.status.phase in TERMINAL and reported.phase != pod.status.phase:
        return False  # terminal phases are final, as in Kubernetes
    merged = pod_pb2.PodStatus()
    merged.CopyFrom(reported)
    reported_types = {c.type for c in reported.conditions}
    previous = {c.type: c for c in pod.status.conditions}
    for cond in merged.conditions:
        before = previous.get(cond.type)
        if before is not None and before.status == cond.status:
            cond.last_transition_time.CopyFrom(before.last_transition_time)
    for cond in pod.status.conditions:
        if cond.type not in reported_types:
            merged.conditions.append(cond)
    if merged == pod.status:
        return False
    pod.status.CopyFrom(merged)
    return True


# After Kubernetes' NodeRestriction: labels a node may not set on itself. Placement-sensitive pods
# select on labels under this prefix, which only admins set (README "Security").
PROTECTED_LABEL_PREFIX = "node-restriction.atoll.io/"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def check_self_labels(node: str, labels: Mapping[str, str]) -> None:
    """A node registering may not claim another node's host name, nor any protected label."""
    for key, value in sorted(labels.items()):
        if key == HOSTNAME_LABEL and value != node:
            raise errors.PermissionDenied(
                f"metadata.labels[{key}]: node {node} may not label itself {key}={value}: "
                "it must be its own name"
            )
        if key.startswith(PROTECTED_LABEL_PREFIX):
            raise errors.PermissionDenied(
                f"metadata.labels[{key}]: labels under {PROTECTED_LABEL_PREFIX} are set by admins, "
                f"not by node {node} itself"
            )


def status_answer(response: node_api_pb2.ReportPodStatusResponse) -> node_api_pb2.StreamPodStatusResponse:
    """A StreamPodStatus message's answer when its report was applied."""
    return node_api_pb2.StreamPodStatusResponse(response=response)


def status_refusal(err: errors.AtollError) -> node_api_pb2.StreamPodStatusResponse:
    """A StreamPodStatus message's answer when ReportPodStatus would have failed with `err`
    (agent.statusstream.refusal turns it back into that error)."""
    return node_api_pb2.StreamPodStatusResponse(code=err.code.value[0], message=str(err), field=err.field)


class NodeServicer(node_api_pb2_grpc.NodeServiceServicer):
    def __init__(
        self,
        registry: Registry,
        *,
        assignments: AssignmentTracker,
        pods: Informer,
        health: NodeHealth,
        nodes: Informer | None = None,
        leases: LeaseManager,
        node_configs: NodeConfigTracker,
        service_state: ServiceStateTracker,
        recorder: EventRecorder,
        heartbeat_interval: Callable[[], float],
        status_interval: float,
        clock: Callable[[], float],
        pki: ClusterPki | None = None,
        tokens: TokenAuthenticator | None = None,
    ) -> None:
        self._registry = registry
        self._assignments = assignments
        self._pods = pods
        self._nodes = nodes
        self._status_writes: dict[str, asyncio.Task[Message]] = {}
        self._health = health
        self._leases = leases
        self._node_configs = node_configs
        self._service_state = service_state
        self._recorder = recorder
        # Told to agents in every answer, paced to the fleet's size
        # (coordinator.controllers.heartbeatpace), read on the lane's thread too.
        self._heartbeat_interval = heartbeat_interval
        self._status_interval = status_interval
        self._clock = clock
        self._pki = pki
        self._tokens = tokens
        # The heartbeat lane's port, told to agents in every answer (0: no lane; set once it listens).
        self.lease_port = 0

    def _tell_interval(self, node: str) -> int:
        """The heartbeat interval for `node`'s answer, in ms, noted as told (it is judged by it)."""
        seconds = self._heartbeat_interval()
        self._health.told(node, seconds)
        return int(seconds * 1000)

    def _check_name(self, name: str) -> None:
        if not name or not validation.DNS1123_SUBDOMAIN.fullmatch(name):
            raise errors.InvalidArgument(f"invalid node name {name!r}", field="node_name")

    async def Register(
        self, request: node_api_pb2.RegisterRequest, context: Any
    ) -> node_api_pb2.RegisterResponse:
        incoming = request.node
        validation.validate_node(incoming).raise_first()
        name = incoming.metadata.name
        check_self_labels(name, incoming.metadata.labels)
        # Told before the heartbeat is noted: a node lease written in between carries this interval.
        interval_ms = self._tell_interval(name)
        now = self._health.beat(name)
        now_ns = int(now * 1e9)
        if await self._registry.store.get(f"/{NODE.plural}/{name}") is None:
            node = node_pb2.Node()
            node.metadata.name = name
            node.metadata.labels.update(incoming.metadata.labels)
            node.metadata.labels.setdefault("kubernetes.io/hostname", name)
            node.status.CopyFrom(incoming.status)
            merge_conditions(node.status, incoming.status, now_ns, node_pb2.NodeStatus())
            node.status.last_heartbeat_time.FromNanoseconds(now_ns)
            try:
                created = await self._registry.create(node)
                log.info("node %s registered", name, extra={"node": name})
                self._health.last_status_write[name] = now
                return node_api_pb2.RegisterResponse(
                    node=created,
                    heartbeat_interval_ms=interval_ms,
                    lease_port=self.lease_port,
                    events_with_status=True,
                )
            except errors.AlreadyExists:
                pass  # registered concurrently: refresh it below

        def refresh(obj: Message) -> bool:
            assert isinstance(obj, node_pb2.Node)
            # The agent's labels win for the keys it sets (never protected ones: checked above);
            # labels an admin or operator added stay.
            obj.metadata.labels.update(incoming.metadata.labels)
            _take_status(obj, incoming.status, now_ns)
            return True

        updated = await self._registry.guaranteed_update(NODE, "", name, refresh)
        assert isinstance(updated, node_pb2.Node)
        self._health.last_status_write[name] = now
        log.info("node %s re-registered", name, extra={"node": name})
        return node_api_pb2.RegisterResponse(
            node=updated,
            heartbeat_interval_ms=interval_ms,
            lease_port=self.lease_port,
            events_with_status=True,
        )

    def heartbeat_from_memory(
        self, request: node_api_pb2.HeartbeatRequest
    ) -> tuple[node_api_pb2.HeartbeatResponse | None, float | None]:
        """The answer to a heartbeat from memory alone, and, when its node's status is due for a
        write (on the main loop, where the store is), the time it was heard; None when not due.
        The answer is None when only Heartbeat can give it (the informer's first list not done, a
        node not cached yet, no assignment generation known). Called on the heartbeat lane's
        thread (coordinator.api.node.lane): it reads the informer's cache, the health table and
        the assignment generations and writes one heartbeat time, each a single dict operation."""
        name = request.node_name
        self._check_name(name)
        current = self._cached_node(name)
        generation = self._assignments.known_generation(name)
        if current is None or generation is None:
            return None, None
        interval_ms = self._tell_interval(name)  # before the beat: a lease written between carries it
        heard = self._health.beat(name)  # alive, whether the main loop gets to a status write soon or not
        answer = node_api_pb2.HeartbeatResponse(
            assignment_generation=generation,
            heartbeat_interval_ms=interval_ms,
            lease_port=self.lease_port,
            events_with_status=True,
        )
        return answer, heard if self._status_due(name, current, request, heard) else None

    def _status_due(
        self, name: str, current: node_pb2.Node, request: node_api_pb2.HeartbeatRequest, now: float
    ) -> bool:
        """Whether this heartbeat writes the node's status: unchanged for --node-status-interval,
        Ready unknown (the lifecycle judged it silent), or the agent reports something new."""
        stale = now - self._health.last_status_write.get(name, 0.0) >= self._status_interval
        unknown = any(
            c.type == "Ready" and c.status == meta_pb2.CONDITION_STATUS_UNKNOWN
            for c in current.status.conditions
        )
        return stale or unknown or significant(current.status) != significant(request.status)

    async def Heartbeat(
        self, request: node_api_pb2.HeartbeatRequest, context: Any
    ) -> node_api_pb2.HeartbeatResponse:
        name = request.node_name
        self._check_name(name)
        current = await self._current_node(name)
        interval_ms = self._tell_interval(name)  # before the beat: a lease written between carries it
        now = self._health.beat(name)
        if self._status_due(name, current, request, now):
            await self._write_status(name, _refresher(request, now), now)
        return node_api_pb2.HeartbeatResponse(
            assignment_generation=self._assignments.generation(name),
            heartbeat_interval_ms=interval_ms,
            lease_port=self.lease_port,
            events_with_status=True,
        )

    async def write_handed_status(self, request: node_api_pb2.HeartbeatRequest, received: float) -> None:
        """The status of a heartbeat the lane answered, written here on the main loop, whole (nobody
        waits for it). Its heartbeat time is when the lane received it, not when this runs: the
        time other coordinators read is not pushed later by a stalled loop. Skipped when the
        status is no longer due (written meanwhile); a store error is raised to the lane."""
        name = request.node_name
        current = await self._current_node(name)
        if not self._status_due(name, current, request, self._health.now()):
            return
        await self._registry.guaranteed_update(NODE, "", name, _refresher(request, received))
        self._health.last_status_write[name] = received

    async def _write_status(self, name: str, refresh: Callable[[Message], bool], now: float) -> None:
        """Write a node's status, waiting for it at most STATUS_WRITE_WAIT seconds.

        Under a burst of pod writes a status write can wait seconds in the store's queue; the
        agent sends its next heartbeat only after this one's answer, so a heartbeat held by
        its write made a healthy node silent past the grace period. Past the wait the write
        finishes in the background (one at a time per node; the next heartbeat that finds the
        status stale writes again)."""
        if name in self._status_writes:
            return  # one in flight already
        task = asyncio.create_task(self._registry.guaranteed_update(NODE, "", name, refresh))
        self._status_writes[name] = task

        def finished(t: asyncio.Task[Message]) -> None:
            self._status_writes.pop(name, None)
            if t.cancelled():
                return
            if t.exception() is None:
                self._health.last_status_write[name] = now
            elif late:
                log.warning("writing node %s status failed: %s", name, t.exception(), extra={"node": name})

        late = False
        task.add_done_callback(finished)
        try:
            await asyncio.wait_for(asyncio.shield(task), STATUS_WRITE_WAIT)
        except TimeoutError:
            late = True  # the answer goes now; the write lands when the store gets to it

    def _cached_node(self, name: str) -> node_pb2.Node | None:
        """The node as this coordinator's informer holds it; None until the informer's first
        list is done, or while it has not seen the node. Safe from the heartbeat lane's thread:
        a single dict read."""
        if self._nodes is None or not self._nodes.synced.is_set():
            return None
        node = self._nodes.cache.get(f"/{NODE.plural}/{name}")
        return node if isinstance(node, node_pb2.Node) else None

    async def _current_node(self, name: str) -> node_pb2.Node:
        """The node as this coordinator's informer holds it (decoded once, for every heartbeat
        that compares against it), or as the store has it when the informer has not seen it yet
        (it registered a moment ago, or the informer is still listing)."""
        cached = self._cached_node(name)
        if cached is not None:
            return cached
        kv = await self._registry.store.get(f"/{NODE.plural}/{name}")
        if kv is None:
            raise errors.NotFound(f'nodes "{name}" not found; register first')
        node = self._registry.decode(NODE, kv)
        assert isinstance(node, node_pb2.Node)
        return node

    async def GetAssignment(
        self, request: node_api_pb2.GetAssignmentRequest, context: Any
    ) -> node_api_pb2.GetAssignmentResponse:
        self._check_name(request.node_name)
        parts = self._assignments.parts(request.node_name)
        if not 0 <= request.part < len(parts):
            raise errors.InvalidArgument(f"the assignment has {len(parts)} part(s)", field="part")
        return node_api_pb2.GetAssignmentResponse(assignment=parts[request.part])

    async def WatchAssignment(
        self, request: node_api_pb2.WatchAssignmentRequest, context: Any
    ) -> AsyncIterator[node_api_pb2.WatchAssignmentResponse]:
        self._check_name(request.node_name)
        sent = -1
        while True:
            await self._assignments.wait_change(request.node_name, sent)
            if request.accept_deltas and sent >= 0:
                delta = self._assignments.delta(request.node_name, sent)
                if delta is not None:
                    sent = delta.generation
                    yield node_api_pb2.WatchAssignmentResponse(assignment=delta)
                    continue
            for part in self._assignments.parts(request.node_name):
                sent = part.generation
                yield node_api_pb2.WatchAssignmentResponse(assignment=part)

    async def ReportPodStatus(
        self, request: node_api_pb2.ReportPodStatusRequest, context: Any
    ) -> node_api_pb2.ReportPodStatusResponse:
        node = request.node_name
        self._check_name(node)

        async def apply(report: node_api_pb2.PodStatusReport) -> bool:
            def mutate(obj: Message) -> bool:
                assert isinstance(obj, pod_pb2.Pod)
                if obj.metadata.uid != report.uid or obj.spec.node_name != node:
                    raise errors.FailedPrecondition("pod is not bound to this node")
                return merge_pod_status(obj, report.status)

            try:
                await self._registry.guaranteed_update(
                    POD, report.namespace or "default", report.name, mutate
                )
                return True
            except (errors.NotFound, errors.FailedPrecondition):
                return False

        results = await asyncio.gather(*(apply(r) for r in request.reports))
        self._record_events(node, request.events)
        return node_api_pb2.ReportPodStatusResponse(ignored=sum(1 for ok in results if not ok))

    @callchain.calls_on_stream(answer=status_answer, refuse=status_refusal)
    async def StreamPodStatus(
        self, request: node_api_pb2.StreamPodStatusRequest, context: Any
    ) -> node_api_pb2.ReportPodStatusResponse:
        """One ReportPodStatus call per message of the stream (callchain.calls_on_stream)."""
        return await self.ReportPodStatus(request.report, context)

    async def AcquireLease(
        self, request: node_api_pb2.AcquireLeaseRequest, context: Any
    ) -> node_api_pb2.AcquireLeaseResponse:
        self._check_name(request.node_name)
        if not _is_ip(request.public_ip):
            raise errors.InvalidArgument(
                f"public_ip: {request.public_ip!r} is not an IP address", field="public_ip"
            )
        if not _MAC.fullmatch(request.vtep_mac):
            raise errors.InvalidArgument(
                f"vtep_mac: {request.vtep_mac!r} is not a MAC address", field="vtep_mac"
            )
        lease = await self._leases.acquire(request.node_name, request.public_ip, request.vtep_mac.lower())
        return node_api_pb2.AcquireLeaseResponse(lease=lease, network=await self._leases.network())

    async def WatchNodeConfig(
        self, request: node_api_pb2.WatchNodeConfigRequest, context: Any
    ) -> AsyncIterator[node_api_pb2.WatchNodeConfigResponse | callchain.Encoded]:
        self._check_name(request.node_name)
        sent = -1
        with self._node_configs.stream():
            while True:
                await self._node_configs.wait_change(sent)
                # Built and serialised once per generation for all streams (nodeconfig).
                sent, payload = self._node_configs.encoded(sent, request.accept_deltas)
                yield payload  # the tracker paces the wake-ups by the streams open (nodeconfig)

    async def WatchServices(
        self, request: node_api_pb2.WatchServicesRequest, context: Any
    ) -> AsyncIterator[node_api_pb2.WatchServicesResponse | callchain.Encoded]:
        self._check_name(request.node_name)
        sent = -1
        while True:
            await self._service_state.wait_change(sent)
            # Built and serialised once per generation for all streams (servicestate).
            sent, payload = self._service_state.encoded(sent, request.accept_deltas)
            yield payload

    async def WatchNode(
        self, request: node_api_pb2.WatchNodeRequest, context: Any
    ) -> AsyncIterator[callchain.Encoded]:
        """The watches the request asks for, on one stream: each push as its own call sends it."""
        name = request.node_name
        self._check_name(name)
        feeds: list[AsyncIterator[callchain.Encoded]] = []
        if request.assignment:
            assignment_request = node_api_pb2.WatchAssignmentRequest(
                node_name=name, accept_deltas=request.accept_assignment_deltas
            )
            assignment = self.WatchAssignment(assignment_request, context)
            feeds.append(pushes.as_pushes(pushes.ASSIGNMENT, assignment))
        if request.node_config:
            config_request = node_api_pb2.WatchNodeConfigRequest(
                node_name=name, accept_deltas=request.accept_node_config_deltas
            )
            feeds.append(pushes.as_pushes(pushes.NODE_CONFIG, self.WatchNodeConfig(config_request, context)))
        if request.services:
            services_request = node_api_pb2.WatchServicesRequest(
                node_name=name, accept_deltas=request.accept_service_deltas
            )
            feeds.append(pushes.as_pushes(pushes.SERVICES, self.WatchServices(services_request, context)))
        if not feeds:
            raise errors.InvalidArgument("asks for no push", field="assignment")
        async with contextlib.aclosing(aio.merge(*feeds)) as merged:
            async for push in merged:
                yield push

    async def ReportEvents(
        self, request: node_api_pb2.ReportEventsRequest, context: Any
    ) -> node_api_pb2.ReportEventsResponse:
        self._check_name(request.node_name)
        self._record_events(request.node_name, request.events)
        return node_api_pb2.ReportEventsResponse()

    def _record_events(self, node: str, events: Sequence[workloads_pb2.Event]) -> None:
        """Events a node reported (ReportEvents, or with its pod statuses): at most 1,000 per call,
        each about the node itself or a pod bound to it (others are dropped)."""
        for event in events[:1000]:
            ref = self._own_reference(node, event.involved_object)
            if ref is None:
                log.info(
                    "node %s reported an event about %s %s/%s, which is not its own: dropped",
                    node,
                    event.involved_object.kind,
                    event.involved_object.namespace,
                    event.involved_object.name,
                    extra={"node": node},
                )
                continue
            type_ = event.type or "Normal"
            if type_ not in EVENT_TYPES or not event.reason or len(event.reason) > MAX_EVENT_REASON:
                log.info(
                    "node %s reported an event of type %.20r, reason %.40r: dropped (%s, a reason of 1-%d)",
                    node,
                    type_,
                    event.reason,
                    "/".join(EVENT_TYPES),
                    MAX_EVENT_REASON,
                    extra={"node": node},
                )
                continue
            self._recorder.record_ref(
                ref, type_, event.reason, event.message[:1024], component="agent", host=node
            )

    def _own_reference(
        self, node: str, ref: workloads_pb2.ObjectReference
    ) -> workloads_pb2.ObjectReference | None:
        """The object a node's event is about, as the coordinator knows it, or None: a node speaks
        only of itself and of the pods bound to it (as with ReportPodStatus). The reference is
        rebuilt from the coordinator's own copy, so the node cannot pick the uid or namespace its
        events are filed (and spam-filtered) under."""
        if ref.kind == "Node":
            if ref.name != node:
                return None
            current = self._cached_node(node)
            uid = current.metadata.uid if current is not None else ""
            return workloads_pb2.ObjectReference(kind="Node", name=node, uid=uid)
        if ref.kind != "Pod":
            return None
        pod = self._pods.get(ref.namespace or "default", ref.name)
        if not (
            isinstance(pod, pod_pb2.Pod)
            and pod.spec.node_name == node
            and (not ref.uid or ref.uid == pod.metadata.uid)
        ):
            return None
        return workloads_pb2.ObjectReference(
            kind="Pod", namespace=pod.metadata.namespace, name=pod.metadata.name, uid=pod.metadata.uid
        )

    def _require_pki(self) -> ClusterPki:
        if self._pki is None:
            raise errors.FailedPrecondition("this coordinator runs --insecure: it issues no certificates")
        return self._pki

    async def Join(self, request: node_api_pb2.JoinRequest, context: Any) -> node_api_pb2.JoinResponse:
        """A bootstrap token (checked by the auth interceptor) buys one node certificate."""
        pki = self._require_pki()
        identity = roles.current()
        name = request.node_name
        cert = pki.sign_node(request.csr, name)  # validates the name and the CSR before a use is spent
        exists = await self._registry.store.get(f"/{NODE.plural}/{name}") is not None
        assert self._tokens is not None
        await self._tokens.consume(identity.token, name, node_exists=exists)
        await revocation.record_issued(self._registry.store, name, cert)
        log.info("node %s joined with token %s", name, identity.token, extra={"node": name})
        return node_api_pb2.JoinResponse(certificate=cert, ca_certificate=pki.authority.cert_pem)

    async def RenewCertificate(
        self, request: node_api_pb2.RenewCertificateRequest, context: Any
    ) -> node_api_pb2.RenewCertificateResponse:
        """A node re-keys through its current certificate (the interceptor matched its name)."""
        pki = self._require_pki()
        cert = pki.sign_node(request.csr, request.node_name)
        await revocation.record_issued(self._registry.store, request.node_name, cert)
        log.info("renewed the certificate of node %s", request.node_name, extra={"node": request.node_name})
        return node_api_pb2.RenewCertificateResponse(certificate=cert, ca_certificate=pki.authority.cert_pem)


def _refresher(request: node_api_pb2.HeartbeatRequest, when: float) -> Callable[[Message], bool]:
    """The update that writes a heartbeat's status into its Node, heard at `when`."""
    when_ns = int(when * 1e9)

    def refresh(obj: Message) -> bool:
        assert isinstance(obj, node_pb2.Node)
        _take_status(obj, request.status, when_ns)
        return True

    return refresh


def _take_status(node: node_pb2.Node, status: node_pb2.NodeStatus, when_ns: int) -> None:
    """The agent's status into `node`, its conditions' transition times kept where unchanged."""
    old = node_pb2.NodeStatus()
    old.CopyFrom(node.status)
    node.status.CopyFrom(status)
    merge_conditions(node.status, status, when_ns, old)
    node.status.last_heartbeat_time.FromNanoseconds(when_ns)
