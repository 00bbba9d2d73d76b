"""Talking to a host's network namespace from the test process itself.

The hosts' namespaces have no link to the root namespace (by design: no
packet can leave the machine), so a test cannot simply connect to a host's
address. A socket, however, stays in the network namespace it was created
in: a helper thread joins the namespace with setns(2) (which only affects
that thread), creates the socket and hands it back. `PortForward` builds on
that to expose a port of a host on 127.0.0.1 of the root namespace, so
ordinary clients (gRPC, HTTP libraries) can be pointed at it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """Run `fn` on a helper thread that has joined the network namespace at `netns_path`."""
    result: list[T] = []
    error: list[BaseException] = []

    def worker() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=worker, name=f"netns:{os.path.basename(netns_path)}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def connect(netns_path: str, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A TCP socket connected to `address` from inside the network namespace at `netns_path`."""
    return in_netns(netns_path, lambda: socket.create_connection(address, timeout=timeout))


class PortForward:
    """Relay 127.0.0.1:`port` in the root namespace to `address` inside a host's namespace.

    Listens on loopback only, so nothing becomes reachable from outside the
    machine. One thread accepts; each connection is pumped by its own thread.
    Use as a context manager or call `close()`.
    """

    def __init__(
        self,
        netns_path: str,
        address: tuple[str, int],
        *,
        connect_timeout: float = 5.0,
        reverse_port: int | None = None,
    ) -> None:
        """`reverse_port`: the other way round, 127.0.0.1:`reverse_port` inside the host's namespace
        relayed to `address` in the root namespace (a host's daemon calling one the test runs)."""
        self.netns_path = netns_path
        self.address = address
        self.connect_timeout = connect_timeout
        self.reverse = reverse_port is not None
        if reverse_port is None:
            self._listener = socket.create_server(("127.0.0.1", 0))
        else:
            self._listener = in_netns(netns_path, lambda: socket.create_server(("127.0.0.1", reverse_port)))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name=f"forward:{self.port}", daemon=True)
        self._thread.start()
        log.debug("forwarding 127.0.0.1:%d to %s:%d in %s", self.port, *address, netns_path)

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url_host(self) -> str:
        """`127.0.0.1:PORT`, what a client should dial."""
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        try:
            if self.reverse:
                upstream = socket.create_connection(self.address, timeout=self.connect_timeout)
            else:
                upstream = connect(self.netns_path, self.address, self.connect_timeout)
        except OSError as exc:
            log.debug("forward %d: cannot reach %s: %s", self.port, self.address, exc)
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns.update((client, upstream))
        peers = {client: upstream, upstream: client}
        sel = selectors.DefaultSelector()
        for sock in peers:
            sel.register(sock, selectors.EVENT_READ)
        try:
            while peers and not self._closed.is_set():
                for key, _ in sel.select(timeout=0.5):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = src.recv(65536)
                    except OSError:
                        data = b""
                    dst = peers.get(src)
                    if dst is None:
                        continue
                    if data:
                        dst.sendall(data)
                    else:
                        # Half-close: pass the EOF on, stop reading this side.
                        sel.unregister(src)
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        del peers[src]
        except OSError as exc:
            log.debug("forward %d: connection ended: %s", self.port, exc)
        finally:
            sel.close()
            with self._lock:
                self._conns.difference_update((client, upstream))
            client.close()
            upstream.close()

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)
