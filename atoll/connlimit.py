"""A TCP front that caps a listener's open connections per source and in total.

gRPC Python accepts every connection it is offered and keeps each one, with
its descriptor, until the TLS handshake ends: one client opening thousands of
connections and never finishing a handshake exhausts the daemon's descriptors,
and then nobody connects. gRPC has no per-source cap, so a listener that
anyone may reach without credentials (the coordinator's token port) is served
through this front: it accepts on the public address, resets a connection at
once when its source already holds `per_source` connections or the listener
`total`, and splices every other one byte for byte to the gRPC listener on a
private loopback port. TLS stays end to end between the client and gRPC,
which also enforces the handshake deadline (a connection gRPC drops is closed
here too); the front never sees plain text.

gRPC sees the front's loopback address as every call's peer: `original_peer`
maps it back (atoll.callchain.peer_address uses it), so the audit trail still names
the real client. Sources are IPv4 addresses and IPv6 /64 prefixes (one host
usually holds a whole /64).

Measured in bench/handshake_flood.py; the other designs considered: gRPC's
`grpc.max_allowed_incoming_connections` caps only the total, so one source
still locks everybody out, and the kernel (nftables connlimit) needs root and
rules outside the daemon.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# SO_LINGER on, 0 s: close() sends a reset and leaves no TIME_WAIT behind.
_RESET = struct.pack("ii", 1, 0)
_LOG_EVERY = 10.0
_BACKLOG = 4096
# Connections accepted per wake-up, so that a flood cannot hold the event loop.
_ACCEPT_BATCH = 64
# Bytes a client may send before its backend connection is up (a TLS ClientHello is well below).
_EARLY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ConnLimits:
    per_source: int = 64
    total: int = 1024


@dataclass
class GateStats:
    accepted: int = 0
    refused_per_source: int = 0
    refused_total: int = 0

    @property
    def refused(self) -> int:
        return self.refused_per_source + self.refused_total


def source_of(address: str) -> str:
    """What the per-source cap counts: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def grpc_peer(host: str, port: int) -> str:
    """An address the way gRPC's context.peer() spells it."""
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class _Side(asyncio.Protocol):
    """One end of a spliced pair; `other` is the transport its data goes to."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: asyncio.Transport | None = None

    def data_received(self, data: bytes) -> None:
        if self.other is not None:
            self.other.write(data)

    def eof_received(self) -> bool | None:
        return None  # close; TLS and HTTP/2 need no half-closed connections

    def pause_writing(self) -> None:
        if self.other is not None:
            self.other.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and not self.other.is_closing():
            self.other.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other is not None and not self.other.is_closing():
            self.other.close()


class _Backend(_Side):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport


class _Client(_Side):
    """An admitted client connection; it counts against its source until it is lost.

    What the client sends before the backend is connected is kept and sent
    first: pausing the transport in connection_made is not enough, since some
    Python versions (Debian 12's 3.11.2) start reading anyway, and a dropped
    ClientHello left the handshake waiting for its 5 s deadline.
    """

    def __init__(self, gate: ConnectionGate, source: str, peer: str) -> None:
        super().__init__()
        self.gate = gate
        self.source = source
        self.peer = peer
        self.backend_key = 0
        self.task: asyncio.Task[None] | None = None
        self.early: list[bytes] = []  # received before the backend was there

    def data_received(self, data: bytes) -> None:
        if self.other is None:
            self.early.append(data)
            if sum(map(len, self.early)) > _EARLY_LIMIT and self.transport is not None:
                self.transport.pause_reading()  # resumed once the backend is connected
            return
        self.other.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.gate.clients.add(self)
        transport.pause_reading()  # until the backend is connected
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            backend, side = await loop.create_connection(_Backend, "127.0.0.1", self.gate.backend_port)
        except OSError as exc:
            log.warning("cannot reach the gRPC listener behind %s: %s", self.gate.address, exc)
            self.transport.abort()
            return
        if self.transport.is_closing():
            backend.close()
            return
        self.backend_key = int(backend.get_extra_info("sockname")[1])
        self.gate.peers[self.backend_key] = self.peer
        self.attach(backend, side)

    def attach(self, backend: asyncio.Transport, side: _Side) -> None:
        """Splice to the connected backend: what came early first, then everything as it comes."""
        assert self.transport is not None
        side.other, self.other = self.transport, backend
        if self.early:
            backend.write(b"".join(self.early))
            self.early = []
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.source:
            self.gate.clients.discard(self)
            self.gate.release(self.source)
            self.gate.peers.pop(self.backend_key, None)
            self.source = ""


def _same(client: _Client) -> _Client:
    return client


class ConnectionGate:
    """Accepts on `address` (HOST:PORT), caps connections, splices the rest to 127.0.0.1:`backend_port`."""

    def __init__(self, address: str, backend_port: int, limits: ConnLimits) -> None:
        self.address = address
        self.backend_port = backend_port
        self.limits = limits
        self.stats = GateStats()
        self.open: dict[str, int] = {}
        self.total = 0
        self.peers: dict[int, str] = {}
        self.clients: set[_Client] = set()
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._starting: set[asyncio.Task[Any]] = set()
        self._logged = 0.0

    async def start(self) -> int:
        """Listen (every address HOST resolves to) and accept in our own loop: a refused
        connection is closed right after accept(), before asyncio builds anything for it."""
        loop = asyncio.get_running_loop()
        host, _, port = self.address.rpartition(":")
        infos = await loop.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(_BACKLOG)
                sock.setblocking(False)
        except OSError:
            await self.close()
            raise
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self.port = int(self._sockets[0].getsockname()[1])
        return self.port

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, most likely: back off a little
                log.warning("%s: cannot accept: %s; pausing for 1 s", self.address, exc)
                loop.remove_reader(listener.fileno())
                loop.call_later(1.0, self._resume, listener)
                return
            source = source_of(address[0])
            if not self.admit(source):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                conn.close()
                continue
            conn.setblocking(False)
            client = _Client(self, source, grpc_peer(address[0], address[1]))
            task = loop.create_task(loop.connect_accepted_socket(functools.partial(_same, client), conn))
            self._starting.add(task)
            task.add_done_callback(functools.partial(self._started, client=client, conn=conn))

    def _started(self, task: asyncio.Task[Any], *, client: _Client, conn: socket.socket) -> None:
        self._starting.discard(task)
        if task.cancelled() or task.exception() is not None:
            conn.close()
            if client.transport is None:  # connection_made never ran, so connection_lost never will
                self.release(client.source)

    def _resume(self, listener: socket.socket) -> None:
        if listener in self._sockets and listener.fileno() >= 0:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)

    def admit(self, source: str) -> bool:
        held = self.open.get(source, 0)
        if held >= self.limits.per_source:
            self.stats.refused_per_source += 1
            self._warn(f"{source} already holds {held} connections (cap per source)")
            return False
        if self.total >= self.limits.total:
            self.stats.refused_total += 1
            self._warn(f"{self.total} connections open (cap in total)")
            return False
        self.open[source] = held + 1
        self.total += 1
        self.stats.accepted += 1
        return True

    def release(self, source: str) -> None:
        self.total -= 1
        left = self.open.get(source, 1) - 1
        if left:
            self.open[source] = left
        else:
            self.open.pop(source, None)

    def original_peer(self, peer: str) -> str | None:
        """The client behind a gRPC peer string of ours (ipv4:127.0.0.1:PORT), else None."""
        if not peer.startswith("ipv4:127.0.0.1:"):
            return None
        try:
            return self.peers.get(int(peer.rsplit(":", 1)[1]))
        except ValueError:
            return None

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY:
            self._logged = now
            log.warning(
                "%s: refusing connections: %s; %d refused so far", self.address, why, self.stats.refused
            )

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        for task in list(self._starting):
            task.cancel()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
            if client.other is not None:
                client.other.abort()
