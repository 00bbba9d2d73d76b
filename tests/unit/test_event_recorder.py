"""The coordinator's EventRecorder: correlated as client-go does (similar events combined, spam
dropped), queued, written by a few writers, repeats folded into one."""

from __future__ import annotations

import asyncio

from atoll import errors
from atoll.v1 import workloads_pb2
from coordinator.objects.eventcorrelation import COMBINED, Correlated, EventCorrelator, fold_of
from coordinator.objects.events import EVENT, EventRecorder, event_name
from coordinator.objects.registry import Registry
from coordinator.store.memory import MemoryStore

REF = workloads_pb2.ObjectReference(kind="Pod", namespace="default", name="web-0", uid="u-1")


async def events(registry: Registry) -> dict[str, workloads_pb2.Event]:
    items, _ = await registry.list(EVENT, "default")
    return {e.metadata.name: e for e in items}  # type: ignore[attr-defined, misc]


def record(recorder: EventRecorder, reason: str = "Started", message: str = "started main") -> None:
    recorder.record_ref(REF, "Normal", reason, message, component="agent", host="node-1")


async def test_a_new_event_is_created_and_its_repeats_fold_into_it() -> None:
    registry = Registry(MemoryStore())
    clock = iter(float(t) for t in range(100, 200))
    recorder = EventRecorder(registry, clock=lambda: next(clock))
    record(recorder)
    await recorder.flush()
    record(recorder)
    record(recorder)
    record(recorder, "Killing", "stopping main")
    await recorder.flush()
    got = await events(registry)
    started = got[event_name(REF, fold_of(REF, "Started", "started main"))]
    assert started.count == 3 and started.source_host == "node-1" and started.source_component == "agent"
    assert started.first_timestamp.seconds == 100 and started.last_timestamp.seconds == 102  # when recorded
    assert got[event_name(REF, fold_of(REF, "Killing", "stopping main"))].count == 1


async def test_an_event_already_stored_is_counted_up_by_a_recorder_new_to_it() -> None:
    registry = Registry(MemoryStore())
    record(first := EventRecorder(registry))
    await first.flush()
    record(second := EventRecorder(registry))  # another coordinator, or this one restarted
    await second.flush()
    assert [e.count for e in (await events(registry)).values()] == [2]


async def test_a_known_event_collected_meanwhile_is_created_afresh() -> None:
    registry = Registry(MemoryStore())
    recorder = EventRecorder(registry)
    record(recorder)
    await recorder.flush()
    name = event_name(REF, fold_of(REF, "Started", "started main"))
    await registry.delete(EVENT, "default", name)
    record(recorder)
    await recorder.flush()
    assert (await events(registry))[name].count == 1


async def test_writers_are_bounded_and_the_queue_drops_past_its_limit() -> None:
    registry = Registry(MemoryStore())
    # (no correlation: the queue's limit is under test)
    recorder = EventRecorder(
        registry, max_in_flight=3, max_pending=50, correlator=EventCorrelator(burst=100, aggregate_at=100)
    )
    for i in range(60):
        record(recorder, "Started", f"started c{i}")  # never waits, never raises
    assert len(recorder._writers) == 3 and recorder.dropped == 10
    await recorder.flush()
    assert len(await events(registry)) == 50 and not recorder._writers


async def test_a_failed_write_loses_only_its_event() -> None:
    registry = Registry(MemoryStore())
    real_create = registry.create
    calls = 0

    async def create(obj, **kw):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise errors.Unavailable("store is closed")
        return await real_create(obj, **kw)

    registry.create = create  # type: ignore[method-assign]
    recorder = EventRecorder(registry, max_in_flight=1)
    for i in range(3):
        record(recorder, "Started", f"started c{i}")
    await recorder.flush()
    assert sorted(e.message for e in (await events(registry)).values()) == ["started c0", "started c2"]


async def test_an_event_that_breaks_its_writer_strands_none_after_it() -> None:
    registry = Registry(MemoryStore())
    recorder = EventRecorder(registry, max_in_flight=1)
    real_create = registry.create

    async def create(obj, **kw):  # type: ignore[no-untyped-def]
        if obj.message == "started c0":
            raise ValueError("a bug")
        return await real_create(obj, **kw)

    registry.create = create  # type: ignore[method-assign]
    for i in range(3):
        record(recorder, "Started", f"started c{i}")
    await recorder.flush()
    assert sorted(e.message for e in (await events(registry)).values()) == ["started c1", "started c2"]


async def test_an_event_recorded_as_the_last_writer_ends_gets_a_writer() -> None:
    registry = Registry(MemoryStore())
    recorder = EventRecorder(registry, max_in_flight=1)
    record(recorder, "Started", "started a")
    (writer,) = recorder._writers
    # Turn by turn, to be back here in the pass where the writer ended, before its done callback.
    while not writer.done():  # noqa: ASYNC110
        await asyncio.sleep(0)
    record(recorder, "Started", "started b")
    await recorder.flush()
    assert sorted(e.message for e in (await events(registry)).values()) == ["started a", "started b"]


async def test_a_repeat_recorded_earlier_never_moves_the_last_time_back() -> None:
    registry = Registry(MemoryStore())
    times = iter([100.0, 300.0, 200.0])  # recorded in this order; written one after another
    recorder = EventRecorder(registry, clock=lambda: next(times), max_in_flight=1)
    for _ in range(3):
        record(recorder)
    await recorder.flush()
    (event,) = (await events(registry)).values()
    assert event.count == 3 and event.last_timestamp.seconds == 300


async def test_an_event_collected_between_create_and_count_up_is_created_again() -> None:
    registry = Registry(MemoryStore())
    record(first := EventRecorder(registry))
    await first.flush()
    name = event_name(REF, fold_of(REF, "Started", "started main"))
    real_update = registry.guaranteed_update

    async def collected_first(*args, **kw):  # type: ignore[no-untyped-def]
        await registry.delete(EVENT, "default", name)  # the collector got there in between
        return await real_update(*args, **kw)

    registry.guaranteed_update = collected_first  # type: ignore[method-assign]
    record(second := EventRecorder(registry))  # does not know it: create, AlreadyExists, count up
    await second.flush()
    assert [e.count for e in (await events(registry)).values()] == [1]


# -- correlation (client-go's EventCorrelator) ------------------------------------------------


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def correlate(
    c: EventCorrelator,
    message: str,
    *,
    ref: workloads_pb2.ObjectReference = REF,
    reason: str = "SuccessfulCreate",
    component: str = "replication-controller",
    host: str = "",
) -> str | None:
    got = c.correlate(ref, "Normal", reason, message, component=component, host=host)
    return None if got is None else got.message


def test_the_tenth_similar_event_in_ten_minutes_is_combined_and_later_ones_fold_into_it() -> None:
    clock = Clock()
    c = EventCorrelator(clock=clock)

    def created(i: int) -> Correlated | None:
        clock.t += 1
        return c.correlate(
            REF, "Normal", "SuccessfulCreate", f"Created pod: web-{i}", component="rc", host=""
        )

    plain = [created(i) for i in range(9)]
    assert [p.message for p in plain if p] == [f"Created pod: web-{i}" for i in range(9)]
    assert len({p.fold for p in plain if p}) == 9
    tenth, eleventh = created(9), created(10)
    assert tenth is not None and eleventh is not None
    assert (
        tenth.message == COMBINED + "Created pod: web-9"
        and eleventh.message == COMBINED + "Created pod: web-10"
    )
    assert tenth.fold == eleventh.fold  # one event, counted up
    # Another reason, another object, another source: counted apart.
    assert correlate(c, "Created pod: x", reason="SuccessfulDelete") == "Created pod: x"
    other = workloads_pb2.ObjectReference(kind="Pod", namespace="default", name="web-1", uid="u-2")
    assert correlate(c, "Created pod: x", ref=other) == "Created pod: x"
    assert correlate(c, "Created pod: x", component="scheduler") == "Created pod: x"
    # Ten quiet minutes later, similar events start over.
    clock.t += 601
    assert created(11) == Correlated(
        "Created pod: web-11", fold_of(REF, "SuccessfulCreate", "Created pod: web-11")
    )


def test_one_source_records_25_events_about_an_object_then_one_per_five_minutes() -> None:
    clock = Clock()
    c = EventCorrelator(clock=clock)
    got = [correlate(c, "same", reason=f"R{i}") for i in range(40)]
    assert sum(g is not None for g in got) == 25 and got[25:] == [None] * 15
    clock.t += 299
    assert correlate(c, "same", reason="R99") is None
    clock.t += 2
    assert correlate(c, "same", reason="R99") == "same"  # one token back
    assert correlate(c, "same", reason="R99") is None
    # Another source (a node, or another component) about the same object has its own budget.
    assert correlate(c, "same", reason="R99", host="node-2") == "same"
    assert correlate(c, "same", reason="R99", component="scheduler") == "same"


def test_each_source_keeps_its_own_caches_and_forgets_its_oldest_keys() -> None:
    c = EventCorrelator(clock=Clock(), node_entries=2)
    refs = [
        workloads_pb2.ObjectReference(kind="Pod", namespace="default", name=f"p{i}", uid=f"u{i}")
        for i in range(3)
    ]
    for _ in range(25):
        assert correlate(c, "m", ref=refs[0], host="node-1") == "m"
        assert correlate(c, "m", ref=refs[0]) == "m"  # the coordinator's own component
    assert correlate(c, "m", ref=refs[0], host="node-1") is None
    # Another node's flood of objects evicts nothing of node-1's, nor of the coordinator's.
    for i in range(100):
        ref = workloads_pb2.ObjectReference(kind="Pod", namespace="default", name=f"x{i}", uid=f"x{i}")
        correlate(c, "m", ref=ref, host="node-2", reason=f"R{i}")
    assert correlate(c, "m", ref=refs[0], host="node-1") is None
    assert correlate(c, "m", ref=refs[0]) is None
    # Its own: node-1's third object evicts its first, whose budget starts afresh.
    correlate(c, "m", ref=refs[1], host="node-1")
    correlate(c, "m", ref=refs[2], host="node-1")
    assert correlate(c, "m", ref=refs[0], host="node-1") == "m"


async def test_the_recorder_writes_a_combined_event_with_the_latest_message_and_drops_spam() -> None:
    registry = Registry(MemoryStore())
    clock = iter(float(t) for t in range(100, 200))
    recorder = EventRecorder(registry, clock=lambda: next(clock))
    rc = workloads_pb2.ObjectReference(
        kind="ReplicationController", namespace="default", name="web", uid="rc-1"
    )
    for i in range(40):
        recorder.record_ref(
            rc, "Normal", "SuccessfulCreate", f"Created pod: web-{i}", component="coordinator"
        )
    await recorder.flush()
    got = await events(registry)
    assert recorder.filtered == 15 and recorder.not_recorded() == {"spam": 15, "queue": 0}
    combined = [e for e in got.values() if e.message.startswith(COMBINED)]
    assert len(got) == 10 and len(combined) == 1
    assert combined[0].count == 16 and combined[0].message == COMBINED + "Created pod: web-24"
    assert combined[0].first_timestamp.seconds == 109 and combined[0].last_timestamp.seconds == 124


def test_what_no_longer_counts_is_forgotten_and_an_idle_source_goes() -> None:
    clock = Clock()
    c = EventCorrelator(clock=clock)
    for i in range(50):  # a node's pods come and go: one event each
        ref = workloads_pb2.ObjectReference(kind="Pod", namespace="default", name=f"p{i}", uid=f"u{i}")
        correlate(c, "started", ref=ref, reason="Started", host="node-1")
    node = c._sources[("replication-controller", "node-1")]
    assert len(node.similar) == 50 and len(node.buckets) == 50
    # A spent token is back after five minutes: those budgets are full again, and go.
    clock.t += 300
    correlate(c, "m", host="node-2")
    assert ("replication-controller", "node-1") in c._sources and not node.buckets
    # Past the ten-minute window, the similar records go too, and with them the idle source.
    clock.t += 301
    correlate(c, "m", host="node-2")
    assert not node.similar and ("replication-controller", "node-1") not in c._sources
    # A spent budget stays until it would be full again (25 tokens: over two hours).
    for i in range(30):
        correlate(c, "spam", reason=f"R{i}", host="node-3")
    clock.t += 601
    correlate(c, "m", host="node-2")
    assert ("replication-controller", "node-3") in c._sources
    assert correlate(c, "spam", reason="R99", host="node-3") == "spam"  # two tokens back
