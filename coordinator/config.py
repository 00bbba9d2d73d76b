"""The coordinator's options: `coordinator serve` and the CLI's connection settings.

Server precedence (later wins): defaults < config file < environment < flags.
Config file: --config, else $ATOLL_COORDINATOR_CONFIG, else
/etc/atoll/coordinator.yaml when it exists. Environment variables are
ATOLL_COORDINATOR_ plus the upper-cased option name.

The CLI finds the server in --server, else $ATOLL_SERVER, else 127.0.0.1:6443;
a unix socket (unix:///path.sock) works too.
"""

from __future__ import annotations

import argparse
import ipaddress
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from atoll import config as layered
from atoll import errors, rpc

ENV_PREFIX = "ATOLL_COORDINATOR_"
DEFAULT_CONFIG_FILE = pathlib.Path("/etc/atoll/coordinator.yaml")
DEFAULT_PORT = 6443
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"


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
    pod_eviction_timeout: float = layered.option(
        2.0, "how long a silent node stays NotReady before its pods are declared lost and replaced (s)"
    )
    service_cluster_ip_range: str = layered.option("10.254.0.0/16", "range services' cluster IPs come from")
    event_ttl: float = layered.option(3600.0, "events older than this are deleted (s)")
    scheduler_retry_interval: float = layered.option(10.0, "retry unschedulable pods at least this often (s)")
    network_config: str = layered.option(
        "", "flannel-style JSON file with the overlay network config, applied at start"
    )
    lease_ttl: float = layered.option(
        24 * 3600.0, "lifetime of a node's subnet lease in seconds (flannel: 24 h)"
    )
    store_history: int = layered.option(10_000, "store revisions kept for watches to resume from")
    store_sync: str = layered.option("FULL", "SQLite synchronous mode: FULL (durable) or NORMAL")
    log_level: str = layered.option("info", "debug, info, warning or error")

    def validate(self) -> None:
        check_listen(self.listen)
        for name in (
            "heartbeat_interval",
            "node_status_interval",
            "node_grace_period",
            "scheduler_retry_interval",
        ):
            if getattr(self, name) <= 0:
                raise errors.InvalidArgument(f"{name}: must be positive")
        if self.node_grace_period <= self.heartbeat_interval:
            raise errors.InvalidArgument("node_grace_period: must be longer than heartbeat_interval")
        try:
            net = ipaddress.IPv4Network(self.service_cluster_ip_range)
        except ValueError as exc:
            raise errors.InvalidArgument(f"service_cluster_ip_range: {exc}") from None
        if net.prefixlen > 28:
            raise errors.InvalidArgument("service_cluster_ip_range: use a /28 or larger range")
        if self.pod_eviction_timeout < 0:
            raise errors.InvalidArgument("pod_eviction_timeout: must not be negative")
        if self.lease_ttl < 60:
            raise errors.InvalidArgument("lease_ttl: must be at least 60 seconds")
        if self.store_history < 100:
            raise errors.InvalidArgument("store_history: keep at least 100 revisions")
        if self.store_sync.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise errors.InvalidArgument(
                f"store_sync: expected FULL, NORMAL or EXTRA, got {self.store_sync!r}"
            )
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise errors.InvalidArgument(
                f"log_level: expected debug, info, warning or error, got {self.log_level!r}"
            )

    @property
    def data_path(self) -> pathlib.Path:
        return pathlib.Path(self.data_dir)


def check_listen(listen: str) -> None:
    addresses = rpc.split_listen(listen)
    if not addresses:
        raise errors.InvalidArgument("listen: at least one address is required")
    for address in addresses:
        if address.startswith("unix:"):
            if not address.removeprefix("unix:").lstrip("/"):
                raise errors.InvalidArgument(f"listen: {address!r} names no socket path")
        else:
            layered.split_host_port(address, "listen")


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


def server_address(flag: str | None, environ: Mapping[str, str]) -> str:
    address = flag or environ.get("ATOLL_SERVER") or DEFAULT_SERVER
    if address.startswith("unix:"):
        return address
    layered.split_host_port(address, "--server", DEFAULT_PORT)
    return address if ":" in address.rsplit("]", 1)[-1] else f"{address}:{DEFAULT_PORT}"


def names() -> Sequence[str]:
    return layered.names(ServeConfig)
