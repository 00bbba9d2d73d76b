"""Trust in the coordinator: PKI (certs), tokens, roles, the auth interceptor and the audit log.

`Security.create()` builds them from the serve config; the coordinator puts
`listeners()` and `interceptor` on its server and `bind()`s the addresses it
got, after which admin.conf is written and join commands can be printed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

import grpc

from atoll import config as layered
from atoll import rpc
from atoll.connlimit import ConnLimits
from atoll.v1 import cluster_pb2
from coordinator.auth import sharedca
from coordinator.auth.audit import AuditLog
from coordinator.auth.certs import ClusterPki, PkiSettings, local_ipv4_addresses
from coordinator.auth.interceptor import AuthInterceptor
from coordinator.auth.revocation import RevocationList
from coordinator.auth.tokens import TokenAuthenticator
from coordinator.config import DEFAULT_PORT, DEFAULT_TOKEN_PORT, ServeConfig
from coordinator.objects.registry import Registry
from coordinator.store.base import Store

log = logging.getLogger(__name__)

_WILDCARDS = ("0.0.0.0", "::", "")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _tcp(listen: str) -> list[tuple[str, int]]:
    return [
        layered.split_host_port(a, "listen") for a in rpc.split_listen(listen) if not a.startswith("unix:")
    ]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Security:
    def __init__(self, cfg: ServeConfig, registry: Registry) -> None:
        self.cfg = cfg
        self.audit = AuditLog(cfg.audit_log)
        self.tokens = TokenAuthenticator(registry)
        self.revocations = RevocationList(registry.store)
        self.interceptor = AuthInterceptor(
            self.tokens, self.audit, insecure=cfg.insecure, revoked=self.revocations
        )
        self.pki: ClusterPki | None = None
        self.info = cluster_pb2.GetClusterInfoResponse()
        advertise = cfg.advertise_address
        self._advertise_host, self._advertise_port = ("", 0)
        if advertise:
            self._advertise_host, self._advertise_port = layered.split_host_port(
                advertise, "advertise_address", 0
            )
        if not cfg.insecure:
            dns, ips = self._names()
            self.pki = ClusterPki(
                PkiSettings(
                    data_dir=cfg.data_path,
                    ca_cert=cfg.ca_cert,
                    ca_key=cfg.ca_key,
                    cert_lifetime=cfg.cert_lifetime,
                    node_cert_lifetime=cfg.node_cert_lifetime,
                    ca_lifetime=cfg.ca_lifetime,
                    dns_names=tuple(dns),
                    ip_addresses=tuple(ips),
                )
            )

    def _names(self) -> tuple[list[str], list[str]]:
        """The server certificate's DNS names and IPs: loopback, the host name, the listen and
        advertise addresses (every interface's for a wildcard listener), and --cert-san."""
        cfg = self.cfg
        # rpc.COORDINATOR_NAME: what a channel to several coordinators verifies against.
        dns = ["localhost", socket.gethostname().lower(), rpc.COORDINATOR_NAME]
        ips = ["127.0.0.1", "::1"]
        hosts = [h for h, _ in _tcp(cfg.listen)] + (
            [h for h, _ in _tcp(cfg.token_listen)] if cfg.token_listen else []
        )
        if self._advertise_host:
            hosts.append(self._advertise_host)
        for host in hosts:
            if host in _WILDCARDS:
                ips += local_ipv4_addresses()
            elif _is_ip(host):
                ips.append(str(ipaddress.ip_address(host)))
            else:
                dns.append(host)
        for extra in cfg.cert_san:
            (ips if _is_ip(extra) else dns).append(extra)
        return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))

    async def share_ca(self, store: Store, secret: bytes) -> None:
        """Take the cluster's CA from the store, or put ours there first (coordinator.auth.sharedca)."""
        if self.pki is None:
            return
        kv = await store.get(sharedca.KEY)
        if kv is not None:
            ca = sharedca.unseal(secret, kv.value)
        else:
            local = await asyncio.to_thread(self.pki.load_or_create_ca)
            ca = await sharedca.shared_ca(store, secret, local)
        await asyncio.to_thread(self.pki.adopt_ca, ca)

    def prepare(self) -> None:
        """Create or load the CA and the coordinator's certificates (blocking)."""
        if self.pki is not None:
            self.pki.ensure()

    def _mutual(self) -> grpc.ServerCredentials | None:
        if self.pki is None:
            return None
        from atoll import pki, tls

        return tls.ReloadingServerCredentials(
            self.pki.server_files, require_client_cert=True, keys=pki.InProcessKeyTool()
        ).credentials()

    def lease_listeners(self) -> list[rpc.Listener]:
        """The heartbeat lane's listeners: the API's credentials, on their own addresses."""
        addresses = self.cfg.lease_addresses()
        return rpc.listeners(",".join(addresses), self._mutual()) if addresses else []

    def listeners(self) -> list[rpc.Listener]:
        cfg = self.cfg
        if self.pki is None:
            return rpc.listeners(cfg.listen, None)
        from atoll import pki, tls

        mutual = self._mutual()
        result = rpc.listeners(cfg.listen, mutual)
        if cfg.token_listen:
            server_only = tls.ReloadingServerCredentials(
                self.pki.server_files, require_client_cert=False, keys=pki.InProcessKeyTool()
            ).credentials()
            # Anyone may connect here without credentials: caps per source and in total.
            limits = ConnLimits(
                per_source=cfg.max_unauthenticated_conns_per_source, total=cfg.max_unauthenticated_conns
            )
            result += [
                lst
                for lst in rpc.listeners(cfg.token_listen, server_only, limits)
                if not lst.address.startswith("unix:")
            ]
        return result

    def bind(self, ports: list[int]) -> None:
        """Learn the bound ports; write admin.conf and the cluster info (blocking)."""
        cfg = self.cfg
        tcp = _tcp(cfg.listen)
        main_port = ports[0] if ports else (tcp[0][1] if tcp else DEFAULT_PORT)
        token_port = ports[len(tcp)] if cfg.token_listen and len(ports) > len(tcp) else DEFAULT_TOKEN_PORT
        public = self._public_host(tcp)
        port = self._advertise_port or main_port
        local = next((h for h, _ in tcp if h not in _WILDCARDS), "127.0.0.1")
        if self._advertise_host:
            admin_server = _hostport(self._advertise_host, port)
        elif tcp:
            admin_server = _hostport(local, main_port)
        else:
            admin_server = rpc.split_listen(cfg.listen)[0]
        self.info = cluster_pb2.GetClusterInfoResponse(
            server=_hostport(public, port),
            token_server=_hostport(public, token_port) if cfg.token_listen and self.pki else "",
        )
        if self.pki is not None:
            self.pki.server = admin_server
            self.pki.ensure()
            self.info.ca_certificate = self.pki.authority.cert_pem
            self.info.ca_hash = self.pki.authority.hash

    def _public_host(self, tcp: list[tuple[str, int]]) -> str:
        if self._advertise_host:
            return self._advertise_host
        specific = [h for h, _ in tcp if h not in _WILDCARDS]
        if specific:
            return specific[0]
        return next(
            (ip for ip in local_ipv4_addresses() if not ipaddress.ip_address(ip).is_loopback), "127.0.0.1"
        )

    def announce(self) -> None:
        """What an operator needs at start: where admin.conf is and the CA pin for joining."""
        if self.pki is None:
            log.warning(
                "serving WITHOUT TLS or authentication (--insecure): every caller on %s is admin",
                self.cfg.listen,
            )
            return
        log.info("cluster CA %s, pin (agents' --ca-hash): %s", self.pki.server_files.ca, self.info.ca_hash)
        log.info(
            "admin client config: %s (coordinator --config %s get nodes)",
            self.pki.admin_conf,
            self.pki.admin_conf,
        )
        log.info(
            "join hosts with: coordinator token create, then atoll-agent --coordinator %s "
            "--join-token <token> --ca-hash %s",
            self.info.server,
            self.info.ca_hash,
        )

    async def run(self, stop: asyncio.Event) -> None:
        if self.pki is not None:
            await asyncio.gather(self.pki.run(stop), self.revocations.run(stop))

    def close(self) -> None:
        self.audit.close()
