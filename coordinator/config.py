"""The coordinator's options: `coordinator serve` and the CLI's connection settings.

Server precedence (later wins): defaults < config file < environment < flags.
Config file: --config, else $ATOLL_COORDINATOR_CONFIG, else
/etc/atoll/coordinator.yaml when it exists. Environment variables are
ATOLL_COORDINATOR_ plus the upper-cased option name.

The CLI finds the server in --server, else $ATOLL_SERVER, else its client
config's (see coordinator.client.config), else 127.0.0.1:6443; a unix socket
(unix:///path.sock) works too.
"""

from __future__ import annotations

import argparse
import ipaddress
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from atoll import config as layered
from atoll import errors, gcpolicy, logs, rpc, tls
from atoll.agentconfig import LONGEST_HEARTBEAT_INTERVAL
from coordinator.admission import podsecurity
from coordinator.objects import quota

ENV_PREFIX = "ATOLL_COORDINATOR_"
DEFAULT_CONFIG_FILE = pathlib.Path("/etc/atoll/coordinator.yaml")
DEFAULT_PORT = 6443
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_TOKEN_PORT = 6444
# The longest interval an agent takes (its watchdog allows for it: agent.service).
MAX_HEARTBEAT_INTERVAL = LONGEST_HEARTBEAT_INTERVAL
LEASE_PORT_OFFSET = 2  # the heartbeat lane's default port: the API's + 2 (6445)


@dataclass
class ServeConfig:
    listen: str = layered.option(
        f"0.0.0.0:{DEFAULT_PORT}", "addresses of the gRPC API: HOST:PORT, unix:///path.sock, comma-separated"
    )
    data_dir: str = layered.option("/var/lib/atoll", "where the embedded store lives")
    heartbeat_interval: float = layered.option(3.0, "seconds between agent heartbeats (told to agents)")
    node_status_interval: float = layered.option(
        60.0, "write an unchanged node status at most this often (s)"
    )
    node_grace_period: float = layered.option(8.0, "silence after which a node turns NotReady (s)")
    max_heartbeats_per_second: float = layered.option(
        100.0,
        "heartbeats a second the whole fleet may send: past this many nodes times the interval, "
        "the interval told to agents, and the grace period with it, stretch to nodes / rate "
        "(Nomad's max_heartbeats_per_second); 0 keeps --heartbeat-interval whatever the fleet",
    )
    max_heartbeat_interval: float = layered.option(
        30.0,
        "the longest interval --max-heartbeats-per-second may stretch to (s; at most 60, well inside "
        "the agent's systemd watchdog)",
    )
    pod_eviction_timeout: float = layered.option(
        2.0, "how long a silent node stays NotReady before its pods are declared lost and replaced (s)"
    )
    node_eviction_rate: float = layered.option(
        0.1, "silent nodes per second whose pods may be declared lost, per zone (Kubernetes' default)"
    )
    secondary_node_eviction_rate: float = layered.option(
        0.01, "the same in a zone where --unhealthy-zone-threshold of the nodes are silent"
    )
    unhealthy_zone_threshold: float = layered.option(
        0.55, "share of a zone's nodes silent at once that slows its evictions to the secondary rate"
    )
    large_cluster_size_threshold: int = layered.option(
        50, "a zone with at most this many nodes stops evicting when the threshold is passed"
    )
    service_cluster_ip_range: str = layered.option("10.254.0.0/16", "range services' cluster IPs come from")
    service_node_port_range: str = layered.option(
        "30000-32767", "ports NodePort and LoadBalancer services get on every node: FIRST-LAST"
    )
    api_rate: float = layered.option(200.0, "API calls per second allowed per client (token bucket)")
    api_burst: int = layered.option(400, "API calls a client may make in one burst")
    max_watches_per_client: int = layered.option(100, "open watch/log streams per client")
    max_watches: int = layered.option(10_000, "open watch/log streams in all")
    event_ttl: float = layered.option(3600.0, "events older than this are deleted (s)")
    scheduler_retry_interval: float = layered.option(10.0, "retry unschedulable pods at least this often (s)")
    network_config: str = layered.option(
        "", "flannel-style JSON file with the overlay network config, applied at start"
    )
    lease_ttl: float = layered.option(
        24 * 3600.0, "lifetime of a node's subnet lease in seconds (flannel: 24 h)"
    )
    store: str = layered.option(
        "",
        "the store: sqlite:///PATH (default: <data-dir>/atoll.db, zero setup) or "
        "etcd://HOST:PORT,HOST:PORT,...[/PREFIX] (several coordinators, one leader; keys under /PREFIX)",
    )
    etcd_cafile: str = layered.option(
        "", "CA bundle (PEM) that etcd's server certificates chain to; TLS when set"
    )
    etcd_certfile: str = layered.option("", "client certificate (PEM) for etcd")
    etcd_keyfile: str = layered.option("", "the key of --etcd-certfile (PEM)")
    leader_ttl: int = layered.option(
        3, "etcd store: seconds of the leader lease (a dead leader is replaced after about this long)"
    )
    store_history: int = layered.option(10_000, "store revisions kept for watches to resume from")
    store_sync: str = layered.option("FULL", "SQLite synchronous mode: FULL (durable) or NORMAL")
    compaction_interval: float = layered.option(
        300.0,
        "compact store history this often, keeping one interval of revisions for watches to resume "
        "from, then shrink the database file (s, or 5m; 0 disables)",
        parse=layered.parse_duration,
    )
    max_object_bytes: int = layered.option(
        1024 * 1024, "largest object the store accepts, serialized (bytes; etcd's request limit)"
    )
    max_replicas: int = layered.option(10_000, "largest spec.replicas a replication controller may ask for")
    namespace_quota: list[str] = layered.option(
        ["pods=10000", "replicationcontrollers=1000", "services=1000"],
        "every namespace's quota, Kubernetes ResourceQuota keys: pods, replicationcontrollers, services, "
        "requests.cpu, requests.memory as KEY=QUANTITY, comma-separated; a key left out is unlimited",
        parse=layered.parse_list,
    )
    log_level: str = layered.option("info", "debug, info, warning or error")
    log_format: str = layered.option(
        "text", "main log format: text, or json (one object per line, with context fields)"
    )
    metrics_listen: str = layered.option(
        "", "serve Prometheus metrics over HTTP on HOST:PORT (e.g. 127.0.0.1:9100); empty: off"
    )
    gc_young_threshold: int = layered.option(
        gcpolicy.DEFAULT_YOUNG,
        "allocations between two collections of Python's young generation (the interpreter's own is "
        "700, which makes a coordinator whose heap grows rescan all of it every few seconds in a "
        "burst); 0 keeps the interpreter's thresholds",
    )
    kube_listen: str = layered.option(
        "",
        "serve the Kubernetes REST API (for kubectl and Kubernetes clients) over HTTPS on HOST:PORT, "
        "with the same CA, credentials and roles as the gRPC API; empty: off",
    )
    # Security (see README "Security").
    token_listen: str = layered.option(
        f"0.0.0.0:{DEFAULT_TOKEN_PORT}",
        "addresses for callers without a client certificate (nodes joining with a bootstrap token, "
        "users with bearer tokens): TLS without client certificates; '' to serve none",
    )
    lease_listen: str = layered.option(
        "auto",
        "addresses of the heartbeat lane, a listener for agents' heartbeats alone (so they never queue "
        "behind other calls during a burst), same credentials as --listen; auto: each --listen TCP host "
        f"at its port + {LEASE_PORT_OFFSET} ({DEFAULT_PORT + LEASE_PORT_OFFSET}); '' to serve none "
        "(heartbeats then share the API's listener)",
    )
    handshake_timeout: float = layered.option(
        5.0,
        "drop a connection whose TLS handshake is not done after this long (s; gRPC's default is 120 s)",
        parse=layered.parse_duration,
    )
    max_unauthenticated_conns_per_source: int = layered.option(
        64,
        "open connections one source (an IPv4 address, an IPv6 /64) may hold on the token port; "
        "further ones are reset at once",
    )
    max_unauthenticated_conns: int = layered.option(
        1024, "open connections on the token port in all; further ones are reset at once"
    )
    insecure: bool = layered.option(
        False,
        "serve plain text with no authentication (every caller is admin); only on loopback addresses "
        "and unix sockets, for development",
    )
    advertise_address: str = layered.option(
        "",
        "address (HOST or HOST:PORT) agents and clients reach the coordinator at; goes into its "
        "certificate, admin.conf and join commands (default: the listen address or this host's first IP)",
    )
    cert_san: list[str] = layered.option(
        [], "extra names and IPs for the server certificate, comma-separated", parse=layered.parse_list
    )
    ca_cert: str = layered.option(
        "", "the cluster CA certificate to use (PEM; default: create one in the data dir)"
    )
    ca_key: str = layered.option("", "the key of --ca-cert (PEM, unencrypted)")
    cluster_secret_file: str = layered.option(
        "",
        "file holding the cluster secret (16 bytes or more) that seals the cluster CA in the store; "
        "every coordinator of a cluster on etcd is given the same one",
    )
    cert_lifetime: float = layered.option(
        365 * 86400.0,
        "lifetime of the certificates the coordinator issues (s, or 90m, 12h, 30d, 1y); renewed at 2/3",
        parse=layered.parse_duration,
    )
    node_cert_lifetime: float = layered.option(
        12 * 3600.0,
        "lifetime of node certificates (agents renew at 2/3): short, so a revocation missed "
        "anywhere heals by itself",
        parse=layered.parse_duration,
    )
    ca_lifetime: float = layered.option(
        10 * 365 * 86400.0, "lifetime of a CA the coordinator creates", parse=layered.parse_duration
    )
    audit_log: str = layered.option("", "also append the audit trail to this file (JSON lines)")
    service_external_ip_cidrs: list[str] = layered.option(
        [],
        "ranges (CIDRs, comma-separated) inside which non-admins may give services external IPs; "
        "empty: only admins may set external IPs",
        parse=layered.parse_list,
    )
    # Pod security (see README "Pod security").
    allowed_host_paths: list[str] = layered.option(
        [],
        "host paths pods may mount at pod security level baseline: PATH prefixes, comma-separated, "
        "PATH:ro to allow read-only mounts only; empty: none",
        parse=layered.parse_list,
    )
    allowed_host_ports: list[str] = layered.option(
        list(podsecurity.DEFAULT_HOST_PORTS),
        "host ports pods may publish at pod security level baseline: ports and ranges, comma-separated",
        parse=layered.parse_list,
    )

    def validate(self) -> None:
        check_listen(self.listen)
        if self.token_listen:
            check_listen(self.token_listen, "token_listen")
        if self.lease_listen and self.lease_listen != "auto":
            check_listen(self.lease_listen, "lease_listen")
            lanes = rpc.split_listen(self.lease_listen)
            if any(a.startswith("unix:") for a in lanes):
                raise errors.InvalidArgument(
                    "lease_listen: TCP addresses only (agents reach it over the network)"
                )
            clash = {layered.split_host_port(a, "lease_listen")[1] for a in lanes} & self._other_ports()
            if clash:
                raise errors.InvalidArgument(f"lease_listen: port {min(clash)} is another listener's")
        if self.insecure:
            for address in rpc.split_listen(self.listen) + self.lease_addresses():
                tls.check_plaintext(address)
        if self.store.startswith("etcd://") and not self.insecure and not self.cluster_secret_file:
            raise errors.InvalidArgument(
                "cluster_secret_file: coordinators on etcd share one cluster CA, sealed with a secret "
                "they are all given (e.g. head -c 32 /dev/urandom | base64 > /etc/atoll/cluster-secret)"
            )
        if bool(self.ca_cert) != bool(self.ca_key):
            raise errors.InvalidArgument("ca_cert and ca_key: give both or neither")
        if not 0 <= self.gc_young_threshold <= gcpolicy.MAX_THRESHOLD:
            raise errors.InvalidArgument(f"gc_young_threshold: must be from 0 to {gcpolicy.MAX_THRESHOLD}")
        if self.node_cert_lifetime < 60:
            raise errors.InvalidArgument("node_cert_lifetime: must be at least 60 s")
        if self.cert_lifetime < 1 or self.ca_lifetime < self.cert_lifetime:
            raise errors.InvalidArgument(
                "cert_lifetime: must be at least 1 s, and ca_lifetime at least cert_lifetime"
            )
        for name in (
            "heartbeat_interval",
            "node_status_interval",
            "node_grace_period",
            "scheduler_retry_interval",
        ):
            if getattr(self, name) <= 0:
                raise errors.InvalidArgument(f"{name}: must be positive")
        if self.max_heartbeats_per_second < 0:
            raise errors.InvalidArgument("max_heartbeats_per_second: must not be negative (0: no pacing)")
        if not 0 < self.max_heartbeat_interval <= MAX_HEARTBEAT_INTERVAL:
            # A --heartbeat-interval above it stays as it was: pacing never shortens it.
            raise errors.InvalidArgument(
                f"max_heartbeat_interval: must be positive and at most {MAX_HEARTBEAT_INTERVAL:.0f} s"
            )
        if self.node_grace_period <= self.heartbeat_interval:
            raise errors.InvalidArgument("node_grace_period: must be longer than heartbeat_interval")
        try:
            net = ipaddress.IPv4Network(self.service_cluster_ip_range)
        except ValueError as exc:
            raise errors.InvalidArgument(f"service_cluster_ip_range: {exc}") from None
        if net.prefixlen > 28:
            raise errors.InvalidArgument("service_cluster_ip_range: use a /28 or larger range")
        self.node_port_range  # noqa: B018 - parsed here so that a bad range stops the start
        if self.pod_eviction_timeout < 0:
            raise errors.InvalidArgument("pod_eviction_timeout: must not be negative")
        if self.node_eviction_rate <= 0 or self.secondary_node_eviction_rate < 0:
            raise errors.InvalidArgument(
                "node_eviction_rate: must be positive (secondary_node_eviction_rate: not negative)"
            )
        if not 0 < self.unhealthy_zone_threshold <= 1 or self.large_cluster_size_threshold < 0:
            raise errors.InvalidArgument(
                "unhealthy_zone_threshold: must be in (0, 1] (large_cluster_size_threshold: not negative)"
            )
        if (
            self.api_rate <= 0
            or self.api_burst < 1
            or self.max_watches_per_client < 1
            or self.max_watches < 1
        ):
            raise errors.InvalidArgument("api_rate, api_burst and the stream caps must be positive")
        if not 0.1 <= self.handshake_timeout <= 120:
            raise errors.InvalidArgument("handshake_timeout: must be between 0.1 and 120 seconds")
        if self.max_unauthenticated_conns_per_source < 1 or self.max_unauthenticated_conns < 1:
            raise errors.InvalidArgument(
                "max_unauthenticated_conns_per_source and max_unauthenticated_conns: must be at least 1"
            )
        if self.lease_ttl < 60:
            raise errors.InvalidArgument("lease_ttl: must be at least 60 seconds")
        scheme = self.store.partition("://")[0] if self.store else "sqlite"
        if scheme not in ("sqlite", "etcd") or (self.store and "://" not in self.store):
            raise errors.InvalidArgument(
                f"store: expected sqlite:///PATH or etcd://HOST:PORT,..., got {self.store!r}"
            )
        if scheme == "etcd" and not self.store.removeprefix("etcd://").partition("/")[0]:
            raise errors.InvalidArgument("store: etcd:// needs at least one HOST:PORT")
        if bool(self.etcd_certfile) != bool(self.etcd_keyfile):
            raise errors.InvalidArgument("etcd_certfile and etcd_keyfile: give both or neither")
        if not 1 <= self.leader_ttl <= 60:
            raise errors.InvalidArgument(f"leader_ttl: expected 1..60 seconds, got {self.leader_ttl}")
        if self.store_history < 100:
            raise errors.InvalidArgument("store_history: keep at least 100 revisions")
        if self.compaction_interval < 0:
            raise errors.InvalidArgument("compaction_interval: must not be negative (0 disables)")
        if not 1024 <= self.max_object_bytes <= rpc.MAX_REQUEST_BYTES // 2:
            raise errors.InvalidArgument(
                f"max_object_bytes: must be between 1024 and {rpc.MAX_REQUEST_BYTES // 2} "
                f"(half the largest request), got {self.max_object_bytes}"
            )
        if self.max_replicas < 1:
            raise errors.InvalidArgument("max_replicas: must be at least 1")
        quota.parse_hard(self.namespace_quota)
        if self.store_sync.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise errors.InvalidArgument(
                f"store_sync: expected FULL, NORMAL or EXTRA, got {self.store_sync!r}"
            )
        for i, cidr in enumerate(self.service_external_ip_cidrs):
            try:
                ipaddress.IPv4Network(cidr)
            except ValueError as exc:
                raise errors.InvalidArgument(f"service_external_ip_cidrs[{i}]: {exc}") from None
        podsecurity.PodSecurityConfig.from_config(self.allowed_host_paths, self.allowed_host_ports)
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise errors.InvalidArgument(
                f"log_level: expected debug, info, warning or error, got {self.log_level!r}"
            )
        if self.metrics_listen:
            layered.split_host_port(self.metrics_listen, "metrics_listen")
        if self.kube_listen:
            layered.split_host_port(self.kube_listen, "kube_listen")
            if self.insecure and not tls.is_loopback(self.kube_listen):
                raise errors.InvalidArgument("kube_listen: with --insecure only a loopback address")
        self.log_format = self.log_format.lower()
        if self.log_format not in logs.FORMATS:
            raise errors.InvalidArgument(f"log_format: expected text or json, got {self.log_format!r}")

    @property
    def node_port_range(self) -> range:
        """service_node_port_range as the ports it holds (FIRST-LAST, both included)."""
        return parse_port_range(self.service_node_port_range, "service_node_port_range")

    @property
    def data_path(self) -> pathlib.Path:
        return pathlib.Path(self.data_dir)

    def lease_addresses(self) -> list[str]:
        """The heartbeat lane's addresses: --lease-listen, or under auto each TCP --listen host at
        its port + LEASE_PORT_OFFSET (port 0, a free port, stays 0)."""
        if self.lease_listen != "auto":
            return rpc.split_listen(self.lease_listen)
        taken = self._other_ports()
        result = []
        for address in rpc.split_listen(self.listen):
            if address.startswith("unix:"):
                continue
            host, port = layered.split_host_port(address, "listen")
            lane = port + LEASE_PORT_OFFSET if port else 0
            if lane > 65535 or lane in taken:
                continue  # no room there: that address has no lane (set --lease-listen)
            result.append(f"[{host}]:{lane}" if ":" in host else f"{host}:{lane}")
        return result

    def _other_ports(self) -> set[int]:
        """The fixed TCP ports of every listener but the heartbeat lane."""
        addresses = rpc.split_listen(self.listen) + (
            rpc.split_listen(self.token_listen) if self.token_listen else []
        )
        addresses += [a for a in (self.kube_listen, self.metrics_listen) if a]
        ports = set()
        for address in addresses:
            if address.startswith("unix:"):
                continue
            try:
                ports.add(layered.split_host_port(address, "listen")[1])
            except errors.InvalidArgument:
                continue  # validate() names it
        return ports - {0}

    def listen_ports(self) -> set[int]:
        """TCP ports the coordinator's own listeners take (API, token port and heartbeat lane)."""
        addresses = (
            rpc.split_listen(self.listen)
            + self.lease_addresses()
            + (rpc.split_listen(self.token_listen) if self.token_listen else [])
        )
        return {layered.split_host_port(a, "listen")[1] for a in addresses if not a.startswith("unix:")}


def parse_port_range(text: str, what: str) -> range:
    """ "30000-32767" (Kubernetes' --service-node-port-range) -> range(30000, 32768)."""
    first, sep, last = text.strip().partition("-")
    try:
        low, high = int(first), int(last)
    except ValueError:
        raise errors.InvalidArgument(f"{what}: expected FIRST-LAST, e.g. 30000-32767, got {text!r}") from None
    if not sep or not 1 <= low <= high <= 65535:
        raise errors.InvalidArgument(f"{what}: expected FIRST-LAST within 1-65535, got {text!r}")
    return range(low, high + 1)


def check_listen(listen: str, what: str = "listen") -> None:
    addresses = rpc.split_listen(listen)
    if not addresses:
        raise errors.InvalidArgument(f"{what}: at least one address is required")
    for address in addresses:
        if address.startswith("unix:"):
            if not address.removeprefix("unix:").lstrip("/"):
                raise errors.InvalidArgument(f"{what}: {address!r} names no socket path")
        else:
            layered.split_host_port(address, what)


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help=f"YAML config file (default: ${ENV_PREFIX}CONFIG or {DEFAULT_CONFIG_FILE})"
    )
    layered.add_flags(parser, ServeConfig)


def load_serve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeConfig:
    path = layered.resolve_file(args.config, f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_FILE, environ)
    file_values = layered.read_file(path) if path else {}
    return layered.load(
        ServeConfig,
        env_prefix=ENV_PREFIX,
        args=args,
        file_values=file_values,
        environ=environ,
        file_name=str(path) if path else "config file",
    )


def server_address(flag: str | None, environ: Mapping[str, str], configured: str = "") -> str:
    """The server to call: HOST[:PORT], unix:///path.sock, or several coordinators HOST[:PORT],..."""
    address = flag or environ.get("ATOLL_SERVER") or configured or DEFAULT_SERVER
    if address.startswith("unix:"):
        return address
    result = []
    for one in (a.strip() for a in address.split(",") if a.strip()):
        layered.split_host_port(one, "--server", DEFAULT_PORT)
        result.append(one if ":" in one.rsplit("]", 1)[-1] else f"{one}:{DEFAULT_PORT}")
    if not result:
        raise errors.InvalidArgument(f"--server: expected HOST[:PORT][,HOST[:PORT]...], got {address!r}")
    return ",".join(result)


def names() -> Sequence[str]:
    return layered.names(ServeConfig)
