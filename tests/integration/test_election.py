"""Leader election on a real 3-member etcd: one leader, a quick successor, no overlap."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from coordinator.store.election import LeaderTerm
from coordinator.store.etcd import EtcdStore
from coordinator.store.etcdelection import EtcdElector
from tests.integration.etcd import EtcdCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
TTL = 2


@dataclass
class Candidate:
    elector: EtcdElector
    store: EtcdStore
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    terms: list[tuple[float, float]] = field(default_factory=list)  # (won, lost) on the monotonic clock
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # a term of this candidate ended
    task: asyncio.Task[None] | None = None

    async def work(self, term: LeaderTerm) -> None:
        won = time.monotonic()
        await term.lost.wait()
        self.terms.append((won, time.monotonic()))
        self.ended.set()


@pytest.fixture
async def candidates(etcd_cluster: EtcdCluster) -> AsyncIterator[list[Candidate]]:
    keys = f"/election-{uuid.uuid4().hex[:6]}/"
    made = []
    for i in range(3):
        store = await EtcdStore.open(etcd_cluster.endpoints)
        c = Candidate(EtcdElector(store, address=f"c{i}:6443", ttl=TTL, identity=f"c{i}", keys=keys), store)
        made.append(c)
    leading: dict[str, float] = {}

    def track(c: Candidate):  # type: ignore[no-untyped-def]
        async def work(term: LeaderTerm) -> None:
            leading[c.elector.identity] = time.monotonic()
            await c.work(term)
            leading.pop(c.elector.identity, None)

        return work

    for c in made:
        c.task = asyncio.create_task(c.elector.run(c.stop, track(c)))
    try:
        yield made
    finally:
        for c in made:
            c.stop.set()
        await asyncio.gather(*(c.task for c in made if c.task), return_exceptions=True)
        for c in made:
            await c.store.close()


async def wait_leader(cands: list[Candidate], timeout: float = 10) -> Candidate:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = await cands[0].elector.members()
        leaders = [m for m in members if m.leader]
        if leaders:
            return next(c for c in cands if c.elector.identity == leaders[0].id)
        await asyncio.sleep(0.05)
    raise AssertionError("no leader elected")


async def test_one_leader_and_a_successor_within_the_ttl_without_overlap(candidates: list[Candidate]) -> None:
    first = await wait_leader(candidates)
    members = await candidates[1].elector.members()
    assert sorted(m.id for m in members) == ["c0", "c1", "c2"]
    assert [m.id for m in members if m.leader] == [first.elector.identity]

    # The leader's process stops (its task is cancelled; it revokes its lease on the way out).
    assert first.task is not None
    killed = time.monotonic()
    first.task.cancel()
    await asyncio.gather(first.task, return_exceptions=True)
    rest = [c for c in candidates if c is not first]

    async def successor() -> Candidate:
        while True:
            for c in rest:
                if c.terms or any(m.leader and m.id == c.elector.identity for m in await c.elector.members()):
                    return c
            await asyncio.sleep(0.05)

    second = await asyncio.wait_for(successor(), 10)
    took = time.monotonic() - killed
    assert took < TTL + 2, f"failover took {took:.1f}s"
    (won_lost,) = first.terms
    assert won_lost[1] <= killed + 0.5  # the old term ended when its task died
    assert second is not first


async def test_a_leader_cut_off_from_etcd_steps_down_before_its_lease_expires(
    candidates: list[Candidate], etcd_cluster: EtcdCluster
) -> None:
    leader = await wait_leader(candidates)
    cut = time.monotonic()
    for i in range(3):
        etcd_cluster.kill(i)
    try:
        await asyncio.wait_for(leader.ended.wait(), 10)  # else: the leader kept leading without etcd
        stepped_down = leader.terms[0][1] - cut
        assert stepped_down < TTL, f"stepped down {stepped_down:.2f}s after losing etcd (lease TTL {TTL}s)"
    finally:
        etcd_cluster.restart_all()
    await wait_leader(candidates, timeout=30)
