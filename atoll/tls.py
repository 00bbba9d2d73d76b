"""Transport security for atoll.rpc: TLS credentials that follow renewed files, the peer's
verified identity, plain text only on loopback, and CA discovery for joining nodes.

gRPC Python either requires a client certificate or does not ask for one, so
a coordinator has two kinds of TLS listener: mutual TLS (nodes, the
coordinator, certificate users) and server-only TLS (joining nodes and bearer
token users), both with the same server certificate. Unix sockets use gRPC's
local credentials: the socket's file mode (0600) decides who may connect.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import pathlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from atoll import certinfo, errors, pkichild

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyPairFiles:
    """A private key and its certificate on disk, plus the CA that verifies peers."""

    key: pathlib.Path
    cert: pathlib.Path
    ca: pathlib.Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.key.read_bytes(), self.cert.read_bytes(), self.ca.read_bytes()

    def stamp(self) -> tuple[int, ...]:
        stamps: list[int] = []
        for path in (self.key, self.cert, self.ca):
            st = path.stat()
            stamps += [st.st_mtime_ns, st.st_size, st.st_ino]
        return tuple(stamps)


class ReloadingServerCredentials:
    """Server credentials that pick up renewed key and certificate files without a restart.

    gRPC asks `_fetch` for the current configuration at every new connection
    (from its own thread); a changed file is read again, and a half-replaced
    pair (new key, old certificate) is ignored until both match.
    """

    def __init__(
        self, files: KeyPairFiles, *, require_client_cert: bool, keys: pkichild.KeyTool | None = None
    ) -> None:
        self.files = files
        self.keys: pkichild.KeyTool = pkichild.ChildKeyTool() if keys is None else keys
        self.require_client_cert = require_client_cert
        self._stamp: tuple[int, ...] = ()
        self._lock = threading.Lock()
        self.reloads = 0

    def _load(self) -> grpc.ServerCertificateConfiguration:
        key, cert, ca = self.files.read()
        if not self.keys.key_matches(key, cert):
            raise errors.FailedPrecondition(f"{self.files.key} does not belong to {self.files.cert}")
        # The CA follows the leaf, so that joining nodes can discover it (and pin it).
        chain = certinfo.first_pem(cert).rstrip(b"\n") + b"\n" + ca
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        with self._lock:
            self._stamp = self.files.stamp()
            initial = self._load()
        return grpc.dynamic_ssl_server_credentials(
            initial, self._fetch, require_client_authentication=self.require_client_cert
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            with self._lock:
                stamp = self.files.stamp()
                if stamp == self._stamp:
                    return None
                config = self._load()
                self._stamp = stamp
                self.reloads += 1
        except (OSError, errors.AtollError) as exc:
            log.warning("keeping the current TLS certificate: %s", exc)
            return None
        log.info("serving the renewed certificate %s", self.files.cert)
        return config


def channel_credentials(
    ca: bytes, *, key: bytes | None = None, cert: bytes | None = None, token: str | None = None
) -> grpc.ChannelCredentials:
    """TLS towards a server signed by `ca`, with a client certificate and/or a bearer token."""
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    if token:
        return grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return creds


def local_channel_credentials(token: str | None = None) -> grpc.ChannelCredentials:
    """For unix sockets: the caller's identity is whoever may open the socket file."""
    creds = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    if token:
        return grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return creds


def local_server_credentials() -> grpc.ServerCredentials:
    return grpc.local_server_credentials(grpc.LocalConnectionType.UDS)


def is_loopback(address: str) -> bool:
    """True for unix sockets, 127.0.0.0/8, ::1 and localhost: where plain text may listen."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plaintext(address: str, what: str = "--insecure") -> None:
    if not is_loopback(address):
        raise errors.InvalidArgument(
            f"{what}: refusing to listen in plain text on {address}: without TLS only loopback "
            "addresses (127.0.0.0/8, ::1, localhost) and unix sockets are allowed; "
            "drop --insecure to serve mutual TLS"
        )


@dataclass(frozen=True)
class Peer:
    """What the transport proved about a caller."""

    transport: str  # "ssl", "local" (unix socket) or "insecure"
    address: str
    cert_pem: bytes | None = None
    cn: str = ""

    @property
    def verified_cert(self) -> bool:
        return self.transport == "ssl" and self.cert_pem is not None


# The properties of a call's auth context that peer_of reads. gRPC's holds more (every name in the
# certificate, the session's details) and builds it anew for each call.
AUTH_PROPERTIES = ("transport_security_type", "x509_pem_cert", "x509_common_name")


def auth_properties(context: grpc.aio.ServicerContext) -> dict[str, Sequence[bytes]]:
    """What peer_of needs of `context`'s auth context, for a call whose facts are kept (a stream
    held open for as long as its agent runs: 40 objects fewer each, atoll.handoff.CallFacts)."""
    auth = context.auth_context() or {}
    return {key: auth[key] for key in AUTH_PROPERTIES if key in auth}


def peer_of(context: grpc.aio.ServicerContext) -> Peer:
    auth = context.auth_context() or {}
    transport = (auth.get("transport_security_type") or [b"insecure"])[0].decode()
    pem = (auth.get("x509_pem_cert") or [None])[0]
    cn = (auth.get("x509_common_name") or [b""])[0].decode()
    return Peer(transport=transport, address=context.peer() or "", cert_pem=pem, cn=cn)


_CERT_CACHE: dict[bytes, tuple[str, tuple[str, ...], certinfo.Lifetime]] = {}


def describe_cert(pem: bytes) -> tuple[str, tuple[str, ...], certinfo.Lifetime]:
    """(CN, organisations, lifetime) of a peer certificate, parsed once per certificate."""
    found = _CERT_CACHE.get(pem)
    if found is None:
        cert = certinfo.read_certificate(pem)
        found = (cert.cn, cert.orgs, cert.lifetime)
        if len(_CERT_CACHE) > 10_000:
            _CERT_CACHE.clear()
        _CERT_CACHE[pem] = found
    return found


def fetch_server_chain(host: str, port: int, *, timeout: float = 10.0) -> list[bytes]:
    """The certificate chain a TLS server presents (PEM, leaf first), fetched WITHOUT verifying it.

    For discovery only: whatever comes back must be checked against a pin
    before it is trusted (see agent.bootstrap). Blocking; run it in a thread.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host if not _is_ip(host) else None) as conn,
        ):
            # Public from Python 3.13 on; a method of the private _sslobj before.
            chain: Callable[[], list[Any]] | None = getattr(conn, "get_unverified_chain", None) or getattr(
                conn._sslobj,  # type: ignore[attr-defined]
                "get_unverified_chain",
                None,
            )
            if chain is None:
                raise errors.Unimplemented("this Python's ssl module cannot show a server's chain")
            return [_pem(c.public_bytes(_ENCODING_PEM)) for c in chain() or ()]
    except (OSError, ssl.SSLError) as exc:
        raise errors.Unavailable(f"cannot reach {host}:{port} over TLS: {exc}") from None


_ENCODING_PEM = ssl._ssl.ENCODING_PEM  # type: ignore[attr-defined]


def _pem(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# The umask is the process's: two threads that each set it and put back what they found can
# leave it restricted for good (the coordinator's heartbeat lane binds its socket on a thread of
# its own). One at a time, then.
_UMASK_LOCK = threading.Lock()


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files (unix sockets) created within are private to the owner."""
    with _UMASK_LOCK:
        old = os.umask(0o177)
        try:
            yield
        finally:
            os.umask(old)
