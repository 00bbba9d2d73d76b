"""EtcdStore: the store contract on etcd v3, for several coordinators and scale-out.

Revisions are etcd's own; every write is one etcd transaction whose compares
are the ops' preconditions (a create needs the key absent, a compare-and-swap
its mod revision), so nothing is read-modify-written outside a transaction.
All ops of one transaction share its revision, as in etcd. A refused
transaction reads the keys it touched to say which precondition failed.

The wire is etcd's gRPC API (the generated stubs that ship with aetcd, on a
channel of ours): several endpoints in one channel (a dead member costs a
reconnect to the next), TLS with client certificates, every call with a
deadline and ``wait_for_ready`` so a call made during a failover waits for
the next member instead of failing. A watch resumes from the last revision
it delivered when its stream breaks, and raises errors.Gone when that
revision was compacted (the caller lists again).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aetcd.rpc import kv_pb2, rpc_pb2, rpc_pb2_grpc

from atoll import errors, rpc
from coordinator.store.base import KV, Op, Range, StoreEvent, check_op

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE = 1000  # keys per Range call when listing
MAX_MESSAGE = 64 * 2**20
CALL_TIMEOUT = 10.0
RETRIES = 5  # while etcd elects a new leader (about 1 s here) calls fail with "no leader" or time out
RETRY_DELAY = 0.2
_GONE_MARK = "required revision has been compacted"


@dataclass(frozen=True)
class EtcdTLS:
    ca: bytes
    cert: bytes = b""
    key: bytes = b""


def channel_target(endpoints: str) -> str:
    """``h1:2379,h2:2379`` as one gRPC target with every address (``ipv4:a:p,b:p``)."""
    return rpc.multi_address_target(endpoints, "etcd endpoint")


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (etcd's range_end)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _kv(kv: Any, strip: int = 0) -> KV:
    return KV(kv.key.decode()[strip:], bytes(kv.value), int(kv.create_revision), int(kv.mod_revision))


class EtcdStore:
    def __init__(
        self,
        endpoints: str,
        *,
        tls: EtcdTLS | None = None,
        call_timeout: float = CALL_TIMEOUT,
        prefix: str = "",
    ) -> None:
        """`prefix` (e.g. ``/cluster-a``) puts every key of this cluster under it, so clusters can share
        an etcd (Kubernetes' --etcd-prefix)."""
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise errors.InvalidArgument(f"etcd key prefix {prefix!r}: expected /NAME (no trailing slash)")
        self.prefix = prefix
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        target = channel_target(endpoints)
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            creds = grpc.ssl_channel_credentials(tls.ca, tls.key or None, tls.cert or None)
            self._channel = grpc.aio.secure_channel(target, creds, options=options)
        self._kv = rpc_pb2_grpc.KVStub(self._channel)
        self._watch = rpc_pb2_grpc.WatchStub(self._channel)
        self._timeout = call_timeout
        self._revision = 0
        self._compacted = 0
        self.endpoints = endpoints

    @classmethod
    async def open(cls, endpoints: str, *, tls: EtcdTLS | None = None, prefix: str = "") -> EtcdStore:
        store = cls(endpoints, tls=tls, prefix=prefix)
        await store.list("/atoll-store-probe/")  # fails fast and clearly when no member answers
        return store

    # -- calls ----------------------------------------------------------------------------------

    async def _call(self, method: Callable[..., Any], request: Any) -> Any:
        """One call; a read is retried while etcd elects a leader (it changes nothing)."""
        for attempt in range(RETRIES):
            try:
                return await self._call_once(method, request)
            except errors.Unavailable:
                if method is not self._kv.Range or attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(RETRY_DELAY * (attempt + 1))
        raise AssertionError("unreachable")

    async def _call_once(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            response = await method(request, timeout=self._timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as err:
            details = err.details() or ""
            if _GONE_MARK in details:
                raise errors.Gone(f"resource version too old ({details}); list again") from None
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise errors.Unavailable(f"etcd at {self.endpoints}: {details or err.code().name}") from None
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED or "too large" in details:
                raise errors.ResourceExhausted(f"etcd: {details}") from None
            raise errors.Internal(f"etcd: {err.code().name}: {details}") from None
        self._seen(int(response.header.revision))
        return response

    def _seen(self, revision: int) -> None:
        self._revision = max(self._revision, revision)

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        response = await self._call(self._kv.Range, rpc_pb2.RangeRequest(key=self._key(key)))
        return _kv(response.kvs[0], len(self.prefix)) if response.kvs else None

    async def list(self, prefix: str, revision: int = 0) -> tuple[builtins.list[KV], int]:
        start = self._key(prefix)
        end = _prefix_end(start)
        items: builtins.list[KV] = []
        at = revision
        while True:
            request = rpc_pb2.RangeRequest(key=start, range_end=end, limit=PAGE, revision=at)
            response = await self._call(self._kv.Range, request)
            at = at or int(response.header.revision)  # every page from one snapshot
            items += [_kv(kv, len(self.prefix)) for kv in response.kvs]
            if not response.more or not response.kvs:
                return items, at
            start = response.kvs[-1].key + b"\0"

    async def list_range(self, prefix: str, revision: int = 0, *, after: str = "", limit: int = 0) -> Range:
        if not after and not limit:
            kvs, at = await self.list(prefix, revision)
            return Range(kvs, at, 0)
        # etcd reads the range itself: from just past `after`, `limit` keys, and counts the rest.
        # (An `after` that sorts before the prefix starts at the prefix, as the in-memory side does.)
        first = self._key(prefix)
        start = max(self._key(after) + b"\0", first) if after else first
        end = _prefix_end(first)
        items: builtins.list[KV] = []
        at = revision
        while True:
            want = min(PAGE, limit - len(items)) if limit else PAGE
            request = rpc_pb2.RangeRequest(key=start, range_end=end, limit=want, revision=at)
            response = await self._call(self._kv.Range, request)
            at = at or int(response.header.revision)  # every call from one snapshot
            items += [_kv(kv, len(self.prefix)) for kv in response.kvs]
            left = int(response.count) - len(response.kvs)  # counted from `start`, not limited
            if not response.more or not response.kvs or (limit and len(items) >= limit):
                return Range(items, at, left)
            start = response.kvs[-1].key + b"\0"

    # -- writes ---------------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KV:
        return (await self.txn([Op("create", key, value)]))[0]

    async def update(self, key: str, value: bytes, expected_revision: int | None = None) -> KV:
        return (await self.txn([Op("update", key, value, expected_revision)]))[0]

    async def delete(self, key: str, expected_revision: int | None = None) -> KV:
        return (await self.txn([Op("delete", key, b"", expected_revision)]))[0]

    async def txn(self, ops: Sequence[Op]) -> builtins.list[KV]:
        if len({op.key for op in ops}) != len(ops):
            raise errors.InvalidArgument("a transaction may touch each key once")
        compare, success = [], []
        for op in ops:
            key = self._key(op.key)
            if op.type == "create":
                compare.append(rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE, create_revision=0))
            elif op.expected_revision is not None:
                compare.append(
                    rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD, mod_revision=op.expected_revision)
                )
            else:  # must exist
                compare.append(
                    rpc_pb2.Compare(
                        key=key,
                        target=rpc_pb2.Compare.CREATE,
                        result=rpc_pb2.Compare.GREATER,
                        create_revision=0,
                    )
                )
            if op.type == "delete":
                success.append(
                    rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, prev_kv=True))
                )
            else:
                success.append(
                    rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=op.value, prev_kv=True))
                )
        failure = [rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=self._key(op.key))) for op in ops]
        request = rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure)
        before = self._revision
        for attempt in range(RETRIES):
            try:
                response = await self._call(self._kv.Txn, request)
                break
            except errors.Unavailable:
                # A failover: the transaction may or may not have been applied. If the keys now
                # hold exactly what it wrote, it was; otherwise it is sent again (its compares make
                # a second application impossible: they fail, and say why).
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(RETRY_DELAY * (attempt + 1))
                try:
                    applied = await self._applied(ops, before)
                except errors.Unavailable:
                    continue
                if applied is not None:
                    return applied
        revision = int(response.header.revision)
        if not response.succeeded:
            for op, answer in zip(ops, response.responses, strict=True):
                kvs = answer.response_range.kvs
                problem = check_op(op, _kv(kvs[0], len(self.prefix)) if kvs else None)
                if problem is not None:
                    raise problem
            raise errors.Conflict("the transaction's keys changed while it was checked; retry")
        out = []
        for op, answer in zip(ops, response.responses, strict=True):
            if op.type == "delete":
                prev = answer.response_delete_range.prev_kvs[0]
                out.append(KV(op.key, bytes(prev.value), int(prev.create_revision), revision))
            else:
                prev_kv = answer.response_put.prev_kv
                created = (
                    int(prev_kv.create_revision) if answer.response_put.HasField("prev_kv") else revision
                )
                out.append(KV(op.key, op.value, created, revision))
        return out

    async def _applied(self, ops: Sequence[Op], before: int) -> builtins.list[KV] | None:
        """The KVs `ops` produced, if the store shows that they were applied after `before`."""
        out = []
        for op in ops:
            current = await self.get(op.key)
            if op.type == "delete":
                return None  # a delete leaves nothing to recognise it by: send it again
            if current is None or current.value != op.value or current.mod_revision <= before:
                return None
            out.append(current)
        return out

    # -- history --------------------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        await self._call(
            self._kv.Range, rpc_pb2.RangeRequest(key=b"\0", count_only=True)
        )  # learn the revision
        revision = min(revision, self._revision)
        if revision <= self._compacted:
            return
        try:
            await self._call(self._kv.Compact, rpc_pb2.CompactionRequest(revision=revision, physical=True))
        except errors.Gone:
            pass  # another coordinator compacted further already
        self._compacted = max(self._compacted, revision)

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[StoreEvent]:
        """Events under `prefix` after `from_revision`; resumes across broken streams."""
        last = from_revision
        start = self._key(prefix)
        end = _prefix_end(start)
        while True:
            if last < self._compacted:  # known here already: no need to ask etcd
                raise errors.Gone(
                    f"resource version {last} is too old (history starts after {self._compacted}); "
                    "list again and watch from the list's resource version"
                )
            create = rpc_pb2.WatchCreateRequest(
                key=start, range_end=end, start_revision=last + 1, prev_kv=True
            )
            requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
            requests.put_nowait(rpc_pb2.WatchRequest(create_request=create))

            async def outgoing(
                queue: asyncio.Queue[rpc_pb2.WatchRequest | None] = requests,
            ) -> AsyncIterator[Any]:
                while (item := await queue.get()) is not None:
                    yield item

            call = self._watch.Watch(outgoing(), wait_for_ready=True)
            try:
                async for response in call:
                    if response.compact_revision:  # compacted by another coordinator
                        self._compacted = max(self._compacted, int(response.compact_revision))
                        raise errors.Gone(
                            f"resource version {last} is too old (etcd compacted at "
                            f"{response.compact_revision}); list again and watch from its resource version"
                        )
                    if response.canceled:
                        raise errors.Unavailable(f"etcd canceled the watch: {response.cancel_reason}")
                    for event in response.events:
                        yield self._event(event)
                        last = int(event.kv.mod_revision)
                    self._seen(int(response.header.revision))
                raise errors.Unavailable("etcd watch stream ended")
            except (grpc.aio.AioRpcError, errors.Unavailable) as exc:
                log.info("etcd watch on %s broke (%s); resuming after revision %d", prefix, exc, last)
                await asyncio.sleep(0.1)
            finally:
                requests.put_nowait(None)
                call.cancel()

    def _event(self, event: Any) -> StoreEvent:
        strip = len(self.prefix)
        prev = _kv(event.prev_kv, strip) if event.HasField("prev_kv") else None
        if event.type == kv_pb2.Event.DELETE:
            value = prev.value if prev else b""
            created = prev.create_revision if prev else 0
            key = event.kv.key.decode()[strip:]
            return StoreEvent("delete", KV(key, value, created, int(event.kv.mod_revision)), prev)
        return StoreEvent("put", _kv(event.kv, strip), prev)

    def _key(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel to etcd, shared with the leader election."""
        return self._channel

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def compacted(self) -> int:
        return self._compacted

    async def close(self) -> None:
        await self._channel.close()
