"""When the agent fetches its whole assignment instead of waiting for the watch to push it."""

from __future__ import annotations


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
