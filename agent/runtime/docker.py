"""DockerRuntime: ContainerRuntime on the Docker Engine API (docker SDK).

Every SDK call is blocking, so each runs on a dedicated thread pool under its
own deadline: a stuck engine call fails that one pod's sync with
RuntimeTimeout instead of stalling the node. Inspections are cached per
(container, state) so that a relist of an idle node costs one list call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils
import requests

from agent.runtime.base import (
    LABEL_SANDBOX_NETWORK,
    BridgeNetwork,
    ContainerInfo,
    ContainerSpec,
    ImagePullError,
    NetworkResult,
    PodNetworkSpec,
    RuntimeError_,
    RuntimeTimeout,
    State,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_ZERO_TIME = "0001-01-01T00:00:00Z"

_OPT_MTU = "com.docker.network.driver.mtu"
_OPT_BRIDGE = "com.docker.network.bridge.name"
_OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"


def parse_docker_time(value: str | None) -> dt.datetime | None:
    """Docker's RFC 3339 timestamps carry nanoseconds; Python takes microseconds."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _explain(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)


class DockerRuntime:
    def __init__(
        self,
        base_url: str,
        *,
        call_timeout: float = 60.0,
        pull_timeout: float = 600.0,
        max_workers: int = 16,
    ) -> None:
        self._base_url = base_url
        self._api = docker.APIClient(base_url=base_url, timeout=int(call_timeout), max_pool_size=max_workers)
        self._call_timeout = call_timeout
        self._pull_timeout = pull_timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="docker"
        )
        self._inspect_cache: dict[str, tuple[str, ContainerInfo]] = {}

    async def _call(
        self, fn: Callable[..., T], *args: Any, deadline: float | None = None, **kwargs: Any
    ) -> T:
        """Run one blocking SDK call on the pool; `deadline` defaults to the call timeout."""
        loop = asyncio.get_running_loop()
        name = getattr(fn, "__name__", "call")
        limit = deadline or self._call_timeout
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs)), limit
            )
        except TimeoutError:
            raise RuntimeTimeout(f"docker {name} did not return within {limit:.0f}s") from None
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise RuntimeError_(f"docker {name}: {_explain(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise RuntimeError_(f"docker engine at {self._base_url} unreachable: {exc}") from None

    async def version(self) -> str:
        info = await self._call(self._api.version)
        return f"docker://{info.get('Version', 'unknown')}"

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" if v else k for k, v in labels.items()]}
        summaries = await self._call(self._api.containers, all=True, filters=filters)
        live_ids = set()
        result = []
        for summary in summaries:
            cid = summary["Id"]
            live_ids.add(cid)
            state = summary.get("State", "")
            cached = self._inspect_cache.get(cid)
            if cached is not None and cached[0] == state:
                result.append(cached[1])
                continue
            try:
                data = await self._call(self._api.inspect_container, cid)
            except docker.errors.NotFound:
                continue  # removed between list and inspect
            info = self._to_info(data)
            self._inspect_cache[cid] = (state, info)
            result.append(info)
        # A cached container that carries the filter's labels but was not listed is gone.
        for cid, (_, info) in list(self._inspect_cache.items()):
            if cid not in live_ids and all(
                info.labels.get(k) == v or (not v and k in info.labels) for k, v in labels.items()
            ):
                del self._inspect_cache[cid]
        return result

    def forget(self, container_id: str) -> None:
        self._inspect_cache.pop(container_id, None)

    @staticmethod
    def _to_info(data: Mapping[str, Any]) -> ContainerInfo:
        state = data.get("State") or {}
        config = data.get("Config") or {}
        net = data.get("NetworkSettings") or {}
        ip = net.get("IPAddress") or ""
        if not ip:
            for endpoint in (net.get("Networks") or {}).values():
                if endpoint and endpoint.get("IPAddress"):
                    ip = endpoint["IPAddress"]
                    break
        status: State = state.get("Status", "created")
        return ContainerInfo(
            id=data["Id"],
            name=str(data.get("Name", "")).lstrip("/"),
            image=config.get("Image", ""),
            image_id=data.get("Image", ""),
            labels=dict(config.get("Labels") or {}),
            state=status,
            exit_code=int(state.get("ExitCode") or 0),
            error=state.get("Error") or "",
            oom_killed=bool(state.get("OOMKilled")),
            started_at=parse_docker_time(state.get("StartedAt")),
            finished_at=parse_docker_time(state.get("FinishedAt")),
            created_at=parse_docker_time(data.get("Created")),
            ip=ip,
            pid=int(state.get("Pid") or 0),
        )

    async def image_present(self, ref: str) -> bool:
        try:
            await self._call(self._api.inspect_image, ref)
        except docker.errors.NotFound:
            return False
        return True

    async def image_user(self, ref: str) -> str:
        try:
            data = await self._call(self._api.inspect_image, ref)
        except docker.errors.APIError as exc:
            raise RuntimeError_(f"docker inspect {ref}: {_explain(exc)}") from None
        return str((data.get("Config") or {}).get("User") or "")

    def _pull_sync(self, ref: str, auth: Mapping[str, str] | None) -> None:
        repo, tag = docker.utils.parse_repository_tag(ref)
        if not tag:
            tag = "latest"
        if tag.startswith("sha256:"):
            # parse_repository_tag splits a digest off after '@'.
            repo, tag = f"{repo}@{tag}", None
        try:
            for line in self._api.pull(
                repo, tag=tag, stream=True, decode=True, auth_config=dict(auth) if auth else None
            ):
                if isinstance(line, dict) and line.get("error"):
                    raise ImagePullError(str(line["error"]))
        except docker.errors.APIError as exc:
            raise ImagePullError(_explain(exc)) from None

    async def pull_image(self, ref: str, auth: Mapping[str, str] | None = None) -> None:
        try:
            await self._call(self._pull_sync, ref, auth, deadline=self._pull_timeout)
        except docker.errors.NotFound as exc:
            raise ImagePullError(_explain(exc)) from None
        except RuntimeTimeout:
            # A pull that outlives its deadline is a failed pull (ErrImagePull), not an engine fault.
            raise ImagePullError(f"pulling {ref} did not finish within {self._pull_timeout:.0f}s") from None

    async def registry_config(self) -> dict[str, Any]:
        """`docker info`'s RegistryConfig: the insecure registries and mirrors the engine uses now.

        Not part of ContainerRuntime: agent.registries.DaemonJsonConfigurator
        takes it as its `check`, to confirm that a reload took effect.
        """
        info = await self._call(self._api.info)
        return dict(info.get("RegistryConfig") or {})

    def _import_sync(self, rootfs_tar: bytes, ref: str, changes: tuple[str, ...]) -> None:
        repo, tag = docker.utils.parse_repository_tag(ref)
        self._api.import_image_from_data(
            rootfs_tar, repository=repo, tag=tag or "latest", changes=list(changes)
        )

    async def import_image(self, rootfs_tar: bytes, ref: str, changes: tuple[str, ...] = ()) -> None:
        await self._call(self._import_sync, rootfs_tar, ref, changes)

    def _create_sync(self, spec: ContainerSpec) -> str:
        port_bindings: dict[str, list[tuple[str, int]]] = {}
        exposed: list[tuple[int, str]] = []
        for port in spec.ports:
            key = f"{port.container_port}/{port.protocol}"
            exposed.append((port.container_port, port.protocol))
            if port.host_port:
                port_bindings.setdefault(key, []).append((port.host_ip or "", port.host_port))
        mounts = [
            docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ]
        if spec.join_container:
            network_mode = f"container:{spec.join_container}"
            ipc_mode = f"container:{spec.join_container}"
        else:
            network_mode = spec.network or "none"
            ipc_mode = "shareable"
        host_config = self._api.create_host_config(
            port_bindings=port_bindings or None,
            mounts=mounts or None,
            network_mode=network_mode,
            ipc_mode=ipc_mode,
            init=spec.init or None,
            cpu_shares=spec.cpu_shares or None,
            nano_cpus=spec.nano_cpus or None,
            mem_limit=spec.memory_limit or None,
            read_only=spec.read_only_rootfs or None,
            extra_hosts=[f"{name}:{address}" for name, address in spec.extra_hosts] or None,
        )
        created = self._api.create_container(
            image=spec.image,
            name=spec.name,
            entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
            command=list(spec.cmd) if spec.cmd is not None else None,
            environment=[f"{k}={v}" for k, v in spec.env] or None,
            labels=dict(spec.labels),
            working_dir=spec.working_dir or None,
            user=spec.user or None,
            # A container that joins another's network namespace cannot set a hostname.
            hostname=None if spec.join_container else (spec.hostname or None),
            ports=[(p, proto) for p, proto in exposed] or None,
            host_config=host_config,
            stop_timeout=spec.stop_timeout,
        )
        return str(created["Id"])

    async def create_container(self, spec: ContainerSpec) -> str:
        try:
            return await self._call(self._create_sync, spec)
        except docker.errors.NotFound as exc:
            raise RuntimeError_(f"docker create {spec.name}: {_explain(exc)}") from None

    async def start_container(self, container_id: str) -> None:
        try:
            await self._call(self._api.start, container_id)
        except docker.errors.NotFound as exc:
            raise RuntimeError_(f"docker start: {_explain(exc)}") from None

    async def network_namespace(self, container_id: str) -> str:
        try:
            data = await self._call(self._api.inspect_container, container_id)
        except docker.errors.NotFound:
            return ""
        if not (data.get("State") or {}).get("Running"):
            return ""
        return str((data.get("NetworkSettings") or {}).get("SandboxKey") or "")

    async def stop_container(self, container_id: str, grace_seconds: int | None) -> None:
        try:
            await self._call(
                self._api.stop,
                container_id,
                timeout=grace_seconds,
                deadline=(grace_seconds or 30) + self._call_timeout,
            )
        except docker.errors.NotFound:
            return

    async def remove_container(self, container_id: str) -> None:
        self.forget(container_id)
        try:
            await self._call(self._api.remove_container, container_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except RuntimeError_ as exc:
            if "already in progress" in str(exc):
                return
            raise

    async def logs(
        self, container_id: str, *, follow: bool, tail: int, timestamps: bool
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=256)
        stop = threading.Event()
        holder: dict[str, Any] = {}

        def deliver(item: bytes | BaseException | None) -> bool:
            # Bounded hand-over that gives up once the consumer has gone away.
            while not stop.is_set():
                future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
                try:
                    future.result(timeout=0.5)
                    return True
                except concurrent.futures.TimeoutError:
                    future.cancel()
            return False

        def pump() -> None:
            try:
                stream = self._api.logs(
                    container_id,
                    stream=True,
                    follow=follow,
                    tail=tail if tail > 0 else "all",
                    timestamps=timestamps,
                )
                holder["stream"] = stream
                for chunk in stream:
                    if not deliver(chunk):
                        return
                deliver(None)
            except BaseException as exc:  # handed to the consumer below
                if not stop.is_set():
                    deliver(exc)

        task = loop.run_in_executor(self._pool, pump)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, docker.errors.NotFound):
                    raise RuntimeError_(f"container {container_id[:12]} not found")
                if isinstance(item, BaseException):
                    raise RuntimeError_(f"docker logs: {_explain(item)}")  # type: ignore[arg-type]
                yield item
        finally:
            stop.set()
            stream = holder.get("stream")
            if stream is not None and hasattr(stream, "close"):
                try:
                    stream.close()
                except Exception:  # closing a half-read HTTP stream may raise; nothing to do
                    log.debug("closing log stream failed", exc_info=True)
            while not queue.empty():
                queue.get_nowait()
            task.cancel()

    # -- pod network ------------------------------------------------------------------------

    @staticmethod
    def network_mismatch(data: Mapping[str, Any], spec: PodNetworkSpec) -> list[str]:
        """How an inspected network differs from `spec` (empty: it matches)."""
        options = data.get("Options") or {}
        configs = (data.get("IPAM") or {}).get("Config") or []
        have = [(c.get("Subnet", ""), c.get("Gateway", ""), c.get("IPRange") or "") for c in configs]
        checks = (
            ("driver", data.get("Driver"), "bridge"),
            ("subnet/gateway/range", have, [(spec.subnet, spec.gateway, spec.ip_range)]),
            ("mtu", options.get(_OPT_MTU), str(spec.mtu)),
            ("bridge name", options.get(_OPT_BRIDGE), spec.bridge_name),
            ("ip masquerade", options.get(_OPT_MASQ, "true"), str(spec.masquerade).lower()),
        )
        return [f"{what} {got!r} (want {want!r})" for what, got, want in checks if got != want]

    def _ensure_network_sync(self, spec: PodNetworkSpec) -> NetworkResult:
        found = [n for n in self._api.networks(names=[spec.name]) if n.get("Name") == spec.name]
        result: NetworkResult = "created"
        if found:
            data = self._api.inspect_network(found[0]["Id"])
            wrong = self.network_mismatch(data, spec)
            if not wrong:
                return "unchanged"
            users = set(data.get("Containers") or {})
            users |= {c["Id"] for c in self._api.containers(all=True, filters={"network": spec.name})}
            # Sandboxes the agent plumbed onto its bridge: the engine does not count them.
            label = f"{LABEL_SANDBOX_NETWORK}={spec.name}"
            users |= {c["Id"] for c in self._api.containers(all=True, filters={"label": label})}
            if users and not self.network_mismatch(data, replace(spec, ip_range=_ip_range_of(data))):
                # Only the range differs (sandbox networks were switched on or off): the network
                # stays as it is while used; pods get the engine's network until it can be remade.
                log.info(
                    "docker network %s keeps its IP range while in use (wanted %r)", spec.name, spec.ip_range
                )
                return "unchanged"
            if users:
                log.error(
                    "docker network %s differs from this node's lease (%s) but %d container(s) use it: "
                    "keeping it; new pods get addresses outside the lease until they are gone",
                    spec.name,
                    "; ".join(wrong),
                    len(users),
                )
                return "in-use-mismatch"
            log.warning("recreating docker network %s: %s", spec.name, "; ".join(wrong))
            self._api.remove_network(data["Id"])
            result = "recreated"
        ipam = docker.types.IPAMConfig(
            pool_configs=[
                docker.types.IPAMPool(subnet=spec.subnet, gateway=spec.gateway, iprange=spec.ip_range or None)
            ]
        )
        self._api.create_network(
            spec.name,
            driver="bridge",
            ipam=ipam,
            options={
                _OPT_MTU: str(spec.mtu),
                _OPT_BRIDGE: spec.bridge_name,
                _OPT_MASQ: str(spec.masquerade).lower(),
            },
            labels={"io.atoll.managed": "true"},
            check_duplicate=True,
        )
        log.info(
            "docker network %s %s: %s via %s, mtu %d", spec.name, result, spec.subnet, spec.gateway, spec.mtu
        )
        return result

    async def ensure_network(self, spec: PodNetworkSpec) -> NetworkResult:
        try:
            return await self._call(self._ensure_network_sync, spec)
        except docker.errors.NotFound as exc:  # removed or created concurrently; the next call settles it
            raise RuntimeError_(f"docker network {spec.name}: {_explain(exc)}") from None

    def _remove_network_sync(self, name: str) -> None:
        for net in self._api.networks(names=[name]):
            if net.get("Name") == name:
                self._api.remove_network(net["Id"])

    async def remove_network(self, name: str) -> None:
        try:
            await self._call(self._remove_network_sync, name)
        except docker.errors.NotFound:
            return

    def _bridge_network_sync(self, name: str) -> BridgeNetwork | None:
        try:
            data = self._api.inspect_network(name)
        except docker.errors.NotFound:
            return None
        return bridge_network_of(data)

    async def bridge_network(self, name: str) -> BridgeNetwork | None:
        return await self._call(self._bridge_network_sync, name)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api.close()


def bridge_network_of(data: Mapping[str, Any]) -> BridgeNetwork | None:
    """An inspected network as a BridgeNetwork: a bridge with one IPv4 subnet, else None."""
    if data.get("Driver") != "bridge":
        return None
    options = data.get("Options") or {}
    for config in (data.get("IPAM") or {}).get("Config") or []:
        subnet = config.get("Subnet", "")
        if subnet and ":" not in subnet:
            bridge = options.get(_OPT_BRIDGE) or f"br-{str(data.get('Id', ''))[:12]}"
            return BridgeNetwork(
                name=str(data.get("Name", "")),
                subnet=subnet,
                gateway=config.get("Gateway", ""),
                ip_range=config.get("IPRange") or "",
                bridge=bridge,
                mtu=int(options.get(_OPT_MTU) or 1500),
                reserved=tuple(sorted((config.get("AuxiliaryAddresses") or {}).values())),
                managed=(data.get("Labels") or {}).get("io.atoll.managed") == "true",
            )
    return None


def _ip_range_of(data: Mapping[str, Any]) -> str:
    configs = (data.get("IPAM") or {}).get("Config") or []
    return str(configs[0].get("IPRange") or "") if len(configs) == 1 else ""
