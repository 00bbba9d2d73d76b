"""How long a call waits before this coordinator's gRPC server hands it to a handler.

gRPC's asyncio server accepts calls one at a time, in arrival order, from one
queue for all connections. During a scheduling burst the agents' status
reports and events arrive faster than one core can take them, the queue grows,
and a heartbeat waits behind seconds of other calls before its handler sees
it (measured with bench/hollow.py's sentinel agent: a handler that answers in
under a millisecond, a round trip of 5-8 s). The event loop itself keeps
turning meanwhile (its longest pause 0.2 s), so LoopStalls does not see it.

`CallQueueProbe` calls this coordinator's own health service through a private
unix socket on the same server (see socket_path), one call at a time, every `interval` seconds.
A call that took longer than `threshold` marks the time from its sending to its
answer as time the coordinator could not hear its nodes; one still waiting
counts until now. The node lifecycle subtracts the longest such hold from a node's silence
before judging it, as it subtracts the loop's stalls (atoll.loopstalls.Deafness
takes the larger of the two, since a stalled loop also holds the probe).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import pathlib
import re
import tempfile
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atoll import tls
from atoll.aio import wait_or_stop

log = logging.getLogger(__name__)

FAILURES_BEFORE_WARNING = 20  # probe calls failed in a row (10 s at the default interval)


class CallQueueProbe:
    def __init__(
        self,
        socket_path: str,
        *,
        interval: float = 0.5,
        threshold: float = 0.25,
        timeout: float = 60.0,
        keep: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = f"unix://{socket_path}"
        self._interval = interval
        self._threshold = threshold
        self._timeout = timeout
        self._keep = keep
        self._clock = clock
        self._waits: collections.deque[tuple[float, float]] = collections.deque()  # (sent, answered)
        self._pending_since: float | None = None  # the probe call in flight, when it was sent
        self.slowest = 0.0  # the longest answered probe (seconds), for logs and benchmarks

    def record(self, sent: float, answered: float) -> None:
        """A call sent at `sent` was answered at `answered` (monotonic)."""
        self.slowest = max(self.slowest, answered - sent)
        if answered - sent <= self._threshold:
            return
        self._waits.append((sent, answered))
        while self._waits and self._waits[0][1] < answered - self._keep:
            self._waits.popleft()

    def within(self, seconds: float) -> float:
        """The longest hold of a call that ended (or is still going) within the last `seconds`.

        Not the sum of the holds: a node sends its next heartbeat only after the answer to the
        last, so however long the queue stays full, a live node's silence grows by one hold
        (the one its current heartbeat is in), not by every hold in the window.
        """
        now = self._clock()
        since = now - seconds
        longest = 0.0
        if self._pending_since is not None and now - self._pending_since > self._threshold:
            longest = now - self._pending_since
        for sent, answered in reversed(self._waits):
            if answered <= since:
                break
            longest = max(longest, answered - sent)
        return min(longest, seconds)

    async def run(self, stop: asyncio.Event) -> None:
        async with grpc.aio.secure_channel(self.target, tls.local_channel_credentials()) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            failing = 0
            while True:
                sent = self._pending_since = self._clock()
                try:
                    await check(health_pb2.HealthCheckRequest(), timeout=self._timeout)
                except (grpc.RpcError, grpc.aio.UsageError, OSError) as exc:
                    # A call that ran out of time was held all that time: that hold counts. Any
                    # other failure (no socket, the server going away) says nothing about the
                    # queue. The coordinator's watchdog follows this task: no failure may end it.
                    if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        self.record(sent, self._clock())
                    failing += 1
                    if failing == FAILURES_BEFORE_WARNING:
                        log.warning(
                            "call queue probe on %s keeps failing (%s): silence is judged without it",
                            self.target,
                            exc.code() if isinstance(exc, grpc.RpcError) else exc,
                        )
                else:
                    self.record(sent, self._clock())
                    failing = 0
                finally:
                    self._pending_since = None
                if await wait_or_stop(stop, self._interval):
                    return


_SOCKET_NAME = re.compile(r"calls-(\d+)-\d+\.sock")
_numbers = itertools.count()


def socket_path(data_dir: pathlib.Path) -> tuple[str, str | None]:
    """Where a coordinator's probe socket goes, and the directory made for it (None: the data dir).

    In the data dir (0700) under a name of this process's own, `calls-PID-N.sock`: another
    coordinator on the same data dir never takes or removes a socket in use, and the sockets
    of processes that are gone are removed here. In a directory of its own (0700, under the
    temp dir) when the data dir is not there, not writable, or its path is too long for a
    socket (107 bytes at most).
    """
    directory = data_dir.resolve()
    path = directory / f"calls-{os.getpid()}-{next(_numbers)}.sock"
    try:
        if directory.is_dir() and os.access(directory, os.W_OK) and len(str(path).encode()) <= 100:
            for old in directory.glob("calls-*.sock"):
                found = _SOCKET_NAME.fullmatch(old.name)
                if found and not _alive(int(found.group(1))):
                    old.unlink(missing_ok=True)
            return str(path), None
    except OSError as exc:
        log.debug("no probe socket in %s: %s", directory, exc)
    made = tempfile.mkdtemp(prefix="atoll-coordinator-")
    return str(pathlib.Path(made) / "calls.sock"), made


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: alive
    return True
