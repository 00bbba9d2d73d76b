"""Pods and nodes."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from atoll.validation.core import (
    DEFAULT_NAMESPACE,
    DNS1123_LABEL,
    Problems,
    check_labels,
    check_name,
    check_port,
    is_ip,
    validate_meta,
)
from atoll.validation.text import check_object, check_strings

ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*\Z")
# registry[:port]/path[:tag][@digest], lower-case path components as Docker requires.
IMAGE_REF = re.compile(
    r"(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+:[a-fA-F0-9]{32,}))?\Z"
)
EMPTY_DIR_MEDIA = ("", "Memory")
HOST_PATH_TYPES = (
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
)


def valid_image(ref: str) -> bool:
    return bool(IMAGE_REF.fullmatch(ref)) and len(ref) <= 512


def _resources(p: Problems, field: str, res: pod_pb2.ResourceRequirements) -> None:
    names = ("cpu", "memory", "ephemeral-storage")
    for kind, rl in (("requests", res.requests), ("limits", res.limits)):
        for name, value in zip(names, _amounts(rl), strict=True):
            if value < 0:
                p.add(f"{field}.{kind}.{name}", "must not be negative")
    for name, req, lim in zip(names, _amounts(res.requests), _amounts(res.limits), strict=True):
        if lim and req > lim:
            p.add(f"{field}.requests.{name}", f"must be less than or equal to the {name} limit")


def _amounts(rl: meta_pb2.ResourceList) -> tuple[int, int, int]:
    return rl.cpu_millis, rl.memory_bytes, rl.ephemeral_storage_bytes


def _container(p: Problems, field: str, c: pod_pb2.Container, volumes: set[str], prefix: str) -> None:
    check_name(p, f"{field}.name", c.name, subdomain=False)
    if not c.image:
        p.add(f"{field}.image", "is required")
    elif not valid_image(c.image):
        p.add(f"{field}.image", f"{c.image!r} is not a valid image reference")
    seen_ports: set[str] = set()
    for i, port in enumerate(c.ports):
        pf = f"{field}.ports[{i}]"
        check_port(p, f"{pf}.containerPort", port.container_port)
        check_port(p, f"{pf}.hostPort", port.host_port, allow_zero=True)
        if port.host_ip and not is_ip(port.host_ip):
            p.add(f"{pf}.hostIP", f"{port.host_ip!r} is not an IP address")
        if port.name:
            if not DNS1123_LABEL.fullmatch(port.name) or len(port.name) > 15:
                p.add(f"{pf}.name", f"{port.name!r} must be a DNS-1123 label of at most 15 characters")
            elif port.name in seen_ports:
                p.add(f"{pf}.name", f"duplicate port name {port.name!r}")
            seen_ports.add(port.name)
    env_names: set[str] = set()
    for i, env in enumerate(c.env):
        if not ENV_NAME.fullmatch(env.name):
            p.add(f"{field}.env[{i}].name", f"{env.name!r} is not a valid environment variable name")
        env_names.add(env.name)
    mounts: set[str] = set()
    for i, mount in enumerate(c.volume_mounts):
        mf = f"{field}.volumeMounts[{i}]"
        if mount.name not in volumes:
            p.add(f"{mf}.name", f"volume {mount.name!r} is not declared in {prefix}.volumes")
        if not mount.mount_path.startswith("/"):
            p.add(f"{mf}.mountPath", f"must be an absolute path, got {mount.mount_path!r}")
        elif mount.mount_path in mounts:
            p.add(f"{mf}.mountPath", f"{mount.mount_path!r} is mounted twice")
        mounts.add(mount.mount_path)
    if c.working_dir and not c.working_dir.startswith("/"):
        p.add(f"{field}.workingDir", "must be an absolute path")
    _resources(p, f"{field}.resources", c.resources)
    _ids(p, f"{field}.securityContext", c.security_context)


MAX_ID = (1 << 31) - 1  # Kubernetes' bound on uids and gids


def _ids(p: Problems, field: str, sc: pod_pb2.PodSecurityContext | pod_pb2.SecurityContext) -> None:
    for name, key in (("run_as_user", "runAsUser"), ("run_as_group", "runAsGroup")):
        if sc.HasField(name) and not 0 <= getattr(sc, name) <= MAX_ID:
            p.add(f"{field}.{key}", f"must be between 0 and {MAX_ID}, got {getattr(sc, name)}")


_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
RESERVED_IFNAMES = ("lo", "eth0")  # the loopback and the overlay interface
MAX_NETWORKS = 16


def validate_networks(p: Problems, networks: Sequence[pod_pb2.NetworkAttachment], prefix: str) -> None:
    """A pod's extra networks: known names, interface names the kernel takes, unicast MACs, CIDRs."""
    if len(networks) > MAX_NETWORKS:
        p.add(prefix, f"at most {MAX_NETWORKS} networks")
    seen: set[str] = set()
    for i, net in enumerate(networks):
        nf = f"{prefix}[{i}]"
        check_name(p, f"{nf}.name", net.name)
        if net.interface:
            if not _IFNAME.fullmatch(net.interface) or net.interface in RESERVED_IFNAMES:
                p.add(
                    f"{nf}.interface",
                    f"{net.interface!r} is not a usable interface name (1-15 of A-Za-z0-9_.-, not lo or eth0)",
                )
            elif net.interface in seen:
                p.add(f"{nf}.interface", f"interface {net.interface!r} is used twice")
            seen.add(net.interface)
        if net.mac and (
            not _MAC.fullmatch(net.mac) or net.mac == "00:00:00:00:00:00" or int(net.mac[:2], 16) & 1
        ):
            p.add(f"{nf}.mac", f"must be a lower-case unicast MAC like 02:00:00:00:00:01, got {net.mac!r}")
        for j, ip in enumerate(net.ips):
            try:
                if "/" not in ip:
                    raise ValueError("no prefix length")
                ipaddress.IPv4Interface(ip)
            except ValueError:
                p.add(f"{nf}.ips[{j}]", f"must be an IPv4 CIDR like 10.56.217.10/24, got {ip!r}")


def validate_pod_spec(p: Problems, spec: pod_pb2.PodSpec, prefix: str = "spec") -> None:
    volumes: set[str] = set()
    for i, vol in enumerate(spec.volumes):
        vf = f"{prefix}.volumes[{i}]"
        check_name(p, f"{vf}.name", vol.name, subdomain=False)
        if vol.name in volumes:
            p.add(f"{vf}.name", f"duplicate volume name {vol.name!r}")
        volumes.add(vol.name)
        source = vol.WhichOneof("source")
        if source is None:
            p.add(vf, "must set one volume source (emptyDir or hostPath)")
        elif source == "host_path":
            if not vol.host_path.path.startswith("/"):
                p.add(f"{vf}.hostPath.path", f"must be an absolute path, got {vol.host_path.path!r}")
            if vol.host_path.type not in HOST_PATH_TYPES:
                known = ", ".join(t for t in HOST_PATH_TYPES if t)
                p.add(f"{vf}.hostPath.type", f"unknown type {vol.host_path.type!r}, expected one of {known}")
        elif source == "empty_dir":
            if vol.empty_dir.medium not in EMPTY_DIR_MEDIA:
                p.add(f"{vf}.emptyDir.medium", f"must be empty or 'Memory', got {vol.empty_dir.medium!r}")
            if vol.empty_dir.size_limit_bytes < 0:
                p.add(f"{vf}.emptyDir.sizeLimit", "must not be negative")
    validate_networks(p, spec.networks, f"{prefix}.networks")
    if not spec.containers:
        p.add(f"{prefix}.containers", "must have at least one container")
    names: set[str] = set()
    host_ports: set[tuple[int, int, str]] = set()
    for i, c in enumerate(spec.containers):
        cf = f"{prefix}.containers[{i}]"
        _container(p, cf, c, volumes, prefix)
        if c.name in names:
            p.add(f"{cf}.name", f"duplicate container name {c.name!r}")
        names.add(c.name)
        for j, port in enumerate(c.ports):
            if port.host_port:
                key = (port.host_port, port.protocol, port.host_ip)
                if key in host_ports:
                    p.add(
                        f"{cf}.ports[{j}].hostPort", f"host port {port.host_port} is used twice in this pod"
                    )
                host_ports.add(key)
    _ids(p, f"{prefix}.securityContext", spec.security_context)
    if spec.node_name:
        check_name(p, f"{prefix}.nodeName", spec.node_name)
    check_labels(p, f"{prefix}.nodeSelector", spec.node_selector)
    if spec.HasField("termination_grace_period_seconds") and spec.termination_grace_period_seconds < 0:
        p.add(f"{prefix}.terminationGracePeriodSeconds", "must not be negative")


def default_pod(pod: pod_pb2.Pod) -> None:
    if not pod.metadata.namespace:
        pod.metadata.namespace = DEFAULT_NAMESPACE
    default_pod_spec(pod.spec)


def default_pod_spec(spec: pod_pb2.PodSpec) -> None:
    if spec.restart_policy == pod_pb2.RESTART_POLICY_UNSPECIFIED:
        spec.restart_policy = pod_pb2.RESTART_POLICY_ALWAYS
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = 30
    for c in spec.containers:
        if c.image_pull_policy == pod_pb2.PULL_POLICY_UNSPECIFIED:
            c.image_pull_policy = pod_pb2.PULL_POLICY_IF_NOT_PRESENT
        for port in c.ports:
            if port.protocol == meta_pb2.PROTOCOL_UNSPECIFIED:
                port.protocol = meta_pb2.PROTOCOL_TCP


def validate_pod(pod: pod_pb2.Pod) -> Problems:
    p = Problems()
    validate_meta(p, pod.metadata, namespaced=True)
    validate_pod_spec(p, pod.spec)
    check_object(p, pod)
    return p


Problem = tuple[str, str]
SpecProblems = tuple[tuple[Problem, ...], tuple[Problem, ...]]


def pod_spec_problems(spec: pod_pb2.PodSpec) -> SpecProblems:
    """What validate_pod finds in a pod's spec: (its rules' problems, its strings'), for a caller
    that keeps them per spec (a node's pods of one controller share one)."""
    rules, strings = Problems(), Problems()
    validate_pod_spec(rules, spec)
    check_strings(strings, spec, "spec")
    return tuple(rules.items), tuple(strings.items)


def first_pod_problem(
    pod: pod_pb2.Pod, spec_problems: Callable[[pod_pb2.PodSpec], SpecProblems] = pod_spec_problems
) -> Problem | None:
    """validate_pod's first problem (None: the pod is valid), its spec's from `spec_problems`.
    The same order: the metadata's rules, the spec's, then every string, the metadata's first."""
    meta = Problems()
    validate_meta(meta, pod.metadata, namespaced=True)
    if meta.items:
        return meta.items[0]
    rules, strings = spec_problems(pod.spec)
    if rules:
        return rules[0]
    meta_strings = Problems()
    check_strings(meta_strings, pod.metadata, "metadata")
    if meta_strings.items:
        return meta_strings.items[0]
    return strings[0] if strings else None


def validate_node(node: node_pb2.Node) -> Problems:
    p = Problems()
    validate_meta(p, node.metadata, namespaced=False)
    if node.spec.pod_cidr:
        try:
            ipaddress.ip_network(node.spec.pod_cidr, strict=False)
        except ValueError:
            p.add("spec.podCIDR", f"{node.spec.pod_cidr!r} is not a CIDR like 10.244.1.0/24")
    for i, addr in enumerate(node.status.addresses):
        if addr.type not in ("InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS"):
            p.add(f"status.addresses[{i}].type", f"unknown address type {addr.type!r}")
    if node.status.agent_port:
        check_port(p, "status.agentPort", node.status.agent_port)
    check_object(p, node)
    return p
