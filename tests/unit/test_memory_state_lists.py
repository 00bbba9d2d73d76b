"""MemoryState's lists against a model that replays every write from nothing.

Lists keep each collection's keys in order between writes that add or remove a
key (coordinator.store.state), and roll a list back to an older revision
through the history: both must give exactly what the writes made.
"""

from __future__ import annotations

import random

from coordinator.store.base import KV, StoreEvent
from coordinator.store.state import MemoryState

PREFIXES = (
    "/pods/",
    "/pods/default/",
    "/pods/kube-system/",
    "/pods/default/web-1",
    "/nodes/",
    "/events/",
    "/",
)
KEYS = [
    *(f"/pods/{ns}/web-{i}" for ns in ("default", "kube-system") for i in range(12)),
    *(f"/nodes/n{i}" for i in range(6)),
]


def _model(events: list[StoreEvent], revision: int, prefix: str) -> list[tuple[str, bytes]]:
    """The keys under `prefix` and their values after replaying `events` up to `revision`, in order."""
    live: dict[str, bytes] = {}
    for event in events:
        if event.revision > revision:
            break
        if event.type == "put":
            live[event.kv.key] = event.kv.value
        else:
            live.pop(event.kv.key, None)
    return sorted((k, v) for k, v in live.items() if k.startswith(prefix))


def _writes(rng: random.Random, count: int) -> list[StoreEvent]:
    current: dict[str, KV] = {}
    events: list[StoreEvent] = []
    for revision in range(1, count + 1):
        key = rng.choice(KEYS)
        prev = current.get(key)
        if prev is not None and rng.random() < 0.3:
            deleted = KV(key, b"", prev.create_revision, revision)
            events.append(StoreEvent("delete", deleted, prev))
            del current[key]
            continue
        kv = KV(key, f"{key}@{revision}".encode(), prev.create_revision if prev else revision, revision)
        events.append(StoreEvent("put", kv, prev))
        current[key] = kv
    return events


def test_lists_now_and_at_every_revision_match_a_replay() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        events = _writes(rng, 150)
        state = MemoryState(history_limit=1_000)
        # Applied in a few batches, with lists between them: the kept key order must follow
        # every key that comes or goes.
        for start in range(0, len(events), 37):
            state.apply(events[start : start + 37])
            applied = events[start + 36].revision if start + 36 < len(events) else events[-1].revision
            for prefix in PREFIXES:
                now = state.list(prefix)
                assert [(kv.key, kv.value) for kv in now] == _model(events, applied, prefix), (seed, prefix)
        for revision in range(1, state.revision + 1):
            for prefix in PREFIXES:
                kvs, at = state.list_at(prefix, revision)
                assert at == revision
                want = _model(events, revision, prefix)
                assert [(kv.key, kv.value) for kv in kvs] == want, (seed, revision, prefix)


def test_a_prefix_ending_in_the_last_code_point_still_lists() -> None:
    state = MemoryState(history_limit=10)
    key = "/pods/x\U0010ffff"
    state.apply([StoreEvent("put", KV(key, b"v", 1, 1), None)])
    assert [kv.key for kv in state.list("/pods/x\U0010ffff")] == [key]


def test_ranges_page_through_every_revision_as_a_replay_does() -> None:
    for seed in range(12):
        rng = random.Random(100 + seed)
        events = _writes(rng, 120)
        state = MemoryState(history_limit=1_000)
        state.apply(events)
        for revision in [0, *range(1, state.revision + 1, 3)]:
            for prefix in PREFIXES:
                want = _model(events, revision or state.revision, prefix)
                # Every start: nothing, each key listed then, and keys that were not there.
                starts = ["", *(k for k, _ in want), *rng.sample(KEYS, 4)]
                for after in starts:
                    limit = rng.choice([0, 1, 2, 5, 50])
                    got = state.list_range(prefix, revision, after, limit)
                    rest = [kv for kv in want if kv[0] > after]
                    page = rest[:limit] if limit else rest
                    assert [(kv.key, kv.value) for kv in got.kvs] == page, (
                        seed,
                        revision,
                        prefix,
                        after,
                        limit,
                    )
                    assert got.revision == (revision or state.revision)
                    assert got.more == len(rest) - len(page), (seed, revision, prefix, after, limit)
