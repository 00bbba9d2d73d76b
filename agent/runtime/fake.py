"""FakeRuntime: an in-memory ContainerRuntime that records every call.

For unit tests and for hollow agents in bench/hollow.py. It behaves like an
engine closely enough for the agent's reconcile logic: containers get ids and
IPs, start and exit, and tests drive crashes with `exit()` or `vanish()`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from agent.runtime.base import (
    LABEL_SANDBOX_NETWORK,
    BridgeNetwork,
    ContainerInfo,
    ContainerSpec,
    ImagePullError,
    NetworkResult,
    PodNetworkSpec,
    RuntimeError_,
)


class FakeRuntime:
    def __init__(self, images: tuple[str, ...] = (), *, record: bool = True) -> None:
        self.containers: dict[str, ContainerInfo] = {}
        self.specs: dict[str, ContainerSpec] = {}
        self.images: set[str] = set(images)
        self.image_users: dict[str, str] = {}  # the User of an image's config; absent: root
        self.pullable: set[str] = set()
        self.pull_errors: dict[str, str] = {}
        self.pull_auths: dict[str, Mapping[str, str] | None] = {}  # ref -> auth of its last pull
        self.calls: list[tuple[str, str]] = []
        self.logs_by_id: dict[str, bytes] = {}
        self.hang: set[str] = set()  # call names that never return
        # Networks made by ensure_network; containers on one get addresses from its subnet.
        self.networks: dict[str, PodNetworkSpec] = {}
        self._net_hosts: dict[str, itertools.count[int]] = {}
        self._record = record
        self._ids = itertools.count(1)
        self._ips = itertools.count(2)
        self._pids = itertools.count(1)

    async def _note(self, call: str, arg: str = "") -> None:
        if self._record:
            self.calls.append((call, arg))
        if call in self.hang:
            # Like an engine call that never answers: only a caller's deadline ends it.
            await asyncio.Event().wait()

    def calls_of(self, call: str) -> list[str]:
        return [arg for name, arg in self.calls if name == call]

    # -- test controls ------------------------------------------------------------------

    def exit(self, container_id: str, code: int = 0) -> None:
        info = self.containers[container_id]
        self.containers[container_id] = replace(
            info, state="exited", exit_code=code, finished_at=dt.datetime.now(dt.UTC)
        )

    def vanish(self, container_id: str) -> None:
        self.containers.pop(container_id, None)

    def by_name(self, name: str) -> ContainerInfo:
        return next(c for c in self.containers.values() if c.name == name)

    # -- ContainerRuntime -------------------------------------------------------------------

    async def version(self) -> str:
        await self._note("version")
        return "fake://1.0"

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        # The call's text is built only when calls are kept: bench/hollow.py's thousand agents
        # list their containers at every pod sync and relist.
        await self._note("list_containers", _label_text(labels) if self._record else "")
        wanted = tuple(labels.items())
        found = []
        for c in self.containers.values():
            have = c.labels
            for k, v in wanted:
                if (have.get(k) != v) if v else (k not in have):
                    break
            else:
                found.append(c)
        return found

    async def image_present(self, ref: str) -> bool:
        await self._note("image_present", ref)
        return ref in self.images

    async def image_user(self, ref: str) -> str:
        await self._note("image_user", ref)
        return self.image_users.get(ref, "")

    async def pull_image(self, ref: str, auth: Mapping[str, str] | None = None) -> None:
        await self._note("pull_image", ref)
        self.pull_auths[ref] = auth
        if ref in self.pull_errors:
            raise ImagePullError(self.pull_errors[ref])
        if ref not in self.pullable and ref not in self.images:
            raise ImagePullError(f"pull access denied for {ref}, repository does not exist")
        self.images.add(ref)

    async def import_image(self, rootfs_tar: bytes, ref: str, changes: tuple[str, ...] = ()) -> None:
        await self._note("import_image", ref)
        self.images.add(ref)

    async def create_container(self, spec: ContainerSpec) -> str:
        await self._note("create_container", spec.name)
        if spec.image not in self.images:
            raise RuntimeError_(f"No such image: {spec.image}")
        if any(c.name == spec.name for c in self.containers.values()):
            raise RuntimeError_(f'Conflict. The container name "/{spec.name}" is already in use')
        cid = f"{next(self._ids):064x}"
        ip = ""
        if spec.network in self.networks:
            subnet = ipaddress.IPv4Network(self.networks[spec.network].subnet)
            ip = str(subnet.network_address + next(self._net_hosts[spec.network]))
        elif spec.network and spec.network != "none":
            ip = f"172.30.{(n := next(self._ips)) // 250}.{n % 250 + 2}"
        self.containers[cid] = ContainerInfo(
            id=cid,
            name=spec.name,
            image=spec.image,
            labels=dict(spec.labels),
            state="created",
            image_id=f"sha256:{abs(hash(spec.image)):064x}"[:71],
            created_at=dt.datetime.now(dt.UTC),
            ip=ip,
        )
        self.specs[cid] = spec
        return cid

    async def start_container(self, container_id: str) -> None:
        await self._note("start_container", container_id)
        info = self._get(container_id)
        if info.state == "running":
            return
        if spec_join := self.specs[container_id].join_container:
            owner = self.containers.get(spec_join)
            if owner is None or owner.state != "running":
                raise RuntimeError_(f"cannot join network of a non running container: {spec_join}")
            info = replace(info, ip=owner.ip)
        self.containers[container_id] = replace(
            info,
            state="running",
            started_at=dt.datetime.now(dt.UTC),
            finished_at=None,
            exit_code=0,
            pid=100_000 + next(self._pids),  # a stand-in: no process runs
        )

    async def network_namespace(self, container_id: str) -> str:
        await self._note("network_namespace", container_id)
        info = self.containers.get(container_id)
        return f"/run/docker/netns/{container_id[:12]}" if info is not None and info.running else ""

    async def stop_container(self, container_id: str, grace_seconds: int | None) -> None:
        await self._note("stop_container", container_id)
        info = self.containers.get(container_id)
        if info is not None and info.state == "running":
            self.containers[container_id] = replace(
                info,
                state="exited",
                pid=0,
                exit_code=137 if grace_seconds == 0 else 0,
                finished_at=dt.datetime.now(dt.UTC),
            )

    async def remove_container(self, container_id: str) -> None:
        await self._note("remove_container", container_id)
        self.containers.pop(container_id, None)

    async def logs(
        self, container_id: str, *, follow: bool, tail: int, timestamps: bool
    ) -> AsyncIterator[bytes]:
        await self._note("logs", container_id)
        self._get(container_id)
        data = self.logs_by_id.get(container_id, b"")
        if tail > 0:
            data = b"".join(data.splitlines(keepends=True)[-tail:])
        if data:
            yield data
        if follow:
            await asyncio.Event().wait()

    def network_users(self, name: str) -> list[str]:
        return [
            cid
            for cid, spec in self.specs.items()
            if cid in self.containers
            and (spec.network == name or spec.labels.get(LABEL_SANDBOX_NETWORK) == name)
        ]

    async def ensure_network(self, spec: PodNetworkSpec) -> NetworkResult:
        await self._note("ensure_network", spec.name)
        existing = self.networks.get(spec.name)
        if existing == spec:
            return "unchanged"
        if existing is not None and self.network_users(spec.name):
            # As Docker's: a range alone never remakes a network in use.
            return "unchanged" if replace(existing, ip_range=spec.ip_range) == spec else "in-use-mismatch"
        self.networks[spec.name] = spec
        self._net_hosts[spec.name] = itertools.count(2)  # .1 is the gateway
        return "created" if existing is None else "recreated"

    async def remove_network(self, name: str) -> None:
        await self._note("remove_network", name)
        if name in self.networks and self.network_users(name):
            raise RuntimeError_(f"error while removing network: network {name} has active endpoints")
        self.networks.pop(name, None)
        self._net_hosts.pop(name, None)

    async def bridge_network(self, name: str) -> BridgeNetwork | None:
        await self._note("bridge_network", name)
        spec = self.networks.get(name)
        if spec is None:
            return None
        return BridgeNetwork(
            name, spec.subnet, spec.gateway, spec.ip_range, spec.bridge_name, spec.mtu, managed=True
        )

    async def close(self) -> None:
        return None

    def _get(self, container_id: str) -> ContainerInfo:
        try:
            return self.containers[container_id]
        except KeyError:
            raise RuntimeError_(f"No such container: {container_id}") from None


def _label_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
