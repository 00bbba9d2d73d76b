"""The CLI's connection to the coordinator: one channel, typed helpers over ClusterService.

Credentials come from a client config (coordinator.client.config): mutual TLS
with a certificate, or TLS with a bearer token. Without one, a unix socket
uses local credentials and TCP is plain text (for --insecure coordinators).

Several coordinators (`server: a:6443,b:6443,c:6443`, a `servers` list, or
--server a,b,c): the channel uses the first that answers and moves on when it
breaks (rpc.coordinator_channel). A call that fails with UNAVAILABLE (the
coordinator died under it, or answered that it cannot serve) is made again,
up to once per server, when making it twice cannot do anything twice:
- reads (get, list, coordinators, cluster info);
- creates: every object has a name, so if the first attempt did land, the
  second fails with AlreadyExists (reported as such: the object is there);
- updates: they carry the resourceVersion read, so a second one after a
  landed first fails with Conflict; without one they write the same object;
- deletes: a second one after a landed first fails with NotFound.
Not repeated: signing a certificate (it would issue two) and streams (watch,
logs: the caller reopens them from what it saw); nor is a deadline (the call
may still be running).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from google.protobuf.message import Message

from atoll import errors, kinds, rpc
from atoll.kinds import KindInfo
from atoll.v1 import cluster_pb2, cluster_pb2_grpc
from coordinator.client.config import ClientConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
RETRY_PAUSE = 0.2  # seconds before the second attempt, doubled for each further one
# Items per List call when listing everything (kubectl's --chunk-size default).
DEFAULT_CHUNK_SIZE = 500


class Client:
    def __init__(self, server: str = "", *, config: ClientConfig | None = None) -> None:
        self.server = server or (config.server if config else "")
        if not self.server:
            raise ValueError("no server address: pass one or a config that names one")
        self.config = config
        # One server or several (a:6443,b:6443): a dead coordinator costs one reconnect.
        self._channel = rpc.coordinator_channel(
            self.server, credentials=config.credentials(self.server) if config else None
        )
        self.stub = cluster_pb2_grpc.ClusterServiceStub(self._channel)
        servers = self.server.split(",")
        # One attempt per coordinator (a single one: the caller sees UNAVAILABLE at once, as before).
        self.attempts = len(servers) if len(servers) > 1 else 1

    async def _again(self, call: Callable[[], Awaitable[T]]) -> T:
        """Make an idempotent call, again on UNAVAILABLE while there are servers to try."""
        for attempt in range(self.attempts):
            try:
                return await call()
            except errors.Unavailable as exc:
                if attempt + 1 >= self.attempts:
                    raise
                log.debug("%s: %s; trying again", self.server, exc)
                await asyncio.sleep(RETRY_PAUSE * 2**attempt)
        raise AssertionError("unreachable")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def create(self, obj: Message, *, dry_run: bool = False) -> Message:
        resp = await self._again(
            lambda: rpc.unary(
                self.stub.Create(
                    cluster_pb2.CreateRequest(object=kinds.wrap(obj), dry_run=dry_run),
                    timeout=DEFAULT_TIMEOUT,
                )
            )
        )
        return kinds.unwrap(resp.object)[1]

    async def update(self, obj: Message) -> Message:
        resp = await self._again(
            lambda: rpc.unary(
                self.stub.Update(cluster_pb2.UpdateRequest(object=kinds.wrap(obj)), timeout=DEFAULT_TIMEOUT)
            )
        )
        return kinds.unwrap(resp.object)[1]

    async def get(self, info: KindInfo, namespace: str, name: str) -> Message:
        resp = await self._again(
            lambda: rpc.unary(
                self.stub.Get(
                    cluster_pb2.GetRequest(kind=info.kind, namespace=namespace, name=name),
                    timeout=DEFAULT_TIMEOUT,
                )
            )
        )
        return kinds.unwrap(resp.object)[1]

    async def list_page(
        self, info: KindInfo, namespace: str = "", selector: str = "", *, limit: int = 0, token: str = ""
    ) -> cluster_pb2.ListResponse:
        """One page of a list; its continue_token (if any) fetches the next."""
        return await self._again(
            lambda: rpc.unary(
                self.stub.List(
                    cluster_pb2.ListRequest(
                        kind=info.kind,
                        namespace=namespace,
                        label_selector=selector,
                        limit=limit,
                        continue_token=token,
                    ),
                    timeout=DEFAULT_TIMEOUT,
                )
            )
        )

    async def list(
        self, info: KindInfo, namespace: str = "", selector: str = "", *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> tuple[list[Message], int]:
        """Every item, fetched `chunk_size` at a time (kubectl's --chunk-size; 0: as many as fit)."""
        items: list[Message] = []
        token = ""
        revision = 0
        while True:
            resp = await self.list_page(info, namespace, selector, limit=chunk_size, token=token)
            items.extend(kinds.unwrap(o)[1] for o in resp.items)
            revision = revision or resp.resource_version
            token = resp.continue_token
            if not token:
                return items, revision

    async def delete(self, info: KindInfo, namespace: str, name: str, *, orphan: bool = False) -> Message:
        resp = await self._again(
            lambda: rpc.unary(
                self.stub.Delete(
                    cluster_pb2.DeleteRequest(
                        kind=info.kind, namespace=namespace, name=name, orphan_dependents=orphan
                    ),
                    timeout=DEFAULT_TIMEOUT,
                )
            )
        )
        return kinds.unwrap(resp.object)[1]

    async def watch(
        self, info: KindInfo, namespace: str = "", selector: str = "", resource_version: int = 0
    ) -> AsyncIterator[tuple[int, Message]]:
        call = self.stub.Watch(
            cluster_pb2.WatchRequest(
                kind=info.kind,
                namespace=namespace,
                label_selector=selector,
                resource_version=resource_version,
            )
        )
        async for event in rpc.stream(call):
            yield event.type, kinds.unwrap(event.object)[1]

    async def logs(self, request: cluster_pb2.GetLogsRequest) -> AsyncIterator[bytes]:
        async for chunk in rpc.stream(self.stub.GetLogs(request)):
            yield chunk.data

    async def coordinators(self) -> cluster_pb2.ListCoordinatorsResponse:
        return await self._again(
            lambda: rpc.unary(
                self.stub.ListCoordinators(cluster_pb2.ListCoordinatorsRequest(), timeout=DEFAULT_TIMEOUT)
            )
        )

    async def cluster_info(self) -> cluster_pb2.GetClusterInfoResponse:
        return await self._again(
            lambda: rpc.unary(
                self.stub.GetClusterInfo(cluster_pb2.GetClusterInfoRequest(), timeout=DEFAULT_TIMEOUT)
            )
        )

    async def version(self) -> cluster_pb2.GetVersionResponse:
        return await self._again(
            lambda: rpc.unary(self.stub.GetVersion(cluster_pb2.GetVersionRequest(), timeout=DEFAULT_TIMEOUT))
        )

    async def sign_user_certificate(
        self, user: str, role: str, csr: bytes, ttl: float = 0
    ) -> cluster_pb2.SignUserCertificateResponse:
        return await rpc.unary(
            self.stub.SignUserCertificate(
                cluster_pb2.SignUserCertificateRequest(user=user, role=role, csr=csr, ttl_seconds=int(ttl)),
                timeout=DEFAULT_TIMEOUT,
            )
        )
