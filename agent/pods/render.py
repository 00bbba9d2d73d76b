"""Render a Pod into the containers that run it, as plain data.

A pod is one infra container, which owns the network namespace and publishes
the host ports, plus one container per app container joined to it. Labels on
every container say which pod, container and attempt it is, so that a
restarted agent can re-adopt what runs without any other memory; the spec hash
label tells when a running container no longer matches its spec.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.runtime.base import LABEL_SANDBOX_NETWORK, ContainerSpec, Mount, PortBinding
from atoll.v1 import meta_pb2, pod_pb2

LABEL_MANAGED = "io.atoll.managed"
LABEL_NODE = "io.atoll.node"
LABEL_POD_UID = "io.atoll.pod.uid"
LABEL_POD_NAME = "io.atoll.pod.name"
LABEL_POD_NAMESPACE = "io.atoll.pod.namespace"
LABEL_CONTAINER = "io.atoll.container.name"
LABEL_ATTEMPT = "io.atoll.container.attempt"
LABEL_HASH = "io.atoll.container.hash"
LABEL_SANDBOX = "io.atoll.sandbox.id"

# The infra container's name in labels; upper case, so no DNS-1123 container name can clash.
INFRA = "POD"

_PROTOCOLS = {meta_pb2.PROTOCOL_TCP: "tcp", meta_pb2.PROTOCOL_UDP: "udp", meta_pb2.PROTOCOL_SCTP: "sctp"}


def _same_image(ref: str) -> str:
    return ref


@dataclass(frozen=True)
class RenderContext:
    node_name: str
    infra_image: str
    pod_network: str
    pods_dir: pathlib.Path
    # Maps the image a pod names to the one to run (registry search, issue #3).
    resolve_image: Callable[[str], str] = field(default=_same_image)


def pod_dir(ctx: RenderContext, uid: str) -> pathlib.Path:
    return ctx.pods_dir / uid


def volume_path(ctx: RenderContext, uid: str, volume: str) -> pathlib.Path:
    return pod_dir(ctx, uid) / "volumes" / volume


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def host_ports(pod: pod_pb2.Pod) -> tuple[PortBinding, ...]:
    return tuple(
        PortBinding(p.container_port, _PROTOCOLS.get(p.protocol, "tcp"), p.host_port, p.host_ip)
        for c in pod.spec.containers
        for p in c.ports
    )


def infra_hash(pod: pod_pb2.Pod, ctx: RenderContext) -> str:
    ports = ",".join(f"{p.container_port}/{p.protocol}:{p.host_ip}:{p.host_port}" for p in host_ports(pod))
    hostname = pod.spec.hostname or pod.metadata.name
    return _digest(ports.encode(), hostname.encode(), ctx.pod_network.encode(), ctx.infra_image.encode())


def container_hash(pod: pod_pb2.Pod, container: pod_pb2.Container) -> str:
    used = {m.name for m in container.volume_mounts}
    volumes = [v.SerializeToString(deterministic=True) for v in pod.spec.volumes if v.name in used]
    # Only when set, so that the hashes of pods from before security contexts stay what they were.
    if pod.spec.HasField("security_context"):
        volumes.append(pod.spec.security_context.SerializeToString(deterministic=True))
    return _digest(container.SerializeToString(deterministic=True), *volumes)


@dataclass(frozen=True)
class Security:
    """A container's effective security context: its own fields over the pod's, as in Kubernetes."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    read_only_rootfs: bool = False

    @property
    def user(self) -> str:
        """Docker's --user: "uid" or "uid:gid"; empty runs the image's user."""
        if self.run_as_user is None:
            return ""
        return (
            f"{self.run_as_user}:{self.run_as_group}"
            if self.run_as_group is not None
            else str(self.run_as_user)
        )

    @property
    def needs_image_user(self) -> bool:
        """Whether `problem` must know the image's user to decide."""
        return self.run_as_non_root and self.run_as_user is None


def security(pod: pod_pb2.Pod, container: pod_pb2.Container) -> Security:
    own, shared = container.security_context, pod.spec.security_context

    def pick(name: str) -> int | bool | None:
        if own.HasField(name):
            return getattr(own, name)  # type: ignore[no-any-return]
        if shared.HasField(name):
            return getattr(shared, name)  # type: ignore[no-any-return]
        return None

    user, group = pick("run_as_user"), pick("run_as_group")
    return Security(
        run_as_user=None if user is None else int(user),
        run_as_group=None if group is None else int(group),
        run_as_non_root=bool(pick("run_as_non_root")),
        read_only_rootfs=own.read_only_root_filesystem,
    )


def security_problem(sec: Security, image_user: str = "") -> str:
    """Why the container cannot be created as its security context says (kubelet's words), or ""."""
    if sec.run_as_group is not None and sec.run_as_user is None:
        return "runAsGroup is specified without a runAsUser"
    if not sec.run_as_non_root:
        return ""
    if sec.run_as_user is not None:
        return "container's runAsUser breaks non-root policy" if sec.run_as_user == 0 else ""
    uid = image_user.split(":", 1)[0]
    if not uid or uid == "0":
        return "container has runAsNonRoot and image will run as root"
    if not uid.isdigit():
        return f"container has runAsNonRoot and image has non-numeric user ({uid}), cannot verify user is non-root"
    return "container has runAsNonRoot and image will run as root" if int(uid) == 0 else ""


def _labels(pod: pod_pb2.Pod, ctx: RenderContext, name: str, attempt: int, spec_hash: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_NODE: ctx.node_name,
        LABEL_POD_UID: pod.metadata.uid,
        LABEL_POD_NAME: pod.metadata.name,
        LABEL_POD_NAMESPACE: pod.metadata.namespace,
        LABEL_CONTAINER: name,
        LABEL_ATTEMPT: str(attempt),
        LABEL_HASH: spec_hash,
    }


def container_name(pod: pod_pb2.Pod, name: str, attempt: int) -> str:
    meta = pod.metadata
    return f"atoll_{name}_{meta.name}_{meta.namespace}_{meta.uid[:8]}_{attempt}"


def render_infra(
    pod: pod_pb2.Pod, ctx: RenderContext, attempt: int, *, agent_built: str = ""
) -> ContainerSpec:
    """The infra container. `agent_built` (the pod's address): it starts with no network, and the
    agent plumbs it onto `ctx.pod_network`'s bridge (never for a pod with host ports: the engine
    publishes those); /etc/hosts names the pod's host name with that address, as the engine's
    would. The spec hash is the same either way, so switching modes never replaces a sandbox."""
    labels = _labels(pod, ctx, INFRA, attempt, infra_hash(pod, ctx))
    hostname = (pod.spec.hostname or pod.metadata.name)[:63]
    if agent_built:
        labels[LABEL_SANDBOX_NETWORK] = ctx.pod_network
    return ContainerSpec(
        name=container_name(pod, INFRA, attempt),
        image=ctx.infra_image,
        labels=labels,
        entrypoint=("/bin/busybox",),
        cmd=("sleep", "2147483647"),
        network="none" if agent_built else ctx.pod_network,
        ports=() if agent_built else host_ports(pod),
        hostname=hostname,
        extra_hosts=((hostname, agent_built.partition("/")[0]),) if agent_built else (),
        init=True,
        stop_timeout=2,
    )


def _mounts(pod: pod_pb2.Pod, container: pod_pb2.Container, ctx: RenderContext) -> tuple[Mount, ...]:
    volumes: Mapping[str, pod_pb2.Volume] = {v.name: v for v in pod.spec.volumes}
    mounts = []
    for m in container.volume_mounts:
        vol = volumes[m.name]
        if vol.WhichOneof("source") == "host_path":
            source = vol.host_path.path
        else:
            source = str(volume_path(ctx, pod.metadata.uid, vol.name))
        mounts.append(Mount(source=source, target=m.mount_path, read_only=m.read_only))
    return tuple(mounts)


def render_container(
    pod: pod_pb2.Pod, container: pod_pb2.Container, ctx: RenderContext, sandbox_id: str, attempt: int
) -> ContainerSpec:
    labels = _labels(pod, ctx, container.name, attempt, container_hash(pod, container))
    labels[LABEL_SANDBOX] = sandbox_id
    sec = security(pod, container)
    requests, limits = container.resources.requests, container.resources.limits
    grace = (
        pod.spec.termination_grace_period_seconds
        if pod.spec.HasField("termination_grace_period_seconds")
        else 30
    )
    return ContainerSpec(
        name=container_name(pod, container.name, attempt),
        image=ctx.resolve_image(container.image),
        labels=labels,
        # Kubernetes semantics: command replaces ENTRYPOINT, args replace CMD.
        entrypoint=tuple(container.command) or None,
        cmd=tuple(container.args) or None,
        env=tuple((e.name, e.value) for e in container.env),
        join_container=sandbox_id,
        mounts=_mounts(pod, container, ctx),
        working_dir=container.working_dir,
        user=sec.user,
        read_only_rootfs=sec.read_only_rootfs,
        cpu_shares=max(2, requests.cpu_millis * 1024 // 1000) if requests.cpu_millis else 0,
        nano_cpus=limits.cpu_millis * 1_000_000,
        memory_limit=limits.memory_bytes,
        stop_timeout=int(grace),
    )
