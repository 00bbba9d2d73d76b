"""When the agent fetches its whole assignment instead of waiting for the watch to push it, and
what a pushed delta makes of the assignment it has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.servicecache import StreamGap
from atoll.v1 import node_api_pb2, pod_pb2


def with_delta(desired: Mapping[str, pod_pb2.Pod], delta: node_api_pb2.Assignment) -> node_api_pb2.Assignment:
    """The whole assignment at the delta's generation, from `desired` (uid -> pod) at its base."""
    pods = dict(desired)
    for uid in delta.removed_uids:
        pods.pop(uid, None)
    for pod in delta.pods:
        pods[pod.metadata.uid] = pod
    whole = node_api_pb2.Assignment(node_name=delta.node_name, generation=delta.generation)
    whole.pods.extend(sorted(pods.values(), key=lambda p: (p.metadata.namespace, p.metadata.name)))
    return whole


def join_part(
    parts: dict[int, node_api_pb2.Assignment], part: node_api_pb2.Assignment
) -> node_api_pb2.Assignment | None:
    """Collect in `parts` the parts of one generation; the whole assignment once every part is here."""
    if parts and next(iter(parts.values())).generation != part.generation:
        parts.clear()  # a newer generation started: the older one's parts are moot
    parts[part.part] = part
    if len(parts) < part.parts:
        return None
    whole = whole_of([parts[i] for i in range(part.parts)])
    parts.clear()
    return whole


def whole_of(parts: Sequence[node_api_pb2.Assignment]) -> node_api_pb2.Assignment:
    """The assignment the parts of one generation, in order, make up."""
    if len(parts) == 1:
        return parts[0]
    whole = node_api_pb2.Assignment(node_name=parts[0].node_name, generation=parts[0].generation)
    for part in parts:
        whole.pods.extend(part.pods)
    return whole


class AssignmentView:
    """What one watch stream has sent, as the whole assignment it led to. A delta applies to
    this alone: never to an assignment fetched meanwhile, nor to one from an earlier process
    of the coordinator (its numbers are its own, even at the same address). Reset when
    the stream is opened; every stream starts whole."""

    def __init__(self) -> None:
        self.generation: int | None = None
        self._pods: dict[str, pod_pb2.Pod] = {}
        self._parts: dict[int, node_api_pb2.Assignment] = {}

    def reset(self) -> None:
        self.generation, self._pods = None, {}
        self._parts.clear()

    def take(self, push: node_api_pb2.Assignment) -> node_api_pb2.Assignment | None:
        """The whole assignment `push` leads to (None: more parts to come). StreamGap unless a
        delta starts at the generation this stream sent last."""
        if push.delta:
            if push.base_generation != self.generation:
                raise StreamGap(
                    f"an assignment delta from generation {push.base_generation}; "
                    f"this stream sent {'nothing' if self.generation is None else self.generation}"
                )
            whole = with_delta(self._pods, push)
        elif push.parts > 1:
            joined = join_part(self._parts, push)
            if joined is None:
                return None
            whole = joined
        else:
            whole = push
        self.generation = whole.generation
        self._pods = {p.metadata.uid: p for p in whole.pods}
        return whole


def fetch_needed(
    *,
    announced: int,
    have: int,
    announced_before: int | None,
    authoritative: bool,
    same_coordinator: bool,
    stream_up: bool,
) -> bool:
    """Whether a heartbeat's answer calls for fetching the whole assignment.

    `announced` is the generation the coordinator has for this node, `have` the agent's, and
    `announced_before` what the previous heartbeat announced while the agent was behind (None if
    it was not). The watch stream pushes every generation, so a heartbeat that finds the agent
    one step behind is usually only ahead of a push in flight: during a scheduling burst that
    was a redundant GetAssignment for most heartbeats. Fetch at once when the agent has no
    assignment from this coordinator yet, when the stream is down (or delivers from another
    coordinator), or when the coordinator's numbering is below ours, as the agent always did;
    otherwise only when a generation announced a whole heartbeat ago has still not arrived.
    """
    if not authoritative or not same_coordinator or not stream_up:
        return announced != have or not authoritative or not same_coordinator
    if announced == have:
        return False
    if announced < have:
        return True
    return announced_before is not None and have < announced_before
