"""The leader election on etcd (coordinator.store.election describes it): a lease, a key, renewals."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from atoll import errors
from atoll.aio import wait_or_stop
from coordinator.store.election import DEFAULT_TTL, KEYS, LeaderTerm, LeaderWork, Member, new_identity
from coordinator.store.etcd import EtcdStore

log = logging.getLogger(__name__)


class EtcdElector:
    def __init__(
        self, store: EtcdStore, *, address: str, ttl: int = DEFAULT_TTL, identity: str = "", keys: str = KEYS
    ) -> None:
        keys = store.prefix + keys  # beside the cluster's objects, under its etcd prefix
        self._leader_key = f"{keys}leader".encode()
        self._members = f"{keys}coordinators/".encode()
        self._store = store
        self._kv = rpc_pb2_grpc.KVStub(store.channel)
        self._leases = rpc_pb2_grpc.LeaseStub(store.channel)
        self._watch = rpc_pb2_grpc.WatchStub(store.channel)
        self._id = identity or new_identity()
        self._address = address
        self._ttl = ttl
        self._started = time.time()
        self._renewed = 0.0
        self._since = 0.0

    @property
    def identity(self) -> str:
        return self._id

    async def _unary(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return await method(request, timeout=self._ttl, wait_for_ready=True)
        except grpc.aio.AioRpcError as err:
            raise errors.Unavailable(f"etcd: {err.details() or err.code().name}") from None

    async def run(self, stop: asyncio.Event, work: LeaderWork) -> None:
        while not stop.is_set():
            try:
                await self._campaign_once(stop, work)
            except errors.Unavailable as exc:
                log.warning("leader election: %s; campaigning again", exc)
                await wait_or_stop(stop, 0.5)

    async def _campaign_once(self, stop: asyncio.Event, work: LeaderWork) -> None:
        grant = await self._unary(self._leases.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=self._ttl))
        lease = int(grant.ID)
        self._renewed = time.monotonic()
        member = json.dumps({"id": self._id, "address": self._address, "started": self._started}).encode()
        await self._unary(
            self._kv.Put,
            rpc_pb2.PutRequest(key=self._members + self._id.encode(), value=member, lease=lease),
        )
        term: LeaderTerm | None = None
        work_task: asyncio.Task[None] | None = None
        stream = self._leases.LeaseKeepAlive(_pings(lease, self._ttl / 3), wait_for_ready=True)
        alive = asyncio.create_task(self._keepalive(stream))
        try:
            while not stop.is_set():
                if term is None and await self._try_to_lead(lease):
                    term = LeaderTerm(self._since)
                    log.info("leader election: %s is the leader", self._id)
                    work_task = asyncio.create_task(work(term))
                if alive.done():
                    raise errors.Unavailable(
                        "the lease's keep-alive stream ended (lease gone or etcd unreachable)"
                    )
                silent = time.monotonic() - self._renewed
                if silent > self._ttl * 2 / 3:
                    # Step down before the lease can expire: nobody else can lead before it does.
                    raise errors.Unavailable(f"the lease was not renewed for {silent:.1f}s")
                await wait_or_stop(stop, self._ttl / 6)
        finally:
            if term is not None:
                term.lost.set()  # first: the leader's loops stop before anything else happens
                log.info("leader election: %s stepped down", self._id)
            if work_task is not None:
                await asyncio.gather(work_task, return_exceptions=True)
            alive.cancel()
            stream.cancel()
            try:
                await asyncio.wait_for(
                    self._leases.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease)), timeout=1
                )
            except (grpc.aio.AioRpcError, TimeoutError):
                pass  # it expires by itself

    async def _try_to_lead(self, lease: int) -> bool:
        """Create the leader key under our lease, if nobody holds it."""
        self._since = time.time()
        value = json.dumps({"id": self._id, "since": self._since}).encode()
        answer = await self._unary(
            self._kv.Txn,
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(key=self._leader_key, target=rpc_pb2.Compare.CREATE, create_revision=0)
                ],
                success=[
                    rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=self._leader_key, value=value, lease=lease)
                    )
                ],
            ),
        )
        return bool(answer.succeeded)

    async def _keepalive(self, stream: Any) -> None:
        async for response in stream:
            if response.TTL <= 0:
                return  # the lease is gone
            self._renewed = time.monotonic()

    async def members(self) -> list[Member]:
        answer = await self._unary(
            self._kv.Range, rpc_pb2.RangeRequest(key=self._members, range_end=self._members[:-1] + b"0")
        )
        leader = await self._unary(self._kv.Range, rpc_pb2.RangeRequest(key=self._leader_key))
        holder = json.loads(leader.kvs[0].value) if leader.kvs else {}
        out = []
        for kv in answer.kvs:
            info = json.loads(kv.value)
            is_leader = info["id"] == holder.get("id")
            out.append(
                Member(
                    info["id"],
                    info["address"],
                    info["started"],
                    is_leader,
                    holder["since"] if is_leader else 0.0,
                )
            )
        return sorted(out, key=lambda m: (not m.leader, m.id))


async def _pings(lease: int, interval: float) -> AsyncIterator[rpc_pb2.LeaseKeepAliveRequest]:
    while True:
        yield rpc_pb2.LeaseKeepAliveRequest(ID=lease)
        await asyncio.sleep(interval)
