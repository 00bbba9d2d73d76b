"""/api/v1 requests -> ClusterService calls on the same servicer the gRPC API uses.

Every write goes through ClusterServicer.Create/Update/Delete, so defaulting,
validation, admission (pod security, quotas, external IPs), cluster IP
allocation and dependents are what they are on gRPC; reads go through
Get/List/Watch/GetLogs. This module only parses the request and shapes the
answer (objects, lists, Tables, Scale, Status).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.v1 import cluster_pb2, workloads_pb2
from coordinator.api.cluster import ClusterServicer
from coordinator.kube import convert, patch, resources, selectors, status, tables
from coordinator.kube.access import Access, Caller
from coordinator.kube.resources import Resource

log = logging.getLogger(__name__)

_PATCH_ATTEMPTS = 8


@dataclass(frozen=True)
class Target:
    """What a /api/v1/... path names."""

    resource: Resource
    namespace: str  # "" for cluster-scoped kinds, or a namespaced kind across all namespaces
    name: str = ""
    sub: str = ""


def parse_path(tail: str) -> Target:
    parts = [p for p in tail.split("/") if p]
    namespace = ""
    if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] in resources.BY_PLURAL:
        namespace, parts = parts[1], parts[2:]
    if not parts or parts[0] not in resources.BY_PLURAL or len(parts) > 3:
        raise errors.NotFound("the server could not find the requested resource")
    resource = resources.BY_PLURAL[parts[0]]
    if namespace and not resource.namespaced:
        raise errors.NotFound("the server could not find the requested resource")
    name = parts[1] if len(parts) > 1 else ""
    sub = parts[2] if len(parts) > 2 else ""
    if sub and sub not in resource.subresources:
        raise errors.NotFound(f"{resource.plural} has no subresource {sub!r}")
    return Target(resource, namespace, name, sub)


def json_response(body: Any, code: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=code,
        headers={"Content-Type": content_type},
    )


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _int(query: Any, key: str) -> int:
    text = query.get(key)
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise errors.InvalidArgument(f"expected an integer, got {text!r}", field=key) from None


def _dry_run(query: Any, body: Any = None) -> bool:
    values = query.getall("dryRun", []) if hasattr(query, "getall") else []
    if isinstance(body, dict) and isinstance(body.get("dryRun"), list):
        values = [*values, *body["dryRun"]]
    return "All" in values


class Handlers:
    def __init__(self, cluster: ClusterServicer, access: Access, cache: convert.EncodeCache) -> None:
        self.cluster = cluster
        self.access = access
        self.cache = cache

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        obj = await self.fetch(caller, target)
        data = self.cache.to_json(obj)
        if tables.wants_table(request.headers.get("Accept", "")):
            meta = data.get("metadata") or {}
            return json_response(
                tables.table(
                    target.resource.plural, [data], resource_version=str(meta.get("resourceVersion", ""))
                )
            )
        return json_response(data)

    async def fetch(self, caller: Caller, target: Target) -> Message:
        info = target.resource.info
        req = cluster_pb2.GetRequest(kind=info.kind, namespace=target.namespace, name=target.name)
        response = await self.access.call(caller, "Get", req, self.cluster.Get)
        return kinds.unwrap(response.object)[1]

    async def list(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        query = request.query
        fields = selectors.parse(query.get("fieldSelector", ""))
        info = target.resource.info
        req = cluster_pb2.ListRequest(
            kind=info.kind,
            namespace=target.namespace,
            label_selector=query.get("labelSelector", ""),
            limit=_int(query, "limit"),
            continue_token=query.get("continue", ""),
        )
        response = await self.access.call(caller, "List", req, self.cluster.list_objects)
        items = [kinds.unwrap(o)[1] for o in response.items]
        data = [self.cache.to_json(o) for o in items if fields.empty or fields.matches(o)]
        if tables.wants_table(request.headers.get("Accept", "")):
            return json_response(
                tables.table(
                    target.resource.plural,
                    data,
                    resource_version=str(response.resource_version),
                    continue_token=response.continue_token,
                )
            )
        body = convert.list_json(target.resource, data, response.resource_version, response.continue_token)
        if response.continue_token and response.HasField("remaining_item_count"):
            body["metadata"]["remainingItemCount"] = response.remaining_item_count
        return json_response(body)

    # -- writes ---------------------------------------------------------------------------------

    async def create(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        if target.name:
            raise errors.Unimplemented(
                f"POST to a named {target.resource.singular}: create on the collection"
            )
        body = await _body(request)
        obj = convert.from_json(target.resource, target.namespace, body)
        req = cluster_pb2.CreateRequest(object=kinds.wrap(obj), dry_run=_dry_run(request.query))
        try:
            response = await self.access.call(caller, "Create", req, self.cluster.Create)
        except errors.InvalidArgument as exc:
            exc.object_name = obj.metadata.name  # type: ignore[attr-defined]  # for the Status
            raise
        return json_response(convert.to_json(kinds.unwrap(response.object)[1]), 201)

    async def update(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        if target.sub == "scale":
            return await self.update_scale(caller, target, await _body(request))
        if target.sub:
            raise errors.Unimplemented(f"PUT on {target.resource.plural}/{target.sub}")
        obj = convert.from_json(target.resource, target.namespace, await _body(request), name=target.name)
        return json_response(await self._update(caller, obj, _dry_run(request.query)))

    async def _update(self, caller: Caller, obj: Message, dry_run: bool = False) -> dict[str, Any]:
        req = cluster_pb2.UpdateRequest(object=kinds.wrap(obj), dry_run=dry_run)
        try:
            response = await self.access.call(caller, "Update", req, self.cluster.Update)
        except errors.InvalidArgument as exc:
            exc.object_name = obj.metadata.name  # type: ignore[attr-defined]  # for the Status
            raise
        return convert.to_json(kinds.unwrap(response.object)[1])

    async def patch(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "")
        kind = content_type.split(";")[0].strip().lower()
        if kind not in (patch.MERGE, patch.STRATEGIC):
            return json_response(
                status.status(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"{patch.MERGE}, {patch.STRATEGIC}",
                ),
                415,
            )
        body = await _body(request)
        if target.sub == "scale":
            current = await self.scale(caller, target)
            patched = patch.apply(content_type, current, body)
            if not _pinned(body):  # the read above is not a precondition: retry on conflicts
                patched.get("metadata", {}).pop("resourceVersion", None)
            return await self.update_scale(caller, target, patched)
        if target.sub:
            raise errors.Unimplemented(f"PATCH on {target.resource.plural}/{target.sub}")
        pinned = _pinned(body)
        for _ in range(_PATCH_ATTEMPTS):
            current = convert.to_json(await self.fetch(caller, target))
            patched = patch.apply(content_type, current, body)
            obj = convert.from_json(target.resource, target.namespace, patched, name=target.name)
            try:
                return json_response(await self._update(caller, obj, _dry_run(request.query)))
            except errors.Conflict:
                if pinned:
                    raise
        raise errors.Conflict(f'{target.resource.plural} "{target.name}" kept changing; patch again')

    async def delete(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        if not target.name:
            raise errors.Unimplemented(
                f"deleting a collection of {target.resource.plural}: delete each one (kubectl delete -l does)"
            )
        if target.sub:
            raise errors.Unimplemented(f"DELETE on {target.resource.plural}/{target.sub}")
        options = await _body(request, optional=True) or {}
        policy = request.query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise errors.InvalidArgument(
                f"expected Background, Foreground or Orphan, got {policy!r}", field="propagationPolicy"
            )
        orphan = policy == "Orphan" or options.get("orphanDependents") is True
        if request.query.get("orphanDependents") is not None:
            orphan = _truthy(request.query.get("orphanDependents"))
        preconditions = options.get("preconditions") or {}
        expected = preconditions.get("resourceVersion") or ""
        info = target.resource.info
        if _dry_run(request.query, options):
            obj = await self.fetch(caller, target)
            return json_response(convert.to_json(obj))
        req = cluster_pb2.DeleteRequest(
            kind=info.kind,
            namespace=target.namespace,
            name=target.name,
            resource_version=int(expected) if str(expected).isdigit() else 0,
            orphan_dependents=orphan,
        )
        response = await self.access.call(caller, "Delete", req, self.cluster.Delete)
        return json_response(convert.to_json(kinds.unwrap(response.object)[1]))

    # -- the scale subresource of replication controllers ----------------------------------------

    async def scale(self, caller: Caller, target: Target) -> dict[str, Any]:
        rc = await self.fetch(caller, target)
        assert isinstance(rc, workloads_pb2.ReplicationController)
        return _scale_of(rc)

    async def update_scale(self, caller: Caller, target: Target, body: Any) -> web.StreamResponse:
        spec = body.get("spec") if isinstance(body, dict) else None
        replicas = spec.get("replicas") if isinstance(spec, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.InvalidArgument(
                f"must be a non-negative integer, got {replicas!r}", field="spec.replicas"
            )
        expected = str((body.get("metadata") or {}).get("resourceVersion") or "")
        for _ in range(_PATCH_ATTEMPTS):
            rc = await self.fetch(caller, target)
            assert isinstance(rc, workloads_pb2.ReplicationController)
            if expected and str(rc.metadata.resource_version) != expected:
                raise errors.Conflict(
                    f'replicationcontrollers "{target.name}" was modified (now at '
                    f"{rc.metadata.resource_version}, you sent {expected}); read it again and retry"
                )
            rc.spec.replicas = replicas
            try:
                await self._update(caller, rc)
            except errors.Conflict:
                if expected:
                    raise
                continue
            return json_response(await self.scale(caller, target))
        raise errors.Conflict(f'replicationcontrollers "{target.name}" kept changing; scale again')


def _pinned(body: Any) -> bool:
    """Whether a patch names the resourceVersion it applies to (then a conflict is the caller's)."""
    return isinstance(body, dict) and bool((body.get("metadata") or {}).get("resourceVersion"))


def _scale_of(rc: workloads_pb2.ReplicationController) -> dict[str, Any]:
    meta = convert.to_json(rc)["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": rc.spec.replicas if rc.spec.HasField("replicas") else 1},
        "status": {
            "replicas": rc.status.replicas,
            "selector": ",".join(f"{k}={v}" for k, v in sorted(rc.spec.selector.items())),
        },
    }


async def _body(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw:
        if optional:
            return None
        raise errors.InvalidArgument("the request has no body", field="body")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"the body is not JSON: {exc}", field="body") from None
