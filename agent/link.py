"""The agent's link to the coordinator: register, heartbeat, desired pods, status.

Heartbeats follow IPA's heartbeater: a jittered interval that the coordinator
sets, exponential backoff with jitter on errors, and an Event to stop. The
desired pod set arrives on a server stream; the heartbeat answer carries the
coordinator's assignment generation, and when the agent is behind (a lost
push, a broken stream) it fetches the assignment again: level-triggered, so
nothing depends on every push arriving. Every assignment is persisted, so a
restarted agent keeps its pods running before it reconnects.

Several coordinators (agent.failover): the link is on one at a time. A
heartbeat (or registration) that finds it gone (UNAVAILABLE, a deadline)
moves the link to the next; a broken stream makes the agent heartbeat at once
to find out. Losing the link never touches a pod: the desired set stays what
it was until a coordinator says otherwise. Assignment generations are each
coordinator's own numbers, compared only between answers of one coordinator;
on another the agent fetches once, and keeps what it runs while that one's
answer is older than what it has (a coordinator whose watch lags behind).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pathlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from agent.assignmentfetch import AssignmentView, fetch_needed, whole_of
from agent.configview import NodeConfigView
from agent.pods.manager import PodManager
from agent.reporting import EventReporter, StatusReporter, StubSource
from agent.servicecache import ServiceView, StreamGap
from atoll import errors, files, rpc
from atoll.agentconfig import LONGEST_HEARTBEAT_INTERVAL
from atoll.aio import wait_any, wait_or_stop
from atoll.backoff import Backoff, jittered
from atoll.nodestatus import significant
from atoll.v1 import node_api_pb2, node_api_pb2_grpc, node_pb2, pod_pb2

log = logging.getLogger(__name__)

# While a long heartbeat interval runs, the node's status is checked this often for news.
STATUS_CHECK_INTERVAL = 10.0
# Never a tighter loop than this, whatever a coordinator says.
SHORTEST_HEARTBEAT_INTERVAL = 0.05


def told_interval(milliseconds: int) -> float:
    """A heartbeat interval a coordinator told, in seconds, within what the agent's watchdog
    allows for (agent.service) and never a tight loop."""
    return min(max(milliseconds / 1000, SHORTEST_HEARTBEAT_INTERVAL), LONGEST_HEARTBEAT_INTERVAL)


class CoordinatorSource(StubSource, Protocol):
    """A StubSource that can move to another coordinator (agent.bootstrap.CoordinatorConnection)."""

    moved: asyncio.Event  # set when the channel moves to another coordinator, then replaced

    @property
    def target(self) -> str: ...

    def fail_over(self, why: object) -> float: ...

    def answered(self) -> None: ...

    @property
    def lease_stub(self) -> node_api_pb2_grpc.NodeServiceStub: ...

    def offer_lease_port(self, port: int, *, on_lane: bool = False, target: str = "") -> None: ...

    def lease_failed(self, why: object, stub: node_api_pb2_grpc.NodeServiceStub) -> None: ...


# What says the coordinator itself is gone (dead, unreachable, stuck), not that it refused the call.
LINK_LOST = (errors.Unavailable, errors.DeadlineExceeded)


class AssignmentFile:
    """The last assignment received, under the state dir, replaced atomically."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def load(self) -> node_api_pb2.Assignment | None:
        try:
            return node_api_pb2.Assignment.FromString(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file must not keep the agent down
            log.warning("ignoring unreadable assignment file %s: %s", self.path, exc)
            return None

    def save(self, assignment: node_api_pb2.Assignment) -> None:
        # No directory fsync: after a power cut an older assignment is corrected by the next fetch.
        files.write_atomic(self.path, assignment.SerializeToString(), sync_dir=False)


class CoordinatorLink:
    # Service pushes as deltas after a first full state (off: a full state every time, as agents
    # before deltas asked; bench/hollow.py compares the two).
    service_deltas = True
    # The same for the node config's subnet leases.
    node_config_deltas = True
    # And for the assignment: after the first, only the pods added, changed or gone.
    assignment_deltas = True
    # Node configs that arrive while one is applied, or in the pause after it, are applied
    # together; the pause is at most this long (kube-proxy's --iptables-min-sync-period, 1 s).
    node_config_min_interval = 1.0

    def __init__(
        self,
        source: CoordinatorSource,
        *,
        node_name: str,
        node_labels: dict[str, str],
        build_status: Callable[[], node_pb2.NodeStatus],
        manager: PodManager,
        reporter: StatusReporter,
        assignments: AssignmentFile,
        heartbeat_interval: float = 10.0,
    ) -> None:
        self._source = source
        self._node = node_name
        self._labels = node_labels
        self._build_status = build_status
        self._reported_status: tuple[object, ...] | None = None  # atoll.nodestatus.significant, last sent
        self.status_check_interval = STATUS_CHECK_INTERVAL
        self._manager = manager
        self._reporter = reporter
        self._assignments = assignments
        # The coordinator whose numbering the manager's generation is in ("": none yet this run).
        self._generation_via = ""
        # Set by a broken stream: heartbeat now to learn whether the coordinator is gone.
        self._probe = asyncio.Event()
        self._fetch_wanted = asyncio.Event()  # a heartbeat found the assignment behind
        # The generation the last heartbeat announced while ours was behind (see
        # assignment_fetch_needed), and whether the assignment watch is delivering.
        self._announced_behind: int | None = None
        self._assignment_stream_via = ""  # the coordinator whose watch delivers ("": none)
        self.heartbeat_failures = 0  # heartbeats that got no answer (bench/hollow.py counts them)
        self.heartbeat_failure_kinds: collections.Counter[str] = collections.Counter()  # by error class
        # The slowest answered heartbeat and the longest overslept pause between two (seconds):
        # which side of the link a late heartbeat lost its time on (bench/hollow.py prints them).
        self.heartbeat_slowest = 0.0
        self.heartbeat_overslept = 0.0
        # (sent, answered) of every answered heartbeat, kept only when a benchmark sets a list here.
        self.heartbeat_times: list[tuple[float, float]] | None = None
        self.heartbeat_interval = heartbeat_interval
        self.connected = False
        self.registered = asyncio.Event()
        # When a heartbeat last succeeded (time.monotonic; bench/failover.py times failovers by it).
        self.last_heartbeat = 0.0
        # Called once per turn of the heartbeat loop (the agent's watchdog liveness).
        self.tick: Callable[[], None] = lambda: None
        # Set by the agent before run(): what to do with pushed node config and services.
        self.on_node_config: Callable[[node_api_pb2.NodeConfig], Awaitable[None]] | None = None
        self.on_services: Callable[[node_api_pb2.ServiceState], Awaitable[None]] | None = None
        self.events: EventReporter | None = None
        # The service generation last received and when (time.monotonic; bench/hollow.py reads it).
        self.services_received = (-1, 0.0)

    @property
    def _stub(self) -> node_api_pb2_grpc.NodeServiceStub:
        return self._source.stub

    def apply(self, assignment: node_api_pb2.Assignment, via: str | None = None) -> None:
        """Act on an assignment from coordinator `via` (default: the one the link is on)."""
        if via is None:
            via = self._source.target
        elif via != self._source.target:
            return  # a push from a coordinator the link has left
        if assignment.delta or assignment.parts > 1:
            # Streams (AssignmentView) and fetches hand over whole assignments.
            log.warning("an assignment delta or part from %s outside a watch stream: ignored", via)
            return
        manager = self._manager
        older = assignment.generation < manager.generation and manager.authoritative
        if older and via == self._generation_via:
            return  # an older push overtaken by a fetch
        if older and self._generation_via and not _same_pods(manager.desired, assignment.pods):
            # Another coordinator's numbers, lower and a different set: its watch is behind what the
            # last one told us. Keep running what we run; the next heartbeat asks again.
            log.info(
                "coordinator %s is behind (generation %d, we run %d from %s); keeping the pods we run",
                via,
                assignment.generation,
                manager.generation,
                self._generation_via,
            )
            return
        self._generation_via = via
        self._assignments.save(assignment)
        manager.set_desired(assignment.pods, assignment.generation, authoritative=True)

    async def register(self, stop: asyncio.Event) -> bool:
        backoff = Backoff(initial=0.5, maximum=10.0)
        while not stop.is_set():
            self.tick()
            node = node_pb2.Node(status=self._build_status())
            node.metadata.name = self._node
            node.metadata.labels.update(self._labels)
            target = self._source.target
            try:
                resp = await rpc.unary(
                    self._stub.Register(node_api_pb2.RegisterRequest(node=node), timeout=10)
                )
            except LINK_LOST as exc:
                delay = self._source.fail_over(exc)
                log.warning("registering node %s with %s failed: %s", self._node, target, exc)
                await wait_or_stop(stop, delay)
                continue
            except errors.AtollError as exc:
                delay = backoff.next()
                log.warning("registering node %s failed: %s; retrying in %.1fs", self._node, exc, delay)
                await wait_or_stop(stop, delay)
                continue
            self._source.answered()
            self._source.offer_lease_port(resp.lease_port)
            self._carry_events(resp.events_with_status)
            if resp.heartbeat_interval_ms:
                self.heartbeat_interval = told_interval(resp.heartbeat_interval_ms)
            log.info(
                "registered node %s with coordinator %s; heartbeat every %.1fs",
                self._node,
                target,
                self.heartbeat_interval,
            )
            self.connected = True
            self.registered.set()
            self._reporter.resend_all()
            return True
        return False

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(initial=1.0, maximum=max(30.0, self.heartbeat_interval))
        lane_failed_at: float | None = None  # when a heartbeat that failed on the lane was first sent
        while not stop.is_set():
            self.tick()
            delay = jittered(self.heartbeat_interval)
            target = self._source.target
            self._probe.clear()
            on_lane = False
            stub = self._stub
            try:
                req = node_api_pb2.HeartbeatRequest(
                    node_name=self._node,
                    status=self._build_status(),
                    observed_assignment_generation=self._manager.generation,
                )
                reported = significant(req.status)
                sent = lane_failed_at or time.monotonic()  # a retry after the lane: since the first try
                lane_failed_at = None
                stub = self._source.lease_stub
                on_lane = stub is not self._stub
                resp = await rpc.unary(stub.Heartbeat(req, timeout=10))
                self._source.answered()
                self._source.offer_lease_port(resp.lease_port, on_lane=on_lane, target=target)
                self._carry_events(resp.events_with_status)
                self.last_heartbeat = time.monotonic()
                self.heartbeat_slowest = max(self.heartbeat_slowest, self.last_heartbeat - sent)
                if self.heartbeat_times is not None:
                    self.heartbeat_times.append((sent, self.last_heartbeat))
                if not self.connected:
                    log.info("coordinator %s reachable", target)
                    self._reporter.resend_all()
                    if self.events is not None:
                        self.events.retry_now()
                self.connected = True
                self._reported_status = reported
                backoff.reset()
                if resp.heartbeat_interval_ms:
                    # The coordinator paces heartbeats to its fleet's size: the next wait is the
                    # interval told now, not the one told before.
                    self.heartbeat_interval = told_interval(resp.heartbeat_interval_ms)
                    delay = jittered(self.heartbeat_interval)
                have = self._manager.generation
                if fetch_needed(
                    announced=resp.assignment_generation,
                    have=have,
                    announced_before=self._announced_behind,
                    authoritative=self._manager.authoritative,
                    same_coordinator=self._generation_via == target,
                    stream_up=self._assignment_stream_via == target,
                ):
                    # Fetched beside the heartbeats, never in their way: during a scheduling burst
                    # a fetch can take several round trips to a busy coordinator, and heartbeats
                    # waiting behind it made healthy nodes silent past the grace period.
                    self._fetch_wanted.set()
                self._announced_behind = (
                    resp.assignment_generation if resp.assignment_generation > have else None
                )
            except errors.NotFound:
                lane_failed_at = None
                log.warning("the coordinator does not know node %s; registering again", self._node)
                self.connected = False
                await self.register(stop)
                continue
            except errors.AtollError as exc:
                if on_lane and not isinstance(exc, errors.DeadlineExceeded):
                    # The lane, not necessarily the coordinator: again at once on the API's listener.
                    # (A deadline is the coordinator's: a lane that cannot connect is never used, and
                    # keepalives break a connection that went silent. With 5 s and a retry on the
                    # API's listener, a burst's slowest heartbeats took 10 s instead of 5.)
                    self.heartbeat_failure_kinds[f"lane {type(exc).__name__}"] += 1
                    self._source.lease_failed(exc, stub)
                    lane_failed_at = sent
                    continue
                self.heartbeat_failures += 1
                self.heartbeat_failure_kinds[type(exc).__name__] += 1
                if isinstance(exc, LINK_LOST):
                    # The coordinator is gone: the next one (the pods keep running meanwhile).
                    self.connected = False
                    delay = self._source.fail_over(exc)
                else:
                    if self.connected:
                        log.warning("heartbeat failed: %s", exc)
                    self.connected = False
                    delay = backoff.next()
            # A broken stream cuts a normal interval short (not a backoff).
            paused = time.monotonic()
            await self._wait_for_next_heartbeat(stop, delay)
            self.heartbeat_overslept = max(self.heartbeat_overslept, time.monotonic() - paused - delay)

    async def _wait_for_next_heartbeat(self, stop: asyncio.Event, delay: float) -> None:
        """Sleep `delay`, cut short by a broken stream, or, while connected, by a change in the
        node's status worth telling: a coordinator that paces a large fleet may tell an interval
        of up to a minute, and the status is checked every status_check_interval meanwhile (as
        the kubelet checks its node's status every 10 s and posts it on change)."""
        if not self.connected:
            await wait_any(stop, delay)
            return
        start = time.monotonic()
        deadline = start + delay
        check = max(self.status_check_interval, SHORTEST_HEARTBEAT_INTERVAL)
        early_allowed_at = start + delay / 2
        while True:
            left = deadline - time.monotonic()
            if await wait_any(stop, min(left, check), self._probe) or self._probe.is_set() or left <= check:
                return
            # No heartbeat sooner than half an interval after the last: a status whose totals
            # wobble (a balloon driver, a pool's free space) doubles the paced rate at most.
            if (
                time.monotonic() >= early_allowed_at
                and self._reported_status is not None
                and significant(self._build_status()) != self._reported_status
            ):
                log.debug("node %s: status changed; heartbeat now", self._node)
                return

    def _carry_events(self, taken: bool) -> None:
        """The coordinator says whether it takes events with status reports."""
        self._reporter.carry = self.events if taken else None
        if self.events is not None:
            self.events.carrier = self._reporter if taken else None

    async def assignment_fetch_loop(self, stop: asyncio.Event) -> None:
        """Fetch the whole assignment whenever a heartbeat finds ours behind (the watch pushes it
        too; this is the check that nothing was missed)."""
        while not await wait_any(stop, 3600.0, self._fetch_wanted):
            if not self._fetch_wanted.is_set():
                continue
            self._fetch_wanted.clear()
            try:
                await self.fetch_assignment()
            except errors.AtollError as exc:  # the next heartbeat asks again
                log.warning("fetching the assignment failed: %s", exc)

    async def fetch_assignment(self) -> None:
        via = self._source.target
        for _ in range(10):  # a generation that moves while its parts are fetched: start over
            first = await self._fetch_part(0)
            parts = [first]
            for i in range(1, first.parts):
                part = await self._fetch_part(i)
                if part.generation != first.generation:
                    break
                parts.append(part)
            else:
                self.apply(whole_of(parts), via)
                return
        raise errors.Unavailable("the assignment kept changing while it was fetched")

    async def _fetch_part(self, part: int) -> node_api_pb2.Assignment:
        request = node_api_pb2.GetAssignmentRequest(node_name=self._node, part=part)
        resp: node_api_pb2.GetAssignmentResponse = await rpc.unary(
            self._stub.GetAssignment(request, timeout=30)
        )
        return resp.assignment

    async def _follow(
        self,
        what: str,
        open_stream: Callable[[], AsyncIterator[Any]],
        handle: Callable[[Any, str], Awaitable[None]],
        stop: asyncio.Event,
        *,
        up: Callable[[bool, str], None] = lambda _delivering, _via: None,
        give_up: type[errors.AtollError] | None = None,
    ) -> None:
        """Follow a server stream for as long as the agent runs, reopening it with backoff (at once on
        the next coordinator when the link moves). `up` hears when it delivers and when it ends;
        an error of type `give_up` ends the following (raised)."""
        backoff = Backoff(initial=0.5, maximum=10.0)
        while not stop.is_set():
            moved = self._source.moved
            target = self._source.target
            try:
                async for resp in rpc.stream(open_stream()):
                    up(True, target)
                    backoff.reset()
                    try:
                        await handle(resp, target)
                    except StreamGap:
                        raise  # the stream is out of step: reopen it for a full state
                    except Exception:  # one bad push must not end the stream
                        log.exception("handling %s failed", what)
            except errors.AtollError as exc:
                if give_up is not None and isinstance(exc, give_up):
                    up(False, target)
                    raise
                log.debug("%s stream from %s ended: %s", what, target, exc)
                if isinstance(exc, LINK_LOST) and not stop.is_set() and target == self._source.target:
                    self._probe.set()  # is the coordinator gone? the heartbeat finds out now
            up(False, target)
            if moved.is_set():
                backoff.reset()
                continue
            await wait_any(stop, backoff.next(), moved)

    async def node_watch_loop(self, stop: asyncio.Event) -> None:
        """The assignment, the node config and the services on one stream (WatchNode: one call the
        coordinator holds per agent, not three); from a coordinator without it, three streams,
        until the link moves to another coordinator, which is asked for WatchNode again."""
        config = _Feed(self._apply_config, stop, self.node_config_min_interval, "node config")
        services = _Feed(self._apply_services, stop, 0.0, "services")
        config_view, service_view, assignment_view = NodeConfigView(), ServiceView(), AssignmentView()
        request = node_api_pb2.WatchNodeRequest(
            node_name=self._node,
            assignment=True,
            node_config=self.on_node_config is not None,
            services=self.on_services is not None,
            accept_node_config_deltas=self.node_config_deltas,
            accept_service_deltas=self.service_deltas,
            accept_assignment_deltas=self.assignment_deltas,
        )

        async def handle(resp: node_api_pb2.WatchNodeResponse, via: str) -> None:
            push = resp.WhichOneof("push")
            if push == "assignment":
                whole = assignment_view.take(resp.assignment.assignment)  # StreamGap: reopened
                if whole is not None:
                    self.apply(whole, via)
            elif push == "node_config" and request.node_config:
                _take_config(config_view, resp.node_config, config)
            elif push == "services" and request.services:
                self._take_services(service_view, resp.services, services)

        appliers = [config.start(), services.start()]
        try:
            while not stop.is_set():
                try:
                    await self._follow(
                        "node",
                        lambda: _opened(assignment_view, self._stub.WatchNode(request)),
                        handle,
                        stop,
                        up=self._assignment_up,
                        give_up=errors.Unimplemented,
                    )
                    return
                except errors.Unimplemented:
                    # Taken now, not before the call: the link may have moved while it was open.
                    moved = self._source.moved
                    log.info("coordinator %s has no WatchNode: following three streams", self._source.target)
                finally:
                    self._assignment_stream_via = ""
                await self._three_streams(stop, moved, config, services)
        finally:
            for applier in appliers:
                applier.cancel()
            await asyncio.gather(*appliers, return_exceptions=True)

    async def _three_streams(
        self, stop: asyncio.Event, moved: asyncio.Event, config: _Feed, services: _Feed
    ) -> None:
        """WatchAssignment, WatchNodeConfig and WatchServices (coordinators before WatchNode) until
        `stop`, or until the link moves to another coordinator."""
        until = asyncio.Event()
        watcher = asyncio.create_task(wait_any(stop, None, moved))
        watcher.add_done_callback(lambda _: until.set())
        try:
            await asyncio.gather(
                self.watch_loop(until),
                self.node_config_loop(until, config),
                self.services_loop(until, services),
            )
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    def _assignment_up(self, delivering: bool, via: str) -> None:
        self._assignment_stream_via = via if delivering else ""

    def _take_services(
        self, view: ServiceView, resp: node_api_pb2.WatchServicesResponse, feed: _Feed
    ) -> None:
        view.apply(resp)  # raises StreamGap when out of step: the stream is reopened for a full state
        self.services_received = (view.generation, time.monotonic())
        feed.offer(view.state)

    async def _apply_config(self, config: node_api_pb2.NodeConfig) -> None:
        if self.on_node_config is not None:
            await self.on_node_config(config)

    async def _apply_services(self, state: node_api_pb2.ServiceState) -> None:
        if self.on_services is not None:
            await self.on_services(state)

    async def watch_loop(self, stop: asyncio.Event) -> None:
        view = AssignmentView()

        async def handle(resp: node_api_pb2.WatchAssignmentResponse, via: str) -> None:
            whole = view.take(resp.assignment)  # StreamGap: reopened
            if whole is not None:
                self.apply(whole, via)

        request = node_api_pb2.WatchAssignmentRequest(
            node_name=self._node, accept_deltas=self.assignment_deltas
        )
        try:
            await self._follow(
                "assignment",
                lambda: _opened(view, self._stub.WatchAssignment(request)),
                handle,
                stop,
                up=self._assignment_up,
            )
        finally:
            self._assignment_stream_via = ""

    async def node_config_loop(self, stop: asyncio.Event, config: _Feed) -> None:
        if self.on_node_config is None:
            return
        view = NodeConfigView()  # each stream starts with a full config, then lease deltas

        async def handle(resp: node_api_pb2.WatchNodeConfigResponse, via: str) -> None:
            _take_config(view, resp, config)

        await self._follow(
            "node config",
            lambda: self._stub.WatchNodeConfig(
                node_api_pb2.WatchNodeConfigRequest(
                    node_name=self._node, accept_deltas=self.node_config_deltas
                )
            ),
            handle,
            stop,
        )

    async def services_loop(self, stop: asyncio.Event, services: _Feed) -> None:
        if self.on_services is None:
            return
        view = ServiceView()  # each stream starts with a full state, then deltas

        async def handle(resp: node_api_pb2.WatchServicesResponse, via: str) -> None:
            self._take_services(view, resp, services)

        await self._follow(
            "services",
            lambda: self._stub.WatchServices(
                node_api_pb2.WatchServicesRequest(node_name=self._node, accept_deltas=self.service_deltas)
            ),
            handle,
            stop,
        )

    async def acquire_lease(self, public_ip: str, vtep_mac: str) -> node_api_pb2.AcquireLeaseResponse:
        return await rpc.unary(
            self._stub.AcquireLease(
                node_api_pb2.AcquireLeaseRequest(
                    node_name=self._node, public_ip=public_ip, vtep_mac=vtep_mac
                ),
                timeout=30,
            )
        )

    async def run(self, stop: asyncio.Event) -> None:
        if not await self.register(stop):
            return
        tasks = [
            asyncio.create_task(self.heartbeat_loop(stop), name="heartbeat"),
            asyncio.create_task(self.assignment_fetch_loop(stop), name="assignment-fetch"),
            asyncio.create_task(self.node_watch_loop(stop), name="node-watch"),
            asyncio.create_task(self._reporter.run(self._source, self._node, stop), name="status-reporter"),
        ]
        if self.events is not None:
            tasks.append(
                asyncio.create_task(self.events.run(self._source, self._node, stop), name="event-reporter")
            )
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _same_pods(desired: dict[str, pod_pb2.Pod], pods: Iterable[pod_pb2.Pod]) -> bool:
    """Whether `pods` is the desired set the agent has: the same uids, each with the same name,
    spec and generation (what the agent acts on) and labels (what the coordinator's copy for
    assignments follows besides). Two coordinators' copies of one pod that neither changed may
    differ in the rest of their metadata: the resource version moves with every status report,
    and owner references and annotations change without a new generation."""
    given = {p.metadata.uid: p for p in pods}
    return given.keys() == desired.keys() and all(
        _same_desired(desired[uid], pod) for uid, pod in given.items()
    )


def _same_desired(a: pod_pb2.Pod, b: pod_pb2.Pod) -> bool:
    return (
        a.metadata.generation == b.metadata.generation
        and a.metadata.name == b.metadata.name
        and a.metadata.namespace == b.metadata.namespace
        and a.metadata.labels == b.metadata.labels
        and a.spec == b.spec
    )


def _take_config(view: NodeConfigView, resp: node_api_pb2.WatchNodeConfigResponse, feed: _Feed) -> None:
    view.apply(resp)  # each stream starts with a full config, then lease deltas
    feed.offer(view.config)


# After an apply, a feed pauses for this many times as long as the apply took (at most its
# min_interval): applying takes at most about a quarter of the agent's time however fast pushes
# come (the coordinator paces them too), yet a small cluster's new lease is routed within tens
# of milliseconds, as flannel does.
APPLY_PAUSE_FACTOR = 3.0


class _Feed:
    """A push applied apart from reading the stream it came on, so that a slow apply (the overlay,
    the service rules) holds back neither the stream nor the other pushes on it. Only the latest
    is applied: what arrives while one is being applied, or in the pause after it, is applied
    together. The pause grows with the apply's cost up to `min_interval` (kube-proxy's min sync
    period: a fleet joining is one lease delta per node, and each node config applied renders
    the overlay for every peer)."""

    def __init__(
        self, apply: Callable[[Any], Awaitable[None]], stop: asyncio.Event, min_interval: float, what: str
    ) -> None:
        self._apply = apply
        self._stop = stop
        self._min_interval = min_interval
        self._what = what
        self._latest: Callable[[], Any] | None = None
        self._received = asyncio.Event()

    def offer(self, latest: Callable[[], Any]) -> None:
        """`latest()` builds what to apply, when the applier gets to it."""
        self._latest = latest
        self._received.set()

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._run(), name=f"{self._what}-apply")

    async def _run(self) -> None:
        first = True
        while not await wait_any(self._stop, None, self._received):
            self._received.clear()
            latest = self._latest
            if latest is None:
                continue
            started = time.monotonic()
            try:
                await self._apply(latest())
            except Exception:  # the next one is applied all the same
                log.exception("applying the %s failed", self._what)
            pause = apply_pause(time.monotonic() - started, self._min_interval, first=first)
            first = False
            if pause > 0 and await wait_or_stop(self._stop, pause):
                return


def apply_pause(took: float, longest: float, *, first: bool) -> float:
    """How long a feed waits after an apply that took `took` seconds: APPLY_PAUSE_FACTOR times as
    long, at most `longest`. None after the first: it sets the node up (the overlay's device, its
    lease, the engine's network), which says nothing of what the next ones cost, and the peers'
    leases that follow a node's own are what its pods need to reach them."""
    return 0.0 if first else min(longest, took * APPLY_PAUSE_FACTOR)


_S = TypeVar("_S")


def _opened(view: AssignmentView, stream: _S) -> _S:
    """`stream`, just opened: `view` starts afresh with it (every stream starts whole)."""
    view.reset()
    return stream
