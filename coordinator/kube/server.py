"""The Kubernetes REST API's HTTPS server (`coordinator serve --kube-listen HOST:PORT`).

aiohttp on the coordinator's event loop, beside the gRPC server, with the
same serving certificate and CA: a client certificate is asked for but not
required (bearer tokens arrive without one), and the handshake verifies one
that is sent against the cluster CA. A renewed serving certificate is picked
up for new connections without a restart.

Served: /version, /healthz, /livez, /readyz, /api, /apis (aggregated and
legacy discovery), /api/v1 (APIResourceList) and the resources of
coordinator.kube.resources under /api/v1. OpenAPI (/openapi/v2, /openapi/v3)
answers 404, after which kubectl validates on the server (fieldValidation);
exec, attach, port-forward and service proxy answer 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from atoll import errors, tls
from atoll.limits import Limits
from coordinator.api.cluster import ClusterServicer
from coordinator.auth.interceptor import AuthInterceptor
from coordinator.kube import convert, discovery, openapi, resources, status
from coordinator.kube.access import Access, Caller
from coordinator.kube.handlers import Handlers, Target, json_response, parse_path
from coordinator.kube.streams import Streams
from coordinator.objects.registry import Registry

log = logging.getLogger(__name__)

_CALLER = web.RequestKey("caller", Caller)
_UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
_RELOAD_INTERVAL = 30.0


def _error_response(exc: errors.AtollError, target: Target | None = None) -> web.Response:
    kind = target.resource.plural if target is not None else ""
    name = target.name if target is not None else ""
    body = status.from_error(exc, kind=kind, name=name)
    return json_response(body, body["code"])


class KubeApi:
    """The aiohttp application: routing, authentication and errors as Status."""

    def __init__(
        self,
        cluster: ClusterServicer,
        registry: Registry,
        interceptor: AuthInterceptor,
        *,
        version: str = "0.1.0",
        bookmark_interval: float = 5.0,
        limits: Limits | None = None,
    ) -> None:
        self.access = Access(interceptor, limits)
        cache = convert.EncodeCache()
        self.handlers = Handlers(cluster, self.access, cache)
        self.streams = Streams(cluster, registry, self.access, cache, bookmark_interval=bookmark_interval)
        self.version = version
        self.app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024 * 1024)
        self.app.router.add_get("/version", self._version)
        for probe in _UNAUTHENTICATED_PATHS:
            self.app.router.add_get(probe, self._ok)
        self.app.router.add_get("/api", self._api)
        self.app.router.add_get("/apis", self._apis)
        self.app.router.add_get("/api/v1", self._api_v1)
        self.app.router.add_get("/openapi/v3", self._openapi_root)
        self.app.router.add_get("/openapi/v3/api/v1", self._openapi_core)
        self.app.router.add_route("*", "/api/v1/{tail:.+}", self._resource)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            if request.path not in _UNAUTHENTICATED_PATHS:
                ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
                caller = await self.access.authenticate(
                    ssl_object, request.headers.get("Authorization", ""), request.remote or ""
                )
                request[_CALLER] = caller
            response: web.StreamResponse = await handler(request)
            return response
        except errors.AtollError as exc:
            return _error_response(exc)
        except web.HTTPNotFound:
            return json_response(
                status.status(404, "NotFound", "the server could not find the requested resource"), 404
            )
        except web.HTTPMethodNotAllowed as exc:
            return json_response(status.not_allowed(str(exc)), 405)

    async def _ok(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return json_response(discovery.version(self.version))

    async def _api(self, request: web.Request) -> web.StreamResponse:
        return _discovery(request, discovery.aggregated_core, lambda: discovery.api_versions(request.host))

    async def _apis(self, request: web.Request) -> web.StreamResponse:
        return _discovery(request, discovery.aggregated_groups, discovery.api_group_list)

    async def _api_v1(self, request: web.Request) -> web.StreamResponse:
        return json_response(discovery.api_resource_list())

    async def _openapi_root(self, request: web.Request) -> web.StreamResponse:
        return json_response(openapi.root())

    async def _openapi_core(self, request: web.Request) -> web.StreamResponse:
        return json_response(openapi.DOCUMENT)

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        target: Target | None = None
        try:
            target = parse_path(request.match_info["tail"])
            return await self._dispatch(request[_CALLER], target, request)
        except errors.AtollError as exc:
            return _error_response(exc, target)

    async def _dispatch(self, caller: Caller, target: Target, request: web.Request) -> web.StreamResponse:
        method = request.method
        handlers, streams = self.handlers, self.streams
        if target.sub in resources.STREAMING:
            return json_response(
                status.not_allowed(
                    f"{target.resource.plural}/{target.sub} needs a streaming upgrade (SPDY or WebSocket), which "
                    "Atoll's Kubernetes API does not serve; use the coordinator CLI or the gRPC API"
                ),
                405,
            )
        if method == "GET":
            if target.sub == "log":
                return await streams.logs(caller, target, request)
            if request.query.get("watch", "").lower() in ("1", "true"):
                return await streams.watch(caller, target, request)
            if target.sub == "scale":
                return json_response(await handlers.scale(caller, target))
            if target.name:
                return await handlers.get(caller, target, request)
            return await handlers.list(caller, target, request)
        if target.sub == "log":
            raise errors.Unimplemented(f"{method} on pods/log: only GET")
        if method == "POST":
            return await handlers.create(caller, target, request)
        if method == "PUT" and target.name:
            return await handlers.update(caller, target, request)
        if method == "PATCH" and target.name:
            return await handlers.patch(caller, target, request)
        if method == "DELETE":
            return await handlers.delete(caller, target, request)
        raise errors.Unimplemented(f"{method} is not allowed on {request.path}")


def ssl_context(files: tls.KeyPairFiles) -> ssl.SSLContext:
    """TLS 1.2+ with the coordinator's serving certificate; a client certificate is optional."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])  # no h2: kubectl then speaks HTTP/1.1
    return context


class KubeServer:
    """The running HTTPS (or, with --insecure, loopback HTTP) server."""

    def __init__(self, api: KubeApi, host: str, port: int, files: tls.KeyPairFiles | None) -> None:
        self.api = api
        self._host, self._port = host, port
        self._files = files
        self._context = ssl_context(files) if files is not None else None
        self._runner = web.AppRunner(
            api.app, handle_signals=False, access_log=None, handler_cancellation=True
        )
        self._reloader: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._context)
        await site.start()
        server = site._server  # the bound port, for port 0
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        if self._files is not None:
            self._reloader = asyncio.create_task(self._reload(), name="kube-api-certificate")
        scheme = "https" if self._context is not None else "http"
        log.info("Kubernetes API on %s://%s:%d", scheme, self._host, self.port)

    async def _reload(self) -> None:
        """Load a renewed serving certificate into the context: new handshakes use it."""
        assert self._files is not None and self._context is not None
        stamp = self._files.stamp()
        while True:
            await asyncio.sleep(_RELOAD_INTERVAL)
            try:
                now = self._files.stamp()
                if now != stamp:
                    self._context.load_cert_chain(str(self._files.cert), str(self._files.key))
                    stamp = now
                    log.info("Kubernetes API: serving the renewed certificate %s", self._files.cert)
            except (OSError, ssl.SSLError) as exc:
                log.warning("Kubernetes API: keeping the current certificate: %s", exc)

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        await self._runner.cleanup()


def _discovery(
    request: web.Request, aggregated_doc: Callable[[str], Any], legacy_doc: Callable[[], Any]
) -> web.StreamResponse:
    """The aggregated discovery document when the client asks for it (current kubectl does,
    first), else the legacy one."""
    aggregated = discovery.wants_aggregated(request.headers.get("Accept", ""))
    if aggregated:
        return json_response(
            aggregated_doc(aggregated),
            content_type=discovery.AGGREGATED_V2 if aggregated == "v2" else discovery.AGGREGATED_V2BETA1,
        )
    return json_response(legacy_doc())
