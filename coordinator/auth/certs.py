"""The coordinator's side of the PKI: its CA, its own certificates, admin.conf, and signing.

Under `<data-dir>/pki/` (keys 0600, directory 0700):

    ca.crt, ca.key                         the cluster CA (unless --ca-cert/--ca-key name one)
    server.crt, server.key                 served on every TLS listener, CA appended
    coordinator-client.crt, ...client.key  presented to agents (CN atoll:coordinator)

and `<data-dir>/admin.conf`, an admin client config. `ensure()` creates what is
missing and re-issues what is due (two thirds of its lifetime gone), signed by
another CA, or, for the server certificate, missing one of the wanted names;
`run()` calls it periodically so that everything rotates without a restart
(the TLS listeners re-read the files, see atoll.tls).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import pathlib
import re
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from cryptography import x509

from atoll import certinfo, errors, pki, tls, validation
from atoll.aio import wait_or_stop
from coordinator.auth.roles import ROLE_GROUPS, USER_ROLES
from coordinator.client import config as clientconfig

log = logging.getLogger(__name__)

USER_NAME = re.compile(r"[a-z0-9]([-a-z0-9._@]{0,251}[a-z0-9])?\Z")
ADMIN_USER = "admin"


@dataclass(frozen=True)
class PkiSettings:
    data_dir: pathlib.Path
    ca_cert: str = ""
    ca_key: str = ""
    cert_lifetime: float = 365 * 86400.0
    node_cert_lifetime: float = 12 * 3600.0
    ca_lifetime: float = 10 * 365 * 86400.0
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


class ClusterPki:
    def __init__(self, settings: PkiSettings) -> None:
        self.settings = settings
        self.dir = settings.data_dir / "pki"
        self.admin_conf = settings.data_dir / "admin.conf"
        self.server_files = tls.KeyPairFiles(
            self.dir / "server.key", self.dir / "server.crt", self.dir / "ca.crt"
        )
        self.client_files = tls.KeyPairFiles(
            self.dir / "coordinator-client.key", self.dir / "coordinator-client.crt", self.dir / "ca.crt"
        )
        self.ca: pki.CertificateAuthority | None = None
        self.version = 0  # grows whenever the coordinator's client certificate changes
        self._client_creds: grpc.ChannelCredentials | None = None
        # Known once the listeners are bound (port 0 picks one): admin.conf waits for it.
        self.server = ""

    @property
    def authority(self) -> pki.CertificateAuthority:
        assert self.ca is not None, "ensure() first"
        return self.ca

    def ensure(self) -> bool:
        """Create or renew what is due; True when something changed. Blocking: file I/O and signing."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.chmod(0o700)
        if self.ca is None:
            self.ca = self._load_ca()
        changed = self._ensure_pair(
            self.server_files,
            cn="atoll-coordinator",
            orgs=(certinfo.SYSTEM_GROUP,),
            dns=self.settings.dns_names,
            ips=self.settings.ip_addresses,
            server=True,
            client=False,
        )
        if self._ensure_pair(
            self.client_files,
            cn=certinfo.COORDINATOR_CLIENT_CN,
            orgs=(certinfo.SYSTEM_GROUP,),
            server=False,
            client=True,
        ):
            self.version += 1
            self._client_creds = None
            changed = True
        if self.server:
            changed = self._ensure_admin_conf() or changed
        return changed

    def load_or_create_ca(self) -> pki.CertificateAuthority:
        """This data dir's CA (or --ca-cert's), created when there is none (blocking)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._load_ca()

    def adopt_ca(self, ca: pki.CertificateAuthority) -> None:
        """Use `ca` (the cluster's, from the store) and keep a copy in pki/ (blocking)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_path, key_path = self.dir / "ca.crt", self.dir / "ca.key"
        if not cert_path.exists() or cert_path.read_bytes() != ca.cert_pem:
            pki.write_private(key_path, pki.key_pem(ca.key))
            pki.write_public(cert_path, ca.cert_pem)
        self.ca = ca

    def _load_ca(self) -> pki.CertificateAuthority:
        s = self.settings
        if s.ca_cert or s.ca_key:
            try:
                ca = pki.CertificateAuthority.load(
                    pathlib.Path(s.ca_cert).read_bytes(), pathlib.Path(s.ca_key).read_bytes()
                )
            except OSError as exc:
                raise errors.InvalidArgument(f"--ca-cert/--ca-key: {exc}") from None
            # Everything else reads the CA from pki/ca.crt.
            if not (self.dir / "ca.crt").exists() or (self.dir / "ca.crt").read_bytes() != ca.cert_pem:
                pki.write_public(self.dir / "ca.crt", ca.cert_pem)
            return ca
        cert_path, key_path = self.dir / "ca.crt", self.dir / "ca.key"
        if cert_path.exists() and key_path.exists():
            return pki.CertificateAuthority.load(cert_path.read_bytes(), key_path.read_bytes())
        ca = pki.CertificateAuthority.create(s.ca_lifetime)
        pki.write_private(key_path, pki.key_pem(ca.key))
        pki.write_public(cert_path, ca.cert_pem)
        log.info("created the cluster CA %s", cert_path)
        return ca

    def _current(self, files: tls.KeyPairFiles) -> x509.Certificate | None:
        """The certificate of a pair when it is whole, ours and not due; else None."""
        try:
            key, cert_bytes, _ = files.read()
            cert = pki.load_cert(cert_bytes)
            if not pki.key_matches(pki.load_key(key), cert):
                return None
        except (OSError, errors.AtollError):
            return None
        if not self.authority.issued(cert) or certinfo.Lifetime.of(cert).due():
            return None
        return cert

    def _ensure_pair(
        self,
        files: tls.KeyPairFiles,
        *,
        cn: str,
        orgs: Sequence[str],
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool,
        client: bool,
    ) -> bool:
        cert = self._current(files)
        if cert is not None:
            have_dns, have_ips = pki.san_names(cert)
            if set(dns) <= have_dns and {str(ipaddress.ip_address(i)) for i in ips} <= have_ips:
                return False
        key, cert_pem = self.authority.issue_key_pair(
            cn=cn,
            orgs=orgs,
            dns=dns,
            ips=ips,
            lifetime=self.settings.cert_lifetime,
            server=server,
            client=client,
        )
        # Key first: a reader that sees the new certificate finds its key already there.
        pki.write_private(files.key, key)
        pki.write_public(files.cert, cert_pem)
        log.info(
            "issued %s (%s), valid until %s", files.cert.name, cn, pki.load_cert(cert_pem).not_valid_after_utc
        )
        return True

    def _ensure_admin_conf(self) -> bool:
        """Write admin.conf naming this coordinator; a list of several coordinators that the operator
        put there (`coordinator config set-server a,b,c --file admin.conf`) is kept if it names this one."""
        server = self.server
        with contextlib.suppress(OSError, errors.AtollError):
            current = clientconfig.parse(self.admin_conf.read_text(), str(self.admin_conf))
            if self.server in current.servers:
                server = current.server
            cert = pki.load_cert(current.cert)
            if (
                current.server == server
                and current.ca == self.authority.cert_pem
                and self.authority.issued(cert)
                and not certinfo.Lifetime.of(cert).due()
            ):
                return False
        key = pki.new_key()
        cert = self.authority.issue(
            key.public_key(),
            cn=ADMIN_USER,
            orgs=(ROLE_GROUPS["admin"],),
            lifetime=self.settings.cert_lifetime,
        )
        clientconfig.ClientConfig(
            server=server,
            user=ADMIN_USER,
            ca=self.authority.cert_pem,
            cert=pki.cert_pem(cert),
            key=pki.key_pem(key),
        ).write(self.admin_conf)
        log.info(
            "wrote the admin client config %s (valid until %s)", self.admin_conf, cert.not_valid_after_utc
        )
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Renew certificates before they expire, for as long as the coordinator runs."""
        interval = max(0.5, min(60.0, self.settings.cert_lifetime / 20))
        while not stop.is_set():
            await wait_or_stop(stop, interval)
            try:
                await asyncio.to_thread(self.ensure)
            except Exception as exc:  # keep serving what we have; try again next round
                log.warning("renewing the coordinator's certificates failed: %s", exc)

    def agent_credentials(self) -> grpc.ChannelCredentials:
        """TLS with the coordinator's client certificate, for calls to agents."""
        if self._client_creds is None:
            key, cert, ca = self.client_files.read()
            self._client_creds = tls.channel_credentials(ca, key=key, cert=cert)
        return self._client_creds

    def sign_node(self, csr_pem: bytes, node: str) -> bytes:
        """A node certificate for the key in `csr_pem`: CN and DNS name = node, O = atoll:nodes."""
        if not node or not validation.DNS1123_SUBDOMAIN.fullmatch(node):
            raise errors.InvalidArgument(f"invalid node name {node!r}", field="node_name")
        csr = pki.load_csr(csr_pem)
        if pki.subject_cn(csr) != node:
            raise errors.InvalidArgument(
                f"the CSR is for {pki.subject_cn(csr)!r}, not node {node!r}", field="csr"
            )
        cert = self.authority.issue(
            csr.public_key(),
            cn=node,
            orgs=(ROLE_GROUPS["node"],),
            dns=(node,),
            lifetime=min(self.settings.node_cert_lifetime, self.settings.cert_lifetime),
            server=True,
            client=True,
        )
        return pki.cert_pem(cert)

    def sign_user(self, csr_pem: bytes, user: str, role: str, ttl: float) -> bytes:
        check_user(user)
        if role not in USER_ROLES:
            raise errors.InvalidArgument(f"role must be one of {', '.join(USER_ROLES)}", field="role")
        csr = pki.load_csr(csr_pem)
        if pki.subject_cn(csr) != user:
            raise errors.InvalidArgument(f"the CSR is for {pki.subject_cn(csr)!r}, not {user!r}", field="csr")
        lifetime = min(ttl, self.settings.cert_lifetime) if ttl > 0 else self.settings.cert_lifetime
        cert = self.authority.issue(csr.public_key(), cn=user, orgs=(ROLE_GROUPS[role],), lifetime=lifetime)
        return pki.cert_pem(cert)


def check_user(user: str) -> None:
    """User names: lower-case letters, digits and -._@, so never a system name like atoll:..."""
    if not USER_NAME.fullmatch(user):
        raise errors.InvalidArgument(
            f"invalid user name {user!r}: lower-case letters, digits and -._@ only", field="user"
        )


def local_ipv4_addresses() -> list[str]:
    """The IPv4 address of each network interface (for a server listening on 0.0.0.0)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(
                    sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15])
                )  # SIOCGIFADDR
            except OSError:
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    return found
