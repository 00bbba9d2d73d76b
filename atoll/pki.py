"""The cluster's PKI: a CA, keys, certificate signing requests, certificates and pins.

One CA signs every certificate of a cluster: the coordinator's server and
client certificates, the nodes' certificates (CN = node name, O = atoll:nodes)
and users' client certificates (O names the role). Keys are ECDSA P-256: fast
to generate, so a fleet of agents can re-key often, and small on the wire.

Nodes and users generate their keys themselves and send a CSR; private keys
never cross the network. Certificates carry a short clock-skew allowance
before their issue time and are renewed at two thirds of their lifetime
(`renew_at`), so a renewal that fails has a third of the lifetime to succeed.

The CA pin (`ca_hash`) is kubeadm's discovery hash: "sha256:" and the hex
SHA-256 of the CA certificate's DER-encoded SubjectPublicKeyInfo. It stays the
same when the CA is re-issued with the same key, and `openssl x509 -pubkey
-noout -in ca.crt | openssl pkey -pubin -outform der | sha256sum` computes it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import tempfile
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atoll import errors
from atoll.certinfo import Lifetime, now, read_certificate

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_key(pem: bytes, what: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise errors.InvalidArgument(f"{what}: not a PEM private key without passphrase ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise errors.InvalidArgument(f"{what}: unsupported key type {type(key).__name__}")
    return key


def load_cert(pem: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{what}: not a PEM certificate ({exc})") from None


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(_PEM)


def ca_hash(cert: x509.Certificate | bytes) -> str:
    """kubeadm's discovery hash of a CA certificate (see the module docstring): of the SPKI bytes
    as the certificate carries them, which is what the agent reads (atoll.certinfo)."""
    return read_certificate(cert if isinstance(cert, bytes) else cert_pem(cert), "CA certificate").pin


def subject_cn(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def subject_orgs(cert: x509.Certificate | x509.CertificateSigningRequest) -> tuple[str, ...]:
    return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def build_csr(key: PrivateKey, cn: str, orgs: Sequence[str] = ()) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(cn, orgs)).sign(key, _hash_for(key))
    return csr.public_bytes(_PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a CSR and check that its signer holds the key it asks a certificate for."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise errors.InvalidArgument(f"not a PEM certificate signing request ({exc})", field="csr") from None
    if not csr.is_signature_valid:
        raise errors.InvalidArgument("the CSR's signature does not match its key", field="csr")
    return csr


class CertificateAuthority:
    """The cluster CA: issues every certificate of the cluster."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.cert = cert
        self.key = key
        self.cert_pem = cert_pem(cert)
        self.hash = ca_hash(cert)

    @classmethod
    def create(cls, lifetime: float, cn: str = "atoll-ca") -> CertificateAuthority:
        key = new_key()
        start = now()
        name = _name(cn)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(minutes=5))
            .not_valid_after(start + datetime.timedelta(seconds=lifetime))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem_bytes: bytes, key_pem_bytes: bytes) -> CertificateAuthority:
        cert = load_cert(cert_pem_bytes, "CA certificate")
        key = load_key(key_pem_bytes, "CA key")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise errors.InvalidArgument("CA certificate: it is not a CA (basicConstraints CA:TRUE missing)")
        if _public_der(key) != cert.public_key().public_bytes(
            _DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise errors.InvalidArgument("CA key: it does not belong to the CA certificate")
        if Lifetime.of(cert).expired():
            raise errors.FailedPrecondition(f"CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        return cls(cert, key)

    def issue(
        self,
        public_key: object,
        *,
        cn: str,
        orgs: Sequence[str] = (),
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        lifetime: float,
        server: bool = False,
        client: bool = True,
    ) -> x509.Certificate:
        """Sign a leaf certificate for `public_key` (the subject's; from a CSR or a new key)."""
        start = now()
        # Some clock skew between hosts is normal; short test lifetimes get a short allowance.
        skew = datetime.timedelta(seconds=min(300.0, lifetime / 20))
        end = min(start + datetime.timedelta(seconds=lifetime), self.cert.not_valid_after_utc)
        usages = [
            u
            for u, on in (
                (ExtendedKeyUsageOID.SERVER_AUTH, server),
                (ExtendedKeyUsageOID.CLIENT_AUTH, client),
            )
            if on
        ]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs))
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - skew)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns)]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, _hash_for(self.key))

    def issue_key_pair(self, **kwargs: object) -> tuple[bytes, bytes]:
        """A new key and its certificate (for what the coordinator itself holds): (key PEM, cert PEM)."""
        key = new_key()
        cert = self.issue(key.public_key(), **kwargs)  # type: ignore[arg-type]
        return key_pem(key), cert_pem(cert)

    def issued(self, cert: x509.Certificate) -> bool:
        """True when this CA signed `cert`."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def _public_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(_DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(key: PrivateKey, cert: x509.Certificate) -> bool:
    return _public_der(key) == cert.public_key().public_bytes(
        _DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class InProcessKeyTool:
    """atoll.pkichild.KeyTool in this process: what atoll.pkitool runs for the agent, and what a
    process that holds cryptography anyway uses instead of a child per call."""

    def new_key_and_csr(self, cn: str) -> tuple[bytes, bytes]:
        key = new_key()
        return key_pem(key), build_csr(key, cn)

    def issued_by(self, leaf: bytes, ca: bytes) -> bool:
        leaf_cert = load_cert(leaf, "the server's certificate")
        try:
            leaf_cert.verify_directly_issued_by(load_cert(ca, "the CA certificate"))
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def key_matches(self, key: bytes, cert: bytes, *, thorough: bool = False) -> bool:
        """Loading the key checks its private half, so this is always thorough."""
        return key_matches(load_key(key), load_cert(cert))


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def san_names(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) of a certificate's subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def write_file(path: pathlib.Path, data: bytes, mode: int) -> None:
    """Write atomically with `mode` from the start: a reader sees the old file or the new one,
    and a private key is never readable by others, not even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_private(path: pathlib.Path, data: bytes) -> None:
    write_file(path, data, 0o600)


def write_public(path: pathlib.Path, data: bytes) -> None:
    write_file(path, data, 0o644)
