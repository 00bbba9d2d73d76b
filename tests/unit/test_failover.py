"""The agent's rotation over coordinators (agent.failover) and what the link does on another one."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agent.assignmentfetch import AssignmentView
from agent.failover import Targets
from agent.link import AssignmentFile, CoordinatorLink, apply_pause
from agent.reporting import StatusReporter
from agent.servicecache import StreamGap
from atoll import agentconfig, errors
from atoll.backoff import Backoff
from atoll.v1 import node_api_pb2, node_pb2, pod_pb2

A, B, C = "a:6443", "b:6443", "c:6443"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def targets(*addresses: str, start: str = "", clock: Clock | None = None) -> Targets:
    # rng 0.5: no jitter in the backoff (±20% around the value), half the first-round spread.
    return Targets(
        addresses,
        start=start,
        first_round_spread=0.4,
        backoff=Backoff(initial=1.0, maximum=8.0, rng=lambda: 0.5),
        clock=clock or Clock(),
        rng=lambda: 0.5,
    )


def test_rotates_in_order_and_wraps() -> None:
    t = targets(A, B, C)
    assert t.current == A
    seen = []
    for _ in range(4):
        t.failed()
        seen.append(t.current)
    assert seen == [B, C, A, B]
    assert t.hops == 4


def test_first_round_is_quick_and_spread_then_backs_off() -> None:
    t = targets(A, B, C)
    assert t.failed() == pytest.approx(0.2)  # A -> B: a spread moment
    assert t.failed() == pytest.approx(0.2)  # B -> C
    # Every one failed in a row: exponential backoff from here on.
    assert [t.failed() for _ in range(5)] == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0])


def test_an_answer_resets_the_round_and_the_backoff() -> None:
    t = targets(A, B, C)
    for _ in range(4):
        t.failed()
    t.answered()
    assert t.failed() == pytest.approx(0.2)
    assert t.failed() == pytest.approx(0.2)
    assert t.failed() == pytest.approx(1.0)


def test_stays_on_the_one_that_answers() -> None:
    t = targets(A, B, C)
    t.failed()
    t.answered()
    assert t.current == B and t.last_good == B
    t.answered()
    assert t.current == B  # never drifts back to the first of the list


def test_starts_from_the_remembered_one() -> None:
    assert targets(A, B, C, start=B).current == B
    assert targets(A, B, C, start="gone:6443").current == A  # no longer listed: the first


def test_a_single_coordinator_stays_and_backs_off() -> None:
    t = targets(A)
    assert [t.failed() for _ in range(3)] == pytest.approx([1.0, 2.0, 4.0])
    assert t.current == A and t.hops == 0


def test_outage_is_measured_with_the_clock() -> None:
    clock = Clock()
    t = targets(A, B, clock=clock)
    assert t.answered() is None  # nothing was down
    t.failed()
    clock.now += 1.5
    t.failed()
    clock.now += 0.25
    assert t.answered() == pytest.approx(1.75)
    assert t.answered() is None


def test_duplicates_and_blanks_are_dropped() -> None:
    assert targets(A, "", A, B).addresses == [A, B]
    with pytest.raises(ValueError):
        Targets([])


# -- the agent's configuration -------------------------------------------------------------


def test_config_takes_a_comma_list_a_yaml_list_and_one_address(tmp_path: pathlib.Path) -> None:
    cfg, _ = agentconfig.load(["--coordinator", f"{A},{B}"], environ={})
    assert cfg.coordinator == f"{A},{B}"
    path = tmp_path / "agent.yaml"
    path.write_text(f"coordinator:\n  - {A}\n  - {B}\n  - {C}\n")
    cfg, _ = agentconfig.load(["--config", str(path)], environ={})
    assert cfg.coordinator == f"{A},{B},{C}"
    assert {6443, 6444, 22} <= cfg.daemon_ports()
    cfg, _ = agentconfig.load(["--coordinator", "10.0.0.1:7443"], environ={})
    assert cfg.coordinator == "10.0.0.1:7443" and 7443 in cfg.daemon_ports()
    with pytest.raises(errors.InvalidArgument, match="coordinator"):
        agentconfig.load(["--coordinator", f"{A},nohost"], environ={})


# -- the link on another coordinator -------------------------------------------------------


class FakeSource:
    def __init__(self) -> None:
        self.target = A
        self.moved = asyncio.Event()
        self.stub: Any = None  # no calls in these tests

    def fail_over(self, why: object) -> float:
        return 0.0

    def answered(self) -> None:
        pass

    @property
    def lease_stub(self) -> Any:
        return self.stub

    def offer_lease_port(self, port: int, *, on_lane: bool = False, target: str = "") -> None:
        pass

    def lease_failed(self, why: object, stub: Any) -> None:
        pass


class FakeManager:
    def __init__(self) -> None:
        self.desired: dict[str, pod_pb2.Pod] = {}
        self.generation = 0
        self.authoritative = False
        self.calls: list[int] = []

    def set_desired(self, pods: list[pod_pb2.Pod], generation: int, *, authoritative: bool) -> None:
        self.desired = {p.metadata.uid: p for p in pods}
        self.generation = generation
        self.authoritative = self.authoritative or authoritative
        self.calls.append(generation)


def assignment(generation: int, *uids: str) -> node_api_pb2.Assignment:
    result = node_api_pb2.Assignment(node_name="n1", generation=generation)
    for uid in uids:
        pod = result.pods.add()
        pod.metadata.uid = uid
        pod.metadata.name = uid
    return result


def link(tmp_path: pathlib.Path) -> tuple[CoordinatorLink, FakeSource, FakeManager]:
    source, manager = FakeSource(), FakeManager()
    result = CoordinatorLink(
        source,
        node_name="n1",
        node_labels={},
        build_status=node_pb2.NodeStatus,
        manager=manager,  # type: ignore[arg-type]
        reporter=StatusReporter(),
        assignments=AssignmentFile(tmp_path / "assignment.pb"),
    )
    return result, source, manager


async def test_generations_are_compared_only_within_one_coordinator(tmp_path: pathlib.Path) -> None:
    lnk, source, manager = link(tmp_path)
    lnk.apply(assignment(500, "p1"))
    lnk.apply(assignment(400, "p1"))  # an older push of the same coordinator: ignored
    assert manager.calls == [500]
    source.target = B  # the link moved: B numbers its generations its own way
    lnk.apply(assignment(300, "p1"))  # lower, the same pods: taken, B's numbers from now on
    assert manager.calls == [500, 300]
    lnk.apply(assignment(310, "p1", "p2"))
    assert manager.generation == 310 and set(manager.desired) == {"p1", "p2"}


def delta(base: int, generation: int, *uids: str, removed: tuple[str, ...] = ()) -> node_api_pb2.Assignment:
    result = assignment(generation, *uids)
    result.delta, result.base_generation = True, base
    result.removed_uids.extend(removed)
    return result


async def test_a_stream_applies_its_deltas_to_what_it_sent_whatever_a_fetch_did(
    tmp_path: pathlib.Path,
) -> None:
    """A fetch that raced the watch leaves the agent ahead of the stream: the stream's next
    delta still leads to its generation from what the stream itself sent, and is applied."""
    lnk, _, manager = link(tmp_path)
    view = AssignmentView()
    lnk.apply(view.take(assignment(3, "p1")))  # type: ignore[arg-type]
    lnk.apply(assignment(5, "p1", "p2"))  # fetched, ahead of the stream
    whole = view.take(delta(3, 7, "p2", "p3", removed=("p1",)))
    assert whole is not None
    lnk.apply(whole)
    assert manager.generation == 7 and set(manager.desired) == {"p2", "p3"}
    with pytest.raises(StreamGap, match="from generation 5; this stream sent 7"):
        view.take(delta(5, 9, "p4"))  # not where this stream is: reopened, starts whole
    view.reset()
    with pytest.raises(StreamGap, match="this stream sent nothing"):
        view.take(delta(7, 9, "p4"))
    lnk.apply(delta(7, 9, "p4"))  # a delta outside a stream's view: ignored
    assert manager.calls == [3, 5, 7]


async def test_a_coordinator_restarted_at_the_same_address_cannot_leave_a_deleted_pod(
    tmp_path: pathlib.Path,
) -> None:
    """A restarted coordinator numbers generations afresh, lower. Its stream's deltas apply to
    what that stream sent, not to the agent's pods from the earlier process: X, deleted while
    the coordinator was down, goes with the first delta that overtakes the agent's number."""
    lnk, _, manager = link(tmp_path)
    lnk.apply(assignment(30, "A", "X"))
    view = AssignmentView()  # the new process's stream
    lnk.apply(view.take(assignment(10, "A")))  # type: ignore[arg-type]  # lower: ignored, as before
    assert set(manager.desired) == {"A", "X"}
    whole = view.take(delta(10, 40, "C"))
    assert whole is not None
    lnk.apply(whole)
    assert manager.generation == 40 and set(manager.desired) == {"A", "C"}


async def test_a_lagging_coordinator_does_not_take_pods_away(tmp_path: pathlib.Path) -> None:
    lnk, source, manager = link(tmp_path)
    lnk.apply(assignment(500, "p1", "p2"))
    source.target = B
    lnk.apply(assignment(450, "p1"))  # lower and without p2: B has not seen p2 yet
    assert set(manager.desired) == {"p1", "p2"} and manager.generation == 500
    lnk.apply(assignment(501, "p1", "p2"))  # caught up
    assert manager.generation == 501


async def test_another_coordinator_with_the_same_pods_is_taken_whatever_else_its_copies_hold(
    tmp_path: pathlib.Path,
) -> None:
    """A coordinator started later numbers at its list's revision, and an earlier one may be lower
    with the same pods. Their copies may differ in what the agent does not act on: resource
    versions (status reports), owner references (an orphaning) and annotations, which a running
    coordinator's copy for assignments does not follow without a new generation."""
    lnk, source, manager = link(tmp_path)
    on_a = assignment(500, "p1")
    on_a.pods[0].metadata.resource_version = 480
    lnk.apply(on_a)
    source.target = B
    on_b = assignment(450, "p1")
    on_b.pods[0].metadata.resource_version = 470  # B saw an earlier status report of p1
    on_b.pods[0].metadata.owner_references.add(kind="ReplicationController", name="web", uid="rc")
    on_b.pods[0].metadata.annotations["note"] = "before the orphaning"
    lnk.apply(on_b)
    assert manager.calls == [500, 450]  # B's numbers from now on: no fetch on every heartbeat
    source.target = A
    changed = assignment(440, "p1")
    changed.pods[0].spec.containers.add(name="web", image="nginx")
    lnk.apply(changed)  # lower and another spec: A is behind what B told
    relabelled = assignment(430, "p1")
    relabelled.pods[0].metadata.labels["tier"] = "web"
    lnk.apply(relabelled)  # labels: the coordinator's copy follows them, so they count
    assert manager.calls == [500, 450]


async def test_pushes_from_a_coordinator_the_link_left_are_dropped(tmp_path: pathlib.Path) -> None:
    lnk, source, manager = link(tmp_path)
    lnk.apply(assignment(10, "p1"))
    source.target = B
    lnk.apply(assignment(900), via=A)  # a stream still open on A
    assert set(manager.desired) == {"p1"}


async def test_the_first_answer_of_a_run_is_taken_whatever_its_number(tmp_path: pathlib.Path) -> None:
    lnk, _, manager = link(tmp_path)
    manager.set_desired([], 900, authoritative=False)  # the saved assignment of the last run
    lnk.apply(assignment(5, "p1"))
    assert manager.generation == 5 and set(manager.desired) == {"p1"}


class DownStub:
    """Every Heartbeat fails with `code`."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def Heartbeat(self, request: object, timeout: float) -> object:
        async def fail() -> None:
            raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="down")

        return fail()


@pytest.mark.parametrize(
    ("code", "moves"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.PERMISSION_DENIED, False),  # it answered: no reason to leave it
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    ],
)
async def test_a_heartbeat_moves_the_link_only_when_the_coordinator_is_gone(
    tmp_path: pathlib.Path, code: grpc.StatusCode, moves: bool
) -> None:
    lnk, source, _ = link(tmp_path)
    source.stub = DownStub(code)  # type: ignore[assignment]
    stop = asyncio.Event()
    reasons: list[object] = []

    def fail_over(why: object) -> float:
        reasons.append(why)
        stop.set()
        return 0.0

    source.fail_over = fail_over  # type: ignore[method-assign]
    asyncio.get_running_loop().call_later(0.2, stop.set)
    await lnk.heartbeat_loop(stop)
    assert bool(reasons) == moves and not lnk.connected


class OldThenNewStub:
    """WatchNode: UNIMPLEMENTED while `old`; the three older watches: one push each, then open
    until `closed`."""

    def __init__(self) -> None:
        self.old = True
        self.calls: list[str] = []
        self.closed = asyncio.Event()

    def _held(self, name: str, first: object) -> AsyncIterator[object]:
        async def push() -> AsyncIterator[object]:
            self.calls.append(name)
            yield first
            await self.closed.wait()  # the channel closes as the link moves
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="closed"
            )

        return push()

    def WatchNode(self, request: node_api_pb2.WatchNodeRequest) -> AsyncIterator[object]:
        async def answer() -> AsyncIterator[object]:
            self.calls.append("WatchNode")
            if self.old:
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNIMPLEMENTED, grpc.aio.Metadata(), grpc.aio.Metadata(), details="no"
                )
            yield node_api_pb2.WatchNodeResponse(
                assignment=node_api_pb2.WatchAssignmentResponse(assignment=assignment(7, "p7"))
            )
            await asyncio.Event().wait()

        return answer()

    def WatchAssignment(self, request: object) -> AsyncIterator[object]:
        return self._held(
            "WatchAssignment", node_api_pb2.WatchAssignmentResponse(assignment=assignment(3, "p3"))
        )

    def WatchNodeConfig(self, request: object) -> AsyncIterator[object]:
        return self._held(
            "WatchNodeConfig", node_api_pb2.WatchNodeConfigResponse(config=node_api_pb2.NodeConfig())
        )

    def WatchServices(self, request: object) -> AsyncIterator[object]:
        state = node_api_pb2.ServiceState(generation=4)
        return self._held("WatchServices", node_api_pb2.WatchServicesResponse(state=state))


async def test_an_old_coordinator_gets_three_streams_until_the_link_moves(tmp_path: pathlib.Path) -> None:
    lnk, source, manager = link(tmp_path)
    stub = source.stub = OldThenNewStub()
    got = {name: asyncio.Event() for name in ("config", "services", "3", "7")}
    take = manager.set_desired

    def set_desired(pods: list[pod_pb2.Pod], generation: int, *, authoritative: bool) -> None:
        take(pods, generation, authoritative=authoritative)
        if str(generation) in got:
            got[str(generation)].set()

    async def on_config(config: node_api_pb2.NodeConfig) -> None:
        got["config"].set()

    async def on_services(state: node_api_pb2.ServiceState) -> None:
        assert state.generation == 4
        got["services"].set()

    manager.set_desired = set_desired  # type: ignore[method-assign]
    lnk.on_node_config, lnk.on_services = on_config, on_services
    stop = asyncio.Event()
    loop = asyncio.create_task(lnk.node_watch_loop(stop))
    try:
        for name in ("3", "config", "services"):  # the three older streams' pushes
            await asyncio.wait_for(got[name].wait(), 5)
        assert sorted(stub.calls) == ["WatchAssignment", "WatchNode", "WatchNodeConfig", "WatchServices"]
        stub.old = False  # the link moves to an upgraded coordinator
        source.target = B
        moved, source.moved = source.moved, asyncio.Event()
        moved.set()
        stub.closed.set()
        await asyncio.wait_for(got["7"].wait(), 5)  # the assignment on WatchNode
        assert stub.calls.count("WatchNode") == 2
    finally:
        stop.set()
        loop.cancel()  # as the link's run() does: the open stream is not waited for
        await asyncio.gather(loop, return_exceptions=True)


def test_a_feed_pauses_after_an_apply_for_three_times_what_it_took_but_not_after_the_first() -> None:
    assert apply_pause(0.4, 1.0, first=True) == 0.0  # setting the node up: its peers come next
    assert apply_pause(0.007, 1.0, first=False) == pytest.approx(0.021)  # a lease delta
    assert apply_pause(0.5, 1.0, first=False) == 1.0  # kube-proxy's min sync period at most
    assert apply_pause(0.5, 0.0, first=False) == 0.0  # a feed without pacing (services)
