"""Which pods each node should run, and a generation that moves when that changes.

Fed by the pod informer. A node's desired set is every pod bound to it; it
changes when a pod is bound there, deleted, or its spec changes — status
updates do not touch it. The node's generation is the store revision of its
last change: the revision of the event, or of the list a relist came from. It
only grows, also across coordinator restarts: a restarted coordinator numbers a
node at least at its list's revision, so never below what the earlier process
said, even when the node's last change was a deletion, and the same number
only for the same pods. A change at the revision the generation already has (a
relist's second pod on the node, an etcd transaction) moves it on by one only
when what it numbered was read (sent) meanwhile: one number, one set of pods.

Size: an assignment travels as one gRPC message, so it must stay under
rpc.MAX_RESPONSE_BYTES (256 MiB). Objects are at most --max-object-bytes
(1 MiB by default, 2 MiB at most) and the scheduler places at most the node's
allocatable pods (the agent's --max-pods, 110 by default): 110 x 2 MiB fits.
Pods pinned with spec.nodeName or a huge --max-pods could still overflow it,
so a larger assignment travels in parts (Assignment.part/parts) of at most
`max_bytes` each, which the agent joins before it acts: never failed, never
cut short.

A watch that accepts deltas gets its first assignment whole and then only
what changed since the generation it last sent: the pods added or changed and
the uids of those gone. With tens of pods per node, a whole assignment per bind
rebuilt and serialised every pod of the node each time (bench/hollow.py: the
pushes were a tenth of the coordinator's main loop in a burst). Each node
remembers which pods changed at which generation, the last MAX_CHANGES of
them; a stream further behind than that, or a delta larger than a part, gets
the whole assignment again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field

from google.protobuf.message import Message

from atoll import rpc
from atoll.v1 import node_api_pb2, pod_pb2
from coordinator.objects.informer import Informer

log = logging.getLogger(__name__)

# The pods of one assignment, serialized; the rest of the message is a few bytes.
ASSIGNMENT_BYTES = rpc.MAX_RESPONSE_BYTES - 1024 * 1024


# Pods changed per node that deltas can be built from (a node runs at most its --max-pods, 110).
MAX_CHANGES = 256


@dataclass
class _NodeSet:
    generation: int
    pods: dict[str, pod_pb2.Pod] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # uid -> the generation of the pod's last change (added, changed or gone), oldest first.
    changes: collections.OrderedDict[str, int] = field(default_factory=collections.OrderedDict)
    # Deltas reach back to this generation: the changes up to it are forgotten.
    floor: int = 0
    read: bool = False  # whether the pods at this generation were read (sent) since it moved

    def __post_init__(self) -> None:
        self.floor = self.generation


def assigned_node(pod: pod_pb2.Pod) -> str:
    """The node that should run `pod`: none once the node controller declared it lost."""
    if pod.status.phase == pod_pb2.POD_PHASE_FAILED and pod.status.reason == "NodeLost":
        return ""
    return pod.spec.node_name


def _desired_view(pod: pod_pb2.Pod) -> pod_pb2.Pod:
    """The part of a pod an agent needs: metadata and spec, not status."""
    view = pod_pb2.Pod()
    view.metadata.CopyFrom(pod.metadata)
    view.spec.CopyFrom(pod.spec)
    return view


class AssignmentTracker:
    def __init__(self, pods: Informer, *, max_bytes: int = 0) -> None:
        self._pods = pods
        self._max_bytes = max_bytes or ASSIGNMENT_BYTES
        self._nodes: dict[str, _NodeSet] = {}
        pods.add_handler(self._on_pod)

    def _node(self, name: str) -> _NodeSet:
        entry = self._nodes.get(name)
        if entry is None:
            entry = self._nodes[name] = _NodeSet(generation=self._pods.revision)
        return entry

    def _touch(self, name: str, uid: str) -> None:
        entry = self._node(name)
        revision = self._pods.revision
        if revision > entry.generation:
            entry.generation = revision
        elif entry.read:
            entry.generation += 1
        entry.read = False
        entry.changes[uid] = entry.generation
        entry.changes.move_to_end(uid)
        if len(entry.changes) > MAX_CHANGES:
            entry.floor = entry.changes.popitem(last=False)[1]
        entry.changed.set()
        entry.changed = asyncio.Event()

    def _on_pod(self, type_: str, obj: Message, old: Message | None) -> None:
        assert isinstance(obj, pod_pb2.Pod)
        old_node = assigned_node(old) if isinstance(old, pod_pb2.Pod) else ""
        new_node = assigned_node(obj) if type_ != "DELETED" else ""
        uid = obj.metadata.uid
        # A pod deleted and made again under its name comes as MODIFIED after a relist: the old
        # uid goes, whatever node the new one is on.
        old_uid = old.metadata.uid if isinstance(old, pod_pb2.Pod) else uid
        if old_node and (old_node != new_node or old_uid != uid):
            self._node(old_node).pods.pop(old_uid, None)
            self._touch(old_node, old_uid)
        if not new_node:
            return
        entry = self._node(new_node)
        current = entry.pods.get(uid)
        if (
            current is None
            or current.metadata.generation != obj.metadata.generation
            or current.metadata.labels != obj.metadata.labels
        ):
            entry.pods[uid] = _desired_view(obj)
            self._touch(new_node, uid)

    def generation(self, node: str) -> int:
        return self._node(node).generation

    def known_generation(self, node: str) -> int | None:
        """The node's generation without adding an entry (None: none yet): a read, safe from
        the heartbeat lane's thread."""
        entry = self._nodes.get(node)
        return None if entry is None else entry.generation

    def assignment(self, node: str) -> node_api_pb2.Assignment:
        """The whole assignment, in one message (tests and small nodes; the API sends `parts`)."""
        whole = node_api_pb2.Assignment(node_name=node, generation=self._node(node).generation)
        for part in self.parts(node):
            whole.pods.extend(part.pods)
        return whole

    def parts(self, node: str) -> list[node_api_pb2.Assignment]:
        """The assignment split into messages of at most `max_bytes` of pods each, in a stable
        order; one part for every node that keeps within its allocatable pods."""
        entry = self._node(node)
        entry.read = True
        ordered = sorted(entry.pods.values(), key=lambda p: (p.metadata.namespace, p.metadata.name))
        groups: list[list[pod_pb2.Pod]] = [[]]
        used = 0
        for pod in ordered:
            size = pod.ByteSize() + 16  # the field's tag and length
            if groups[-1] and used + size > self._max_bytes:
                groups.append([])
                used = 0
            groups[-1].append(pod)
            used += size
        return [
            node_api_pb2.Assignment(
                node_name=node, generation=entry.generation, pods=pods, part=i, parts=len(groups)
            )
            for i, pods in enumerate(groups)
        ]

    def delta(self, node: str, base: int) -> node_api_pb2.Assignment | None:
        """What changed on `node` after generation `base`, as a delta assignment; None when the
        changes remembered do not reach back to `base`, or the delta would not fit in one part."""
        entry = self._node(node)
        if base < entry.floor or base > entry.generation:
            return None
        entry.read = True
        delta = node_api_pb2.Assignment(
            node_name=node, generation=entry.generation, delta=True, base_generation=base
        )
        used = 0
        for uid, generation in reversed(entry.changes.items()):  # the latest first
            if generation <= base:
                break
            pod = entry.pods.get(uid)
            if pod is None:
                delta.removed_uids.append(uid)
                continue
            used += pod.ByteSize() + 16
            if used > self._max_bytes:
                return None
            delta.pods.append(pod)
        return delta

    async def wait_change(self, node: str, seen_generation: int) -> None:
        entry = self._node(node)
        if entry.generation != seen_generation:
            return
        await entry.changed.wait()
