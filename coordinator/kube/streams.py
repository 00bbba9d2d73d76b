"""The streamed answers: watch (`?watch=1`) and pod logs (`pods/NAME/log`).

A watch is ClusterServicer.Watch written as Kubernetes watch events, one
JSON object per line: ADDED, MODIFIED, DELETED, BOOKMARK (when the client
allows them, after a quiet interval, with the revision it has seen), and 410
Gone (HTTP status, before the stream starts) when resourceVersion is older than
the store's history. `sendInitialEvents=true` (watch-list) replays every
object as ADDED, then a bookmark marked `k8s.io/initial-events-end`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from atoll import errors, kinds, labels
from atoll.v1 import cluster_pb2
from coordinator.api.cluster import ClusterServicer
from coordinator.kube import convert, selectors, status, tables
from coordinator.kube.access import Access, Caller
from coordinator.kube.handlers import Target, _int, _truthy
from coordinator.objects.registry import Registry

_TYPES = {
    cluster_pb2.EVENT_TYPE_ADDED: "ADDED",
    cluster_pb2.EVENT_TYPE_MODIFIED: "MODIFIED",
    cluster_pb2.EVENT_TYPE_DELETED: "DELETED",
}
_MAX_TIMEOUT = 3600.0


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


class Streams:
    def __init__(
        self,
        cluster: ClusterServicer,
        registry: Registry,
        access: Access,
        cache: convert.EncodeCache,
        *,
        bookmark_interval: float = 5.0,
    ) -> None:
        self.cache = cache
        self.cluster = cluster
        self.registry = registry
        self.access = access
        self.bookmark_interval = bookmark_interval

    async def watch(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        query = request.query
        resource = target.resource
        fields = selectors.parse(query.get("fieldSelector", ""))
        if target.name:  # GET /pods/NAME?watch=1 (old clients): a watch of one object
            fields = selectors.parse(f"metadata.name={target.name},{query.get('fieldSelector', '')}")
        selector = query.get("labelSelector", "")
        labels.parse(selector)  # refuse a bad selector with 422 before the stream starts
        text = query.get("resourceVersion", "") or "0"
        if not text.isdigit():
            raise errors.InvalidArgument(f"expected a revision number, got {text!r}", field="resourceVersion")
        revision = int(text)
        initial = _truthy(query.get("sendInitialEvents"))
        if initial:
            revision = 0
        if revision and revision < self.registry.store.compacted:
            raise errors.Gone(f"too old resource version: {revision} ({self.registry.store.compacted})")
        req = cluster_pb2.WatchRequest(
            kind=resource.info.kind,
            namespace=target.namespace,
            label_selector=selector,
            resource_version=revision,
        )
        ticket = await self.access.open_stream(caller, "Watch", req)
        try:
            return await self._serve_watch(req, target, request, fields, initial=initial)
        finally:
            self.access.close_stream("Watch", ticket)

    async def _serve_watch(
        self,
        req: cluster_pb2.WatchRequest,
        target: Target,
        request: web.Request,
        fields: selectors.FieldSelector,
        *,
        initial: bool,
    ) -> web.StreamResponse:
        query, resource, revision = request.query, target.resource, req.resource_version
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        table = tables.wants_table(request.headers.get("Accept", ""))
        timeout = min(float(_int(query, "timeoutSeconds") or _MAX_TIMEOUT), _MAX_TIMEOUT)
        seen = revision or self.registry.store.revision

        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        first_table = True

        visible: set[tuple[str, str]] = set()  # objects sent that match the field selector

        async def send(kind: str, obj: Any) -> None:
            nonlocal first_table, seen
            seen = max(seen, obj.metadata.resource_version)
            if not fields.empty:
                # As for labels: an object that stops matching (a pod leaving Running) is DELETED.
                key = (obj.metadata.namespace, obj.metadata.name)
                if fields.matches(obj) and kind != "DELETED":
                    visible.add(key)
                elif key in visible:
                    visible.discard(key)
                    kind = "DELETED"
                elif not fields.matches(obj):
                    return
            data = self.cache.to_json(obj)
            if table:
                data = tables.table(resource.plural, [data], with_columns=first_table)
                first_table = False
            await response.write(_line({"type": kind, "object": data}))

        queue: asyncio.Queue[cluster_pb2.WatchResponse | BaseException | None] = asyncio.Queue(maxsize=1024)

        async def pump() -> None:
            try:
                async for event in self.cluster.Watch(req, None):
                    await queue.put(event)
            except BaseException as exc:  # handed to the writer, which ends the stream
                await queue.put(exc)
                return
            await queue.put(None)

        task: asyncio.Task[None] | None = None
        deadline = time.monotonic() + timeout
        try:
            if revision == 0:
                # "Most recent", as in Kubernetes: every object as ADDED, then what follows the list.
                items, req.resource_version = await self._list_all(req)
                seen = req.resource_version
                for obj in items:
                    await send("ADDED", obj)
                if initial:
                    await response.write(_line(self._bookmark(resource.kind, seen, initial_end=True)))
            task = asyncio.create_task(pump(), name=f"kube-watch-{resource.plural}")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(
                        queue.get(), min(left, self.bookmark_interval) if bookmarks else left
                    )
                except TimeoutError:
                    if bookmarks:
                        await response.write(_line(self._bookmark(resource.kind, seen)))
                    continue
                if item is None:
                    break
                if isinstance(item, errors.AtollError):
                    await response.write(_line({"type": "ERROR", "object": status.from_error(item)}))
                    break
                if isinstance(item, BaseException):
                    raise item
                await send(_TYPES[item.type], kinds.unwrap(item.object)[1])
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _list_all(self, watch: cluster_pb2.WatchRequest) -> tuple[list[Message], int]:
        """Every object the watch covers, through the servicer's List (one snapshot, paged)."""
        req = cluster_pb2.ListRequest(
            kind=watch.kind, namespace=watch.namespace, label_selector=watch.label_selector
        )
        items: list[Message] = []
        while True:
            page = await self.cluster.list_objects(req)
            items += [kinds.unwrap(o)[1] for o in page.items]
            if not page.continue_token:
                return items, page.resource_version
            req.continue_token = page.continue_token

    @staticmethod
    def _bookmark(kind: str, revision: int, *, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1", "metadata": meta}}

    async def logs(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        query = request.query
        req = cluster_pb2.GetLogsRequest(
            namespace=target.namespace or "default",
            pod=target.name,
            container=query.get("container", ""),
            follow=_truthy(query.get("follow")),
            tail_lines=_int(query, "tailLines"),
            previous=_truthy(query.get("previous")),
            timestamps=_truthy(query.get("timestamps")),
        )
        ticket = await self.access.open_stream(caller, "GetLogs", req)
        try:
            return await self._serve_logs(req, request)
        finally:
            self.access.close_stream("GetLogs", ticket)

    async def _serve_logs(self, req: cluster_pb2.GetLogsRequest, request: web.Request) -> web.StreamResponse:
        chunks = self._chunks(req)
        # The first chunk (or error) before the headers: a missing pod is a 404, not an empty 200.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = b""
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            if first:
                await response.write(first)
            async for data in chunks:
                await response.write(data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            await chunks.aclose()
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _chunks(self, req: cluster_pb2.GetLogsRequest) -> AsyncGenerator[bytes, None]:
        async for chunk in self.cluster.GetLogs(req, None):
            yield chunk.data
