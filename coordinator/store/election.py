"""One leader among several coordinators, elected through an etcd lease; never a protocol of our own.

A coordinator campaigns by creating the key ``/atoll/leader`` bound to a lease
of its own, in a transaction that succeeds only if the key does not exist. The
winner renews its lease every third of the TTL; everyone else watches the key
and campaigns again when it goes (its holder resigned, or its lease expired).

A leader steps down, stopping everything that must run once, as soon as it has
not renewed for two thirds of the TTL: before its lease can expire, so before
any other coordinator can win (`LeaderTerm.lost` is set first, and the loops
that run under the term stop on it). Every member also keeps
``/atoll/coordinators/<id>`` alive under its lease, which `members` reads for
``coordinator get coordinators``.

With the embedded SQLite store there is one coordinator, always the leader
(`SoleLeader`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

KEYS = "/atoll/"  # the election's keys: <KEYS>leader and <KEYS>coordinators/<id>
DEFAULT_TTL = 3  # seconds: a dead leader is replaced within about TTL + one campaign


@dataclass(frozen=True)
class Member:
    id: str
    address: str
    started: float
    leader: bool = False
    leader_since: float = 0.0


class LeaderTerm:
    """One term of leadership; `lost` is set the moment it ends."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.lost = asyncio.Event()


LeaderWork = Callable[[LeaderTerm], Coroutine[Any, Any, None]]


class Elector(Protocol):
    async def run(self, stop: asyncio.Event, work: LeaderWork) -> None:
        """Campaign until `stop`; run `work(term)` for every term won (it must end when term.lost is set)."""
        ...

    async def members(self) -> list[Member]: ...

    @property
    def identity(self) -> str: ...


def new_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SoleLeader:
    """The single coordinator on SQLite: always the leader, from start to stop."""

    def __init__(self, address: str = "") -> None:
        self._id = new_identity()
        self._address = address
        self._started = time.time()
        self._since = 0.0

    @property
    def identity(self) -> str:
        return self._id

    async def run(self, stop: asyncio.Event, work: LeaderWork) -> None:
        term = LeaderTerm(time.time())
        self._since = term.since
        task = asyncio.create_task(work(term))
        await stop.wait()
        term.lost.set()
        await asyncio.gather(task, return_exceptions=True)

    async def members(self) -> list[Member]:
        return [Member(self._id, self._address, self._started, True, self._since)]
