"""The heartbeat lane: node heartbeats on servers, an event loop and a thread of their own.

Why: gRPC's asyncio server takes its calls one at a time in arrival order,
each accept a few turns of the event loop. During a 10,000-pod burst the
coordinator's one loop is saturated by status reports and events, and a
heartbeat on the API's listener waited 5-8 s behind them; a second set of
servers on the same loop only shared that loop's turns (bench/hollow.py: the
slowest heartbeat still 1.5-4.7 s). Here the lane's servers run on a loop in
a thread of their own. A heartbeat that changes nothing, nearly all of them,
is answered there from memory (the Node informer's cache, the node health
table, the assignment generations: dict reads and one dict write, safe under
the GIL); the interpreter hands the GIL over every few milliseconds, so the
lane answers within milliseconds however busy the main loop is. A node status
due for a write is written on the main loop, where the store is, without
holding the heartbeat's answer (LaneHeartbeats).

Kubernetes answers the same problem with API Priority and Fairness, where node
leases have a priority level of their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import grpc

from atoll import callchain, errors, rpc
from atoll import config as layered
from atoll.handoff import LoopThread
from atoll.v1 import node_api_pb2, node_api_pb2_grpc
from coordinator.api.node.service import NodeServicer

log = logging.getLogger(__name__)

# Servers sharing the lane's ports (SO_REUSEPORT; the kernel spreads the agents' connections over
# them). Each accepts one call at a time; several accept side by side.
LEASE_SERVERS = 8
START_TIMEOUT = 30.0
# Every agent holds a connection here for nothing but heartbeats of a few hundred bytes, so TLS
# records of 4 KiB (not 16) lose nothing and spare each connection its larger frame buffers:
# 4.3 KiB of the coordinator's RSS per agent (bench/conn_memory.py, its "TLS, lane" row).
LANE_SERVER_OPTIONS: list[tuple[str, str | int]] = [("grpc.tsi.max_frame_size", 4096)]


class CertificatesOnly(callchain.CallInterceptor):
    """The lane's first link: callers prove who they are by certificate (or plain text under
    --insecure), never by bearer token, whose check reads the store on the main loop."""

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        for key, _ in context.invocation_metadata() or ():
            if key == "authorization":
                raise errors.Unauthenticated("the heartbeat lane takes node certificates, not tokens")
        return None


class LaneHeartbeats:
    """The lane's NodeService, Heartbeat alone, answered on the lane's loop from memory.

    A status due for a write (every --node-status-interval, a change the agent
    reports, a node judged Unknown) is handed to the main loop, and the answer
    does not wait for it: the node's liveness is recorded already, and a write
    queued behind a burst held such heartbeats up to a second. One write per
    node at a time; a heartbeat that arrives meanwhile replaces what is still
    waiting, so the latest status is the one written. After a failed write the
    node's next due heartbeat goes the old way, forwarded and awaited, so a
    store that cannot write reaches the agent as an error. A heartbeat memory
    cannot answer (the informer not synced, a node not cached yet) waits for
    the main loop too.
    """

    def __init__(self, node_api: NodeServicer, main_loop: asyncio.AbstractEventLoop) -> None:
        self._node_api = node_api
        self._main_loop = main_loop
        self._lock = threading.Lock()  # the lane's thread and the main loop's share what follows
        self._waiting: dict[str, tuple[node_api_pb2.HeartbeatRequest, float]] = {}
        self._writing: set[str] = set()
        self._failed: set[str] = set()
        self._writes: set[concurrent.futures.Future[None]] = set()
        self.answered_here = 0
        self.forwarded = 0  # awaited on the main loop
        self.handed_over = 0  # status writes started on the main loop
        self.hand_overs_replaced = 0  # statuses replaced by a newer one before their write began
        self.hand_overs_failed = 0

    async def Heartbeat(
        self, request: node_api_pb2.HeartbeatRequest, context: Any
    ) -> node_api_pb2.HeartbeatResponse:
        answer, heard = self._node_api.heartbeat_from_memory(request)
        if answer is not None and (heard is None or request.node_name not in self._failed):
            self.answered_here += 1
            if heard is not None:
                self._hand_over(request, heard)
            return answer
        self.forwarded += 1
        # The context variables (the caller, set by the auth link) go along; the gRPC context
        # belongs to this loop and stays here.
        future = asyncio.run_coroutine_threadsafe(self._node_api.Heartbeat(request, None), self._main_loop)
        answer = await asyncio.wrap_future(future)
        self._failed.discard(request.node_name)
        return answer

    def _hand_over(self, request: node_api_pb2.HeartbeatRequest, heard: float) -> None:
        name = request.node_name
        with self._lock:
            if name in self._waiting:
                self.hand_overs_replaced += 1
            self._waiting[name] = (request, heard)
            if name in self._writing:
                return  # the write under way takes the newest status when it is done
            self._writing.add(name)
        coro = self._write(name)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._main_loop)
        except RuntimeError:  # the main loop is closed: the coordinator is stopping
            coro.close()
            with self._lock:
                self._writing.discard(name)
                self._waiting.pop(name, None)
            return
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)

    async def _write(self, name: str) -> None:
        """On the main loop: the node's waiting statuses, the newest each time, until none is left."""
        while True:
            with self._lock:
                item = self._waiting.pop(name, None)
                if item is None:
                    self._writing.discard(name)
                    return
            self.handed_over += 1
            try:
                await self._node_api.write_handed_status(*item)
            except BaseException as exc:
                with self._lock:
                    self._writing.discard(name)
                    self._waiting.pop(name, None)
                if isinstance(exc, Exception):
                    self.hand_overs_failed += 1
                    if name not in self._failed:
                        log.warning("node %s: writing its status failed: %s", name, exc, extra={"node": name})
                    self._failed.add(name)
                raise

    async def stop(self) -> None:
        """On the main loop, before the store closes: the writes under way are cancelled."""
        writes = list(self._writes)
        for future in writes:
            future.cancel()
        await asyncio.gather(*(asyncio.wrap_future(f) for f in writes), return_exceptions=True)


class HeartbeatLane:
    """The lane's servers on their own loop and thread; `port` is the one agents are told."""

    def __init__(self) -> None:
        self._thread = LoopThread("heartbeat-lane")
        self.servers: list[rpc.RunningServer] = []
        self.heartbeats: LaneHeartbeats | None = None

    @property
    def port(self) -> int:
        return self.servers[0].port if self.servers else 0

    async def start(
        self,
        listeners: Callable[[], list[rpc.Listener]],
        probe: rpc.Listener,
        node_api: NodeServicer,
        links: list[callchain.CallInterceptor],
        handshake_timeout: float,
    ) -> None:
        """Listen on `listeners()` (called once per server: gRPC takes credentials per server) and
        the call-queue `probe` socket (on the first server: the wait it measures is the lane's)."""
        self.heartbeats = LaneHeartbeats(node_api, asyncio.get_running_loop())
        self._thread.start()
        try:
            self.servers = await self._thread.run(
                _start_servers(
                    listeners, probe, self.heartbeats, [CertificatesOnly(), *links], handshake_timeout
                ),
                START_TIMEOUT,
            )
        except BaseException:
            await self.stop()
            raise

    async def stop(self, grace: float = 0.5) -> None:
        servers, self.servers = self.servers, []
        if servers:
            try:
                await self._thread.run(_stop_servers(servers, grace), grace + 5.0)
            except (TimeoutError, RuntimeError) as exc:
                log.warning("stopping the heartbeat lane: %s", exc)
        if self.heartbeats is not None:
            await self.heartbeats.stop()
        if not await self._thread.stop():
            log.warning("the heartbeat lane's thread did not end within 10 s")


async def _start_servers(
    lease_listeners: Callable[[], list[rpc.Listener]],
    probe: rpc.Listener,
    heartbeats: LaneHeartbeats,
    links: list[callchain.CallInterceptor],
    handshake_timeout: float,
) -> list[rpc.RunningServer]:
    binding = rpc.ServiceBinding(
        heartbeats,
        rpc.only_methods(node_api_pb2_grpc.add_NodeServiceServicer_to_server, ["Heartbeat"]),
        node_api_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name,
    )
    # Each port is claimed first without SO_REUSEPORT: a port held by anyone else (another
    # gRPC server reuses ports by default) is an error here, not a port shared in silence.
    ports = [_claim(lst.address) for lst in lease_listeners()]
    servers: list[rpc.RunningServer] = []
    try:
        for i in range(LEASE_SERVERS):
            listeners = [
                rpc.Listener(_with_port(lst.address, port), lst.credentials)
                for lst, port in zip(lease_listeners(), ports, strict=True)
            ]
            servers.append(
                await rpc.start_server(
                    [*listeners, *([] if i else [probe])],
                    [binding],
                    links=links,
                    handshake_timeout=handshake_timeout,
                    reuse_port=True,
                    options=LANE_SERVER_OPTIONS,
                )
            )
    except BaseException:
        await asyncio.gather(*(s.stop(0) for s in servers), return_exceptions=True)
        raise
    return servers


async def _stop_servers(servers: list[rpc.RunningServer], grace: float) -> None:
    await asyncio.gather(*(s.stop(grace) for s in servers))  # on the lane's loop, where they run


def _with_port(address: str, port: int) -> str:
    return f"{address.rpartition(':')[0]}:{port}"


def _claim(address: str) -> int:
    """Bind `address` alone for a moment (port 0: a free port); the port, or Unavailable if taken."""
    host, port = layered.split_host_port(address, "lease_listen")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise errors.Unavailable(f"cannot listen on {address}: {exc.strerror or exc}") from None
