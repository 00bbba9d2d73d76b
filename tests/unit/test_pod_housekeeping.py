"""The pod manager's housekeeping: pods the agent still holds something of (a state record, a VF)
but no longer runs nor is asked to run are removed, and a removal that fails is tried again.

The case it closes: an agent killed in the middle of releasing a deleted pod's VF restarts, its
start-up release fails (the VF is not home yet), and no container of the pod is left for the
relister to find. Before, that VF stayed "releasing" until the next restart.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from agent.pods.manager import PodManager
from agent.pods.syncer import SyncResult
from agent.runtime.fake import FakeRuntime
from atoll import errors
from atoll.v1 import pod_pb2


class RemovingSyncer:
    """Records removals; the first `failures` of them fail as a VF not yet home would."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.removed: list[str] = []
        self.held = {"gone", "kept"}

    async def remove(self, uid: str) -> None:
        self.removed.append(uid)
        if self.failures:
            self.failures -= 1
            raise errors.Unavailable("VF 0000:03:10.1 could not be released: not found at home")
        self.held.discard(uid)

    async def sync(self, pod: pod_pb2.Pod) -> SyncResult:
        return SyncResult(pod_pb2.PodStatus(phase=pod_pb2.POD_PHASE_RUNNING), None, False)


class Sink:
    def update(self, pod: pod_pb2.Pod, status: pod_pb2.PodStatus) -> None: ...

    def forget(self, uid: str) -> None: ...


def kept_pod() -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.uid = "kept"
    return p


def manager(syncer: RemovingSyncer) -> PodManager:
    return PodManager(
        cast(Any, syncer), FakeRuntime(), Sink(), node_name="node-1", held=lambda: set(syncer.held)
    )


async def test_what_is_held_for_a_pod_no_longer_desired_is_removed_once_the_coordinator_speaks() -> None:
    syncer = RemovingSyncer()
    m = manager(syncer)
    m.set_desired([kept_pod()], 1, authoritative=False)  # the saved assignment: nothing removed yet
    m.resync_all()
    await asyncio.wait_for(m.wait_idle(), 5)
    assert "gone" not in syncer.removed
    m.set_desired([], 2, authoritative=False)
    m.set_desired([kept_pod()], 3, authoritative=True)
    await asyncio.wait_for(m.wait_idle(), 5)
    assert syncer.removed == ["gone"] and syncer.held == {"kept"}


async def test_a_failed_removal_of_a_held_pod_is_tried_again_by_the_resync() -> None:
    syncer = RemovingSyncer(failures=1)
    m = manager(syncer)
    m.set_desired([kept_pod()], 1, authoritative=True)
    await asyncio.wait_for(m.wait_idle(), 5)
    assert syncer.held == {"gone", "kept"}  # failed; a retry is scheduled
    m.resync_all()  # the periodic resync, before the retry's own timer (5 s)
    await asyncio.wait_for(m.wait_idle(), 5)
    assert syncer.removed == ["gone", "gone"] and syncer.held == {"kept"}
