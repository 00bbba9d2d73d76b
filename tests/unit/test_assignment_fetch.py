"""When a heartbeat's answer makes the agent fetch its whole assignment."""

from __future__ import annotations

from agent.assignmentfetch import fetch_needed


def needed(announced: int, have: int, before: int | None = None, **kw: bool) -> bool:
    flags = {"authoritative": True, "same_coordinator": True, "stream_up": True, **kw}
    return fetch_needed(announced=announced, have=have, announced_before=before, **flags)


def test_in_step_nothing_to_fetch() -> None:
    assert not needed(7, 7)
    assert not needed(7, 7, before=7)


def test_one_step_behind_waits_a_heartbeat_for_the_push() -> None:
    assert not needed(8, 7)  # the push is probably in flight
    assert not needed(9, 8, before=8)  # the one announced before arrived: keep waiting
    assert needed(9, 7, before=8)  # generation 8, announced a heartbeat ago, never came


def test_without_a_delivering_stream_or_an_assignment_fetch_at_once() -> None:
    assert needed(8, 7, stream_up=False)
    assert needed(7, 7, authoritative=False)  # nothing from this coordinator yet, even in step
    assert needed(7, 7, same_coordinator=False)  # generations of another coordinator
    assert not needed(7, 7, stream_up=False)


def test_numbering_gone_backwards_is_a_restarted_coordinator() -> None:
    assert needed(2, 40)
