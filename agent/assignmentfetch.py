"""When the agent fetches its whole assignment instead of waiting for the watch to push it, and
what a pushed delta makes of the assignment it has."""

from __future__ import annotations

from collections.abc import Mapping

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
