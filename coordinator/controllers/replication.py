"""The replication manager: keep `replicas` pods matching each controller's selector.

Level-triggered per controller, like Kubernetes' ReplicationManager: count the
active pods (not Succeeded/Failed) in the controller's namespace that match its
selector, adopt matching pods that no controller owns, create pods from the
template or delete the surplus, and report the counts in the status.

Expectations: after creating or deleting pods, the controller waits until the
pod informer has seen those changes before it counts again, so a slow cache
never makes it create twice. They expire after `expectation_timeout` in case a
watch event is lost.

Pods the node controller marked lost (Failed, reason NodeLost) are deleted
here once they no longer count, so that `get pods` shows the replicas that run.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from atoll import errors, kinds, labels, logs
from atoll.aio import wait_or_stop
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator.controllers.ownedpods import OwnedPods, is_active, is_lost, is_ready
from coordinator.controllers.queue import WorkQueue
from coordinator.objects.events import EventRecorder
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry

log = logging.getLogger(__name__)

COMPONENT = "replication-controller"  # its events' source, as Kubernetes names its components

RC = kinds.by_name("ReplicationController")
POD = kinds.by_name("Pod")
_SUFFIX_CHARS = string.ascii_lowercase + string.digits


def random_suffix(n: int = 5) -> str:
    # One draw for the whole suffix (a secrets.choice each made five urandom calls per pod).
    value = secrets.randbelow(len(_SUFFIX_CHARS) ** n)
    chars = []
    for _ in range(n):
        value, digit = divmod(value, len(_SUFFIX_CHARS))
        chars.append(_SUFFIX_CHARS[digit])
    return "".join(chars)


# Names a pod create tries before giving up on a clash with an existing pod: 36^5 suffixes make
# one clash about every 10,000 pods of a controller, and Kubernetes' API server retries a
# generated name up to 8 times in all (RetryGenerateName).
NAME_ATTEMPTS = 8


def selector_of(rc: workloads_pb2.ReplicationController) -> dict[str, str]:
    return dict(rc.spec.selector) or dict(rc.spec.template.metadata.labels)


def controller_uid(pod: pod_pb2.Pod) -> str:
    for ref in pod.metadata.owner_references:  # a loop, not next() over a generator: every pod event
        if ref.controller:
            return ref.uid
    return ""


def _key(pod: pod_pb2.Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def deletion_rank(pod: pod_pb2.Pod) -> tuple[int, int, int, int]:
    """Pods to delete first sort first: unbound, then pending, then not ready, then the newest."""
    return (
        0 if not pod.spec.node_name else 1,
        0 if pod.status.phase == pod_pb2.POD_PHASE_PENDING else 1,
        0 if not is_ready(pod) else 1,
        -pod.metadata.creation_timestamp.ToNanoseconds(),
    )


@dataclass
class _Expectations:
    adds: set[str] = field(default_factory=set)  # pod names
    deletes: set[str] = field(default_factory=set)
    deadline: float = 0.0

    def satisfied(self, now: float) -> bool:
        return (not self.adds and not self.deletes) or now > self.deadline


class ReplicationManager:
    def __init__(
        self,
        registry: Registry,
        rcs: Informer,
        pods: Informer,
        recorder: EventRecorder,
        *,
        clock: Callable[[], float] = time.time,
        burst: int = 500,
        expectation_timeout: float = 30.0,
        status_delay: float = 0.5,
        admit: Callable[[Message, Message | None], Awaitable[None]] | None = None,
    ) -> None:
        self._registry = registry
        # Admission for the pods it creates (pod security): the API checked the template when the
        # controller was written, but the namespace's level may have been tightened since.
        self._admit = admit
        self._rcs = rcs
        self._pods = pods
        self._recorder = recorder
        self._clock = clock
        self._burst = burst
        self._expectation_timeout = expectation_timeout
        self._expect: dict[str, _Expectations] = {}
        self._by_owner: dict[str, OwnedPods] = {}  # by controller uid
        self._key_by_uid: dict[str, str] = {}  # controller uid -> namespace/name
        self._unowned: dict[str, dict[str, pod_pb2.Pod]] = {}
        self._status_delay = status_delay
        self.queue = WorkQueue("replication", self.sync)
        rcs.add_handler(self._on_rc)
        pods.add_handler(self._on_pod)

    # -- handlers ----------------------------------------------------------------------------------

    def _on_rc(self, type_: str, obj: Message, old: Message | None) -> None:
        key = f"{obj.metadata.namespace}/{obj.metadata.name}"  # type: ignore[attr-defined]
        uid = obj.metadata.uid  # type: ignore[attr-defined]
        if type_ == "DELETED":
            self._expect.pop(key, None)
            self._key_by_uid.pop(uid, None)
            if not self._by_owner.get(uid, True):
                del self._by_owner[uid]  # no pods left to count (those left go with their events)
        else:
            self._key_by_uid[uid] = key
        self.queue.add(key)

    def _owners_of(self, pod: pod_pb2.Pod, uid: str) -> list[str]:
        """The controllers `pod` counts for; `uid`: its controller's uid (controller_uid)."""
        if uid:  # owned: one lookup, not a walk over every controller
            key = self._key_by_uid.get(uid)
            return [key] if key is not None and key.partition("/")[0] == pod.metadata.namespace else []
        keys = []
        for rc in self._rcs.items():
            assert isinstance(rc, workloads_pb2.ReplicationController)
            if rc.metadata.namespace != pod.metadata.namespace:
                continue
            owns = uid and rc.metadata.uid == uid
            matches = not uid and labels.Selector.from_map(selector_of(rc)).matches(pod.metadata.labels)
            if owns or matches:
                keys.append(f"{rc.metadata.namespace}/{rc.metadata.name}")
        return keys

    def _index(
        self, type_: str, pod: pod_pb2.Pod, old: pod_pb2.Pod | None, owner: str, previous_owner: str
    ) -> None:
        """Keep pods grouped by controller uid, and the unowned ones by namespace."""
        key = _key(pod)
        if old is not None and owner and owner == previous_owner and type_ != "DELETED":
            self._by_owner.setdefault(owner, OwnedPods()).put(key, pod)  # a newer version, filed anew
            return
        if old is not None:
            owned = self._by_owner.get(previous_owner)
            if owned is not None:
                owned.remove(key)
                if not owned and previous_owner not in self._key_by_uid:
                    del self._by_owner[previous_owner]
            self._unowned.get(old.metadata.namespace, {}).pop(key, None)
        if type_ == "DELETED":
            return
        if owner:
            self._by_owner.setdefault(owner, OwnedPods()).put(key, pod)
        else:
            self._unowned.setdefault(pod.metadata.namespace, {})[key] = pod

    def _on_pod(self, type_: str, obj: Message, old: Message | None) -> None:
        assert isinstance(obj, pod_pb2.Pod)
        previous = old if isinstance(old, pod_pb2.Pod) else None
        owner = controller_uid(obj)
        previous_owner = controller_uid(previous) if previous is not None else ""
        self._index(type_, obj, previous, owner, previous_owner)
        owners = set(self._owners_of(obj, owner))
        if previous is not None and (previous_owner != owner or not owner):  # unowned: by its labels
            owners.update(self._owners_of(previous, previous_owner))
        counted_change = (
            type_ != "MODIFIED"
            or previous is None
            or is_active(obj) != is_active(previous)
            or obj.metadata.labels != previous.metadata.labels
            or owner != previous_owner
        )
        for key in owners:
            exp = self._expect.get(key)
            if exp is not None:
                if type_ == "ADDED":
                    exp.adds.discard(obj.metadata.name)
                elif type_ == "DELETED":
                    exp.deletes.discard(obj.metadata.name)
            if counted_change:
                self.queue.add(key)
            else:
                # Only readiness or status changed: the status can wait a moment, and many such
                # changes then cost one sync instead of one each.
                self.queue.add_later(key, self._status_delay)

    # -- sync ------------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        rc = self._rcs.get(namespace, name)
        if not isinstance(rc, workloads_pb2.ReplicationController):
            return
        exp = self._expect.get(key)
        if exp is not None and not exp.satisfied(self._clock()):
            return  # the informer has not caught up with our last writes yet
        owned = self._by_owner.setdefault(rc.metadata.uid, OwnedPods())
        owned.use_selector(selector_of(rc))
        orphans = [
            p for p in self._unowned.get(namespace, {}).values() if owned.matcher.matches(p.metadata.labels)
        ]
        # Pods adopted now count at once; the informer files them under this controller when
        # their new owner reference comes back.
        adopted = [pod for pod in orphans if await self._adopt(rc, pod)]
        # (unless the informer has filed them already, while the adoption was awaited)
        adopted_active = [p for p in adopted if is_active(p) and _key(p) not in owned.active]
        count = len(owned.active) + len(adopted_active)
        ready = len(owned.ready) + sum(1 for p in adopted_active if is_ready(p))
        lost = owned.lost_pods() + [p for p in adopted if is_lost(p)]
        want = rc.spec.replicas if rc.spec.HasField("replicas") else 1
        diff = want - count
        if diff > 0:
            await self._create(key, rc, min(diff, self._burst))
        elif diff < 0:
            candidates = owned.active_pods() + adopted_active
            surplus = sorted(candidates, key=deletion_rank)[: min(-diff, self._burst)]
            await self._delete(key, rc, surplus, "SuccessfulDelete")
        if lost and diff <= 0:
            await self._delete(key, rc, lost, "DeletedLostPod")
        await self._update_status(rc, count, ready)

    async def _adopt(self, rc: workloads_pb2.ReplicationController, pod: pod_pb2.Pod) -> bool:
        def adopt(obj: Message) -> bool:
            assert isinstance(obj, pod_pb2.Pod)
            if controller_uid(obj):
                raise errors.Conflict("pod is owned meanwhile")
            obj.metadata.owner_references.add(
                kind="ReplicationController", name=rc.metadata.name, uid=rc.metadata.uid, controller=True
            )
            return True

        try:
            await self._registry.guaranteed_update(POD, pod.metadata.namespace, pod.metadata.name, adopt)
        except errors.AtollError as exc:
            log.info(
                "rc %s could not adopt pod %s: %s",
                rc.metadata.name,
                pod.metadata.name,
                exc,
                extra=logs.pod(pod.metadata, rc=rc.metadata.name),
            )
            return False
        log.info(
            "rc %s adopted pod %s",
            rc.metadata.name,
            pod.metadata.name,
            extra=logs.pod(pod.metadata, rc=rc.metadata.name),
        )
        return True

    def _expect_now(self, key: str) -> _Expectations:
        exp = self._expect.setdefault(key, _Expectations())
        exp.deadline = self._clock() + self._expectation_timeout
        return exp

    @staticmethod
    def _fresh_name(rc: workloads_pb2.ReplicationController, taken: set[str]) -> str:
        """A generated pod name that none of the controller's creates in flight has: two alike
        in one batch would share one expectation, and the pod that won would go unexpected."""
        while True:
            name = f"{rc.metadata.name}-{random_suffix()}"
            if name not in taken:
                return name

    def _new_pod(self, rc: workloads_pb2.ReplicationController, taken: set[str]) -> pod_pb2.Pod:
        pod = pod_pb2.Pod()
        pod.metadata.CopyFrom(rc.spec.template.metadata)
        pod.metadata.ClearField("resource_version")
        pod.metadata.name = self._fresh_name(rc, taken)
        taken.add(pod.metadata.name)
        pod.metadata.namespace = rc.metadata.namespace
        pod.metadata.uid = ""
        pod.metadata.owner_references.add(
            kind="ReplicationController", name=rc.metadata.name, uid=rc.metadata.uid, controller=True
        )
        pod.spec.CopyFrom(rc.spec.template.spec)
        pod.status.phase = pod_pb2.POD_PHASE_PENDING
        return pod

    async def _create(self, key: str, rc: workloads_pb2.ReplicationController, count: int) -> None:
        exp = self._expect_now(key)
        taken = set(exp.adds)
        pods = [self._new_pod(rc, taken) for _ in range(count)]
        if self._admit is not None and pods:
            try:
                await self._admit(pods[0], None)  # they are all alike
            except errors.PermissionDenied as exc:
                log.warning(
                    "rc %s: not creating pods: %s",
                    rc.metadata.name,
                    exc,
                    extra={"rc": rc.metadata.name, "namespace": rc.metadata.namespace},
                )
                self._recorder.record(
                    rc, "Warning", "FailedCreate", f"Error creating: {exc}", component=COMPONENT
                )
                return
        exp.adds.update(p.metadata.name for p in pods)
        results = await asyncio.gather(
            *(self._create_named(exp, rc, p) for p in pods), return_exceptions=True
        )
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, BaseException):
                exp.adds.discard(pod.metadata.name)
                log.warning(
                    "rc %s: creating pod %s failed: %s",
                    rc.metadata.name,
                    pod.metadata.name,
                    result,
                    extra=logs.pod(pod.metadata, rc=rc.metadata.name),
                )
                self._recorder.record(
                    rc, "Warning", "FailedCreate", f"Error creating: {result}", component=COMPONENT
                )
            else:
                self._recorder.record(
                    rc, "Normal", "SuccessfulCreate", f"Created pod: {pod.metadata.name}", component=COMPONENT
                )
        if len(pods) > 1:
            log.info(
                "rc %s/%s: created %d pods",
                rc.metadata.namespace,
                rc.metadata.name,
                len(pods),
                extra={"rc": rc.metadata.name, "namespace": rc.metadata.namespace},
            )

    async def _create_named(
        self, exp: _Expectations, rc: workloads_pb2.ReplicationController, pod: pod_pb2.Pod
    ) -> pod_pb2.Pod:
        """Creates `pod`, under another generated name while its name is another pod's."""
        for attempt in range(1, NAME_ATTEMPTS + 1):
            try:
                return await self._registry.create(pod)
            except errors.AlreadyExists:
                # Ours after all? A store that resent a create it could not confirm (etcd after
                # an UNAVAILABLE) finds the pod its first try wrote.
                try:
                    there = await self._registry.get(POD, pod.metadata.namespace, pod.metadata.name)
                except errors.NotFound:
                    there = None
                if isinstance(there, pod_pb2.Pod) and there.metadata.uid == pod.metadata.uid:
                    return there
                if attempt == NAME_ATTEMPTS:
                    raise
                exp.adds.discard(pod.metadata.name)
                pod.metadata.name = self._fresh_name(rc, exp.adds)
                pod.metadata.uid = ""  # prepare_new gives it one afresh
                exp.adds.add(pod.metadata.name)
        raise AssertionError("unreachable")

    async def _delete(
        self, key: str, rc: workloads_pb2.ReplicationController, pods: list[pod_pb2.Pod], reason: str
    ) -> None:
        exp = self._expect_now(key)
        exp.deletes.update(p.metadata.name for p in pods)

        async def delete(pod: pod_pb2.Pod) -> None:
            try:
                await self._registry.delete(POD, pod.metadata.namespace, pod.metadata.name)
                self._recorder.record(
                    rc, "Normal", reason, f"Deleted pod: {pod.metadata.name}", component=COMPONENT
                )
            except errors.NotFound:
                exp.deletes.discard(pod.metadata.name)

        await asyncio.gather(*(delete(p) for p in pods))

    async def _update_status(
        self, rc: workloads_pb2.ReplicationController, replicas: int, ready: int
    ) -> None:
        status = rc.status
        if (status.replicas, status.ready_replicas, status.observed_generation) == (
            replicas,
            ready,
            rc.metadata.generation,
        ):
            return

        def mutate(obj: Message) -> bool:
            assert isinstance(obj, workloads_pb2.ReplicationController)
            obj.status.replicas, obj.status.ready_replicas = replicas, ready
            obj.status.observed_generation = obj.metadata.generation
            return True

        try:
            await self._registry.guaranteed_update(RC, rc.metadata.namespace, rc.metadata.name, mutate)
        except errors.NotFound:
            pass

    async def run(self, stop: asyncio.Event) -> None:
        await self._rcs.synced.wait()
        await self._pods.synced.wait()
        self.queue.add_all(f"{o.metadata.namespace}/{o.metadata.name}" for o in self._rcs.items())  # type: ignore[attr-defined]
        resync = asyncio.create_task(self._resync(stop))
        await self.queue.run(stop)
        resync.cancel()

    async def _resync(self, stop: asyncio.Event, period: float = 30.0) -> None:
        while not stop.is_set():
            if not await wait_or_stop(stop, period):
                self.queue.add_all(f"{o.metadata.namespace}/{o.metadata.name}" for o in self._rcs.items())  # type: ignore[attr-defined]
