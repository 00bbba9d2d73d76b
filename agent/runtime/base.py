"""The container runtime seam.

The agent renders what it wants as plain `ContainerSpec` data and observes what
runs as `ContainerInfo`; a runtime only translates between those and an engine.
Docker is one runtime (agent.runtime.docker), the recording fake another
(agent.runtime.fake); nothing above this module imports the docker SDK.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from atoll import errors

State = Literal["created", "running", "paused", "restarting", "removing", "exited", "dead"]


class RuntimeError_(errors.Unavailable):
    """The engine failed or refused a call."""


class RuntimeTimeout(RuntimeError_):
    """An engine call did not return within its deadline."""


class ImagePullError(RuntimeError_):
    """Pulling an image failed; `message` is the registry's reason."""


@dataclass(frozen=True)
class PortBinding:
    container_port: int
    protocol: str  # "tcp", "udp" or "sctp"
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container, as plain data."""

    name: str
    image: str
    labels: Mapping[str, str]
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    # The infra container sits on `network`; app containers join `join_container`.
    network: str | None = None
    join_container: str | None = None
    ports: tuple[PortBinding, ...] = ()
    mounts: tuple[Mount, ...] = ()
    working_dir: str = ""
    hostname: str = ""
    cpu_shares: int = 0
    nano_cpus: int = 0
    memory_limit: int = 0
    # Run the engine's tiny init as PID 1 so that signals reach the process.
    init: bool = False
    # "uid" or "uid:gid" (Docker's --user); empty: the image's user.
    user: str = ""
    # Mount the root filesystem read-only (Docker's --read-only).
    read_only_rootfs: bool = False
    # /etc/hosts lines (Docker's --add-host): (name, address).
    extra_hosts: tuple[tuple[str, str], ...] = ()
    stop_timeout: int = 30


@dataclass(frozen=True)
class ContainerInfo:
    """What the runtime reports about one container."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    state: State
    image_id: str = ""
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    ip: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    pid: int = 0  # the main process while running (its /proc/PID/ns/net is the pod's network)

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting", "paused")


@dataclass(frozen=True)
class PodNetworkSpec:
    """The engine network that pods' infra containers attach to: a bridge on the node's lease.

    `masquerade` is normally False: the overlay masquerades only traffic that
    leaves it (agent.network.firewall), so pods see each other's real address.
    """

    name: str
    subnet: str  # the node's lease, e.g. "10.100.50.0/24"
    gateway: str  # "<subnet>.1", the bridge's address
    mtu: int
    bridge_name: str = "atoll0"
    masquerade: bool = False
    # Where the engine may hand out addresses ("": the whole subnet); the rest is the agent's
    # (agent.network.sandbox).
    ip_range: str = ""


#: On an infra container whose network the agent builds (agent.network.sandbox): the engine
#: network whose bridge it joins. Such a container uses that network though the engine does not
#: know it (it runs with no network of the engine's).
LABEL_SANDBOX_NETWORK = "io.atoll.sandbox.network"


@dataclass(frozen=True)
class BridgeNetwork:
    """An engine bridge network as the agent needs it to plumb pods onto it itself
    (agent.network.sandbox)."""

    name: str
    subnet: str
    gateway: str
    ip_range: str  # the engine's own share of the subnet; "" when it may use all of it
    bridge: str  # the bridge device
    mtu: int
    reserved: tuple[str, ...] = ()  # addresses the engine keeps out of its IPAM (auxiliary ones)
    managed: bool = False  # made by the agent (the overlay's network), labelled io.atoll.managed


#: What ensure_network did: made it, found it right, remade it, or found it wrong
#: but in use (kept as it is, logged; retried on the next call).
NetworkResult = Literal["created", "unchanged", "recreated", "in-use-mismatch"]


class ContainerRuntime(Protocol):
    async def version(self) -> str: ...

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Every container (running or not) carrying all of `labels`, fully inspected."""
        ...

    async def image_present(self, ref: str) -> bool: ...

    async def image_user(self, ref: str) -> str:
        """The user a present image runs as (its config's User; empty: root)."""
        ...

    async def pull_image(self, ref: str, auth: Mapping[str, str] | None = None) -> None: ...

    async def import_image(self, rootfs_tar: bytes, ref: str, changes: tuple[str, ...] = ()) -> None:
        """Create image `ref` from a root filesystem tarball (`docker import`)."""
        ...

    async def create_container(self, spec: ContainerSpec) -> str: ...

    async def start_container(self, container_id: str) -> None: ...

    async def network_namespace(self, container_id: str) -> str:
        """The path of a running container's network namespace that stays bound to it while it
        runs (Docker's SandboxKey, not /proc/PID: a PID can be reused); "" when it does not run."""
        ...

    async def stop_container(self, container_id: str, grace_seconds: int | None) -> None:
        """SIGTERM, then SIGKILL after `grace_seconds` (None: the container's own stop timeout)."""
        ...

    async def remove_container(self, container_id: str) -> None:
        """Remove (forcefully); a container that is already gone is not an error."""
        ...

    def logs(
        self, container_id: str, *, follow: bool, tail: int, timestamps: bool
    ) -> AsyncIterator[bytes]: ...

    async def ensure_network(self, spec: PodNetworkSpec) -> NetworkResult:
        """Make the engine network `spec.name` look like `spec`; idempotent.

        A network that differs is recreated only while no container uses it.
        """
        ...

    async def remove_network(self, name: str) -> None:
        """Remove a network; one that does not exist is not an error, one in use is."""
        ...

    async def bridge_network(self, name: str) -> BridgeNetwork | None:
        """Engine network `name` if it is a bridge network with an IPv4 subnet, else None."""
        ...

    async def close(self) -> None: ...
