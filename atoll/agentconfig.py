"""The agent's options: one typed dataclass, loaded and validated at start.

Precedence (later wins): defaults < config file < environment < flags.
Config file: --config, else $ATOLL_AGENT_CONFIG, else /etc/atoll/agent.yaml
when it exists; keys are the option names below. Environment: ATOLL_AGENT_
plus the upper-cased option name (ATOLL_AGENT_COORDINATOR, ...). Flags:
--option-name. `atoll-agent --print-config` shows the merged result.
"""

from __future__ import annotations

import argparse
import pathlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atoll import certinfo, errors, labels, logs, rpc, tls, validation
from atoll import config as layered

ENV_PREFIX = "ATOLL_AGENT_"
DEFAULT_CONFIG_FILE = pathlib.Path("/etc/atoll/agent.yaml")
DEFAULT_AGENT_PORT = 10250
SSH_PORT = 22
DEFAULT_JOIN_PORT = 6444  # the coordinator's, where joins go by default


_PF = re.compile(r"[A-Za-z0-9_.@-]{1,15}")
_RESOURCE = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
MAX_VFS = 256


def parse_sriov_pf(item: Any) -> tuple[str, int, str]:
    """One PF: ``NAME:NUM_VFS[:RESOURCE]`` or a mapping ``{name, numVfs, resourceName, deviceType}``
    (``iface``/``num_vfs`` also read); returns (name, number of VFs, resource or "")."""
    if isinstance(item, Mapping):
        name = str(item.get("name", item.get("iface", "")))
        count: Any = item.get("numVfs", item.get("num_vfs", ""))
        resource = str(item.get("resourceName", item.get("resource_name", "")) or "")
        device_type = str(item.get("deviceType", "netdevice"))
        if device_type != "netdevice":
            raise ValueError(f"PF {name}: deviceType {device_type!r} is not supported (netdevice)")
    else:
        name, _, rest = str(item).strip().partition(":")
        count, _, resource = rest.partition(":")
    try:
        number = int(count)
    except (TypeError, ValueError):
        raise ValueError(f"expected NAME:NUM_VFS[:RESOURCE], got {item!r}") from None
    if not _PF.fullmatch(name) or not 0 <= number <= MAX_VFS:
        raise ValueError(f"expected NAME:NUM_VFS[:RESOURCE] with 0..{MAX_VFS} VFs, got {item!r}")
    if resource and not _RESOURCE.fullmatch(resource):
        raise ValueError(f"PF {name}: resource {resource!r} is not NAME or DOMAIN/NAME")
    return name, number, resource


def parse_sriov_pfs(value: Any) -> list[str]:
    """``ens1f0:8,ens1f1:4:example.com/fast`` (flags, environment), or a list of such strings or of
    mappings (config file); normalised to ``NAME:NUM_VFS[:RESOURCE]`` strings."""
    items: list[Any] = value if isinstance(value, list) else str(value).split(",")
    result = []
    for item in items:
        if not isinstance(item, Mapping) and not str(item).strip():
            continue
        name, number, resource = parse_sriov_pf(item)
        result.append(f"{name}:{number}" + (f":{resource}" if resource else ""))
    return result


# The longest heartbeat interval an agent takes from a coordinator, which stretches it for a
# large fleet (coordinator.controllers.heartbeatpace): the agent's watchdog allows for it.
LONGEST_HEARTBEAT_INTERVAL = 60.0


@dataclass
class AgentConfig:
    coordinator: str = layered.option(
        "127.0.0.1:6443",
        "coordinator address HOST:PORT, or several (a:6443,b:6443,c:6443): the agent fails over between them",
        parse=lambda v: ",".join(str(x) for x in v) if isinstance(v, list) else str(v),
    )
    node_name: str = layered.option("", "node name (default: the host name, lower-cased)")
    docker_host: str = layered.option("unix:///var/run/docker.sock", "Docker Engine API URL")
    state_dir: str = layered.option("/var/lib/atoll-agent", "where the agent keeps pod records and volumes")
    listen: str = layered.option(f"0.0.0.0:{DEFAULT_AGENT_PORT}", "address of the agent's own gRPC API")
    node_ip: str = layered.option(
        "", "the node's InternalIP (default: the source address towards the coordinator)"
    )
    labels: dict[str, str] = layered.option({}, "node labels, k=v,k2=v2", parse=layered.parse_labels)
    pod_network: str = layered.option(
        "bridge", "Docker network that pod infra containers attach to when the cluster has no overlay"
    )
    sandbox_network: str = layered.option(
        "auto",
        "who builds a pod's network: agent (a veth onto the pod network's bridge, CNI-style, for pods "
        "without host ports, on a network that leaves the agent addresses outside its IP range: the "
        "overlay's network does), engine (Docker's bridge driver, always), or auto (the agent where the "
        "network leaves it room, the engine elsewhere, silently)",
    )
    overlay: str = layered.option(
        "auto", "auto: join the overlay when the coordinator configures one; off: never"
    )
    iface: str = layered.option("", "underlay interface for VXLAN (default: the route to the coordinator)")
    public_ip: str = layered.option("", "underlay address peers send VXLAN to (default: the iface's address)")
    subnet_env: str = layered.option("/run/flannel/subnet.env", "where to write flannel's subnet.env")
    infra_image: str = layered.option(
        "atoll/pause:1.0", "image of the infra container that holds a pod's network"
    )
    infra_busybox: str = layered.option(
        "",
        "static busybox for building the infra image offline (default: the first static one on PATH's usual dirs)",
    )
    relist_interval: float = layered.option(1.0, "seconds between container relists")
    resync_interval: float = layered.option(30.0, "seconds between full resyncs of every pod")
    max_parallel_syncs: int = layered.option(8, "pods synced at once")
    backoff_base: float = layered.option(10.0, "first crash-loop / image-pull backoff in seconds")
    backoff_max: float = layered.option(300.0, "longest crash-loop / image-pull backoff in seconds")
    docker_timeout: float = layered.option(60.0, "deadline of one Docker API call in seconds")
    pull_timeout: float = layered.option(600.0, "deadline of one image pull in seconds")
    # Registry settings (agent.registries): added to what the coordinator pushes.
    registries_file: str = layered.option(
        "/etc/atoll/registries.yaml",
        "node-local registry settings, YAML with the keys search, insecure, blocked, mirrors, auths; "
        "added to the coordinator's; read if present, '' to ignore",
    )
    legacy_sysconfig: str = layered.option(
        "/etc/sysconfig/docker",
        "RHEL docker sysconfig whose ADD_REGISTRY, INSECURE_REGISTRY and BLOCK_REGISTRY are honoured; "
        "read if present, '' to ignore",
    )
    docker_config: str = layered.option(
        "/etc/docker/daemon.json",
        "dockerd config file whose insecure-registries and registry-mirrors the agent manages; "
        "'' to leave the engine's config alone",
    )
    docker_pidfile: str = layered.option(
        "/var/run/docker.pid", "dockerd's pid file; dockerd gets SIGHUP when its registry settings change"
    )
    heartbeat_interval: float = layered.option(
        10.0, "seconds between heartbeats until the coordinator says otherwise"
    )
    max_pods: int = layered.option(110, "pods this node accepts")
    reserved_cpu_millis: int = layered.option(0, "CPU (millicores) held back from pods")
    reserved_memory_bytes: int = layered.option(0, "memory (bytes) held back from pods")
    sriov_pfs: list[str] = layered.option(
        [],
        "SR-IOV physical functions of this host and the virtual functions each should expose, "
        "NAME:NUM_VFS[:RESOURCE],... (written by `coordinator enroll --sriov-pf`); the VFs count as "
        "the resource RESOURCE (default atoll.io/sriov_NAME)",
        parse=parse_sriov_pfs,
    )
    sriov_driver: str = layered.option(
        "sysfs",
        "sysfs (the host's PFs) or fake (a fake NIC under --sysfs-root, to try SR-IOV without one)",
    )
    sysfs_root: str = layered.option("/sys", "where sysfs is (the fake SR-IOV driver builds its tree there)")
    sriov_fake_netdevs: bool = layered.option(
        False, "fake SR-IOV driver: give each VF a veth stand-in that carries traffic (test beds)"
    )
    sriov_fake_fabric: str = layered.option(
        "", "fake SR-IOV driver with stand-ins: the underlay interface that joins each VLAN across hosts"
    )
    log_level: str = layered.option("info", "debug, info, warning or error")
    log_format: str = layered.option(
        "text", "main log format: text, or json (one object per line, with context fields)"
    )
    metrics_listen: str = layered.option(
        "", "serve Prometheus metrics over HTTP on HOST:PORT (e.g. 127.0.0.1:9101); empty: off"
    )
    # Joining and TLS (see agent.bootstrap).
    join_token: str = layered.option(
        "",
        "bootstrap token <id>.<secret> (coordinator token create) to get a node certificate with, "
        "when <state-dir>/pki has none; prefer the config file or ATOLL_AGENT_JOIN_TOKEN to a flag",
    )
    ca_hash: str = layered.option(
        "", "pin of the cluster CA when joining: sha256:<hex> of its SubjectPublicKeyInfo (kubeadm's hash)"
    )
    ca_cert: str = layered.option("", "the cluster CA certificate file, when joining without --ca-hash")
    join_address: str = layered.option(
        "", "the coordinator's token port to join through (default: the coordinator's host, port 6444)"
    )
    insecure: bool = layered.option(
        False,
        "plain text to an --insecure coordinator and an agent API without TLS; loopback only, for development",
    )

    def validate(self) -> None:
        if self.sriov_driver not in ("sysfs", "fake"):
            raise errors.InvalidArgument(f"sriov_driver: expected sysfs or fake, got {self.sriov_driver!r}")
        if not rpc.servers(self.coordinator):
            raise errors.InvalidArgument("coordinator: expected HOST:PORT[,HOST:PORT...]")
        for address in rpc.servers(self.coordinator):
            layered.split_host_port(address, "coordinator")
        layered.split_host_port(self.listen, "listen")
        if self.insecure:
            tls.check_plaintext(self.listen)
        if self.ca_hash:
            self.ca_hash = certinfo.parse_pin(self.ca_hash)
        if self.join_token and not re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", self.join_token):
            raise errors.InvalidArgument("join_token: expected <6 of [a-z0-9]>.<16 of [a-z0-9]>")
        if self.join_address:
            layered.split_host_port(self.join_address, "join_address")
        if self.node_name and not validation.DNS1123_SUBDOMAIN.fullmatch(self.node_name):
            raise errors.InvalidArgument(
                f"node_name: {self.node_name!r} must be a DNS-1123 subdomain (lower-case letters, digits, '-', '.')"
            )
        for key, value in self.labels.items():
            if not labels.valid_key(key) or not labels.valid_value(value):
                raise errors.InvalidArgument(f"labels: invalid label {key}={value}")
        if not self.docker_host.startswith(("unix://", "tcp://", "http://", "https://", "ssh://")):
            raise errors.InvalidArgument(
                f"docker_host: expected a unix:// or tcp:// URL, got {self.docker_host!r}"
            )
        for name in (
            "relist_interval",
            "resync_interval",
            "backoff_base",
            "backoff_max",
            "docker_timeout",
            "pull_timeout",
            "heartbeat_interval",
        ):
            if getattr(self, name) <= 0:
                raise errors.InvalidArgument(f"{name}: must be positive")
        if self.max_parallel_syncs < 1 or self.max_pods < 1:
            raise errors.InvalidArgument("max_parallel_syncs and max_pods must be at least 1")
        if self.sandbox_network not in ("auto", "agent", "engine"):
            raise errors.InvalidArgument(
                f"sandbox_network: expected auto, agent or engine, got {self.sandbox_network!r}"
            )
        if self.overlay not in ("auto", "off"):
            raise errors.InvalidArgument(f"overlay: expected auto or off, got {self.overlay!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise errors.InvalidArgument(
                f"log_level: expected debug, info, warning or error, got {self.log_level!r}"
            )
        if self.metrics_listen:
            layered.split_host_port(self.metrics_listen, "metrics_listen")
        self.log_format = self.log_format.lower()
        if self.log_format not in logs.FORMATS:
            raise errors.InvalidArgument(f"log_format: expected text or json, got {self.log_format!r}")

    def daemon_ports(self) -> frozenset[int]:
        """Ports the service proxy never captures on external IPs: sshd, this agent, the coordinators
        (each one's API and token ports)."""
        join = f"0.0.0.0:{DEFAULT_JOIN_PORT}" if not self.join_address else self.join_address
        addresses = (self.listen, *rpc.servers(self.coordinator), join)
        return frozenset({SSH_PORT, *(layered.split_host_port(a, "address")[1] for a in addresses)})

    @property
    def state_path(self) -> pathlib.Path:
        return pathlib.Path(self.state_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atoll-agent", description="The Atoll node agent.")
    parser.add_argument(
        "--config", help=f"YAML config file (default: ${ENV_PREFIX}CONFIG or {DEFAULT_CONFIG_FILE})"
    )
    parser.add_argument("--print-config", action="store_true", help="print the merged configuration and exit")
    layered.add_flags(parser, AgentConfig)
    parser.add_argument(
        "--sriov-pf",
        action="append",
        dest="sriov_pf",
        metavar="NAME:NUM_VFS[:RESOURCE]",
        help="one SR-IOV PF; repeat the flag for more (they add to --sriov-pfs)",
    )
    return parser


def load(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[AgentConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    if args.sriov_pf:  # --sriov-pf A --sriov-pf B is --sriov-pfs A,B (with any --sriov-pfs given too)
        args.sriov_pfs = ",".join(filter(None, [args.sriov_pfs, *args.sriov_pf]))
    path = layered.resolve_file(args.config, f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_FILE, environ)
    file_values = layered.read_file(path) if path else {}
    cfg = layered.load(
        AgentConfig,
        env_prefix=ENV_PREFIX,
        args=args,
        file_values=file_values,
        environ=environ,
        file_name=str(path) if path else "config file",
    )
    return cfg, args


def from_mapping(values: Mapping[str, object]) -> AgentConfig:
    """Build a config from file-shaped values only (used to check rendered cloud-init configs)."""
    return layered.load(AgentConfig, env_prefix=ENV_PREFIX, file_values=dict(values), environ={})
