"""atoll.certinfo reads what cryptography reads, and atoll.pkichild does the rest in a child."""

from __future__ import annotations

import asyncio
import base64
import datetime
import pathlib
import random
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from agent.bootstrap import NodeCredentials, ensure_joined
from atoll import certinfo, errors, pki, pkichild

UTC = datetime.UTC


def _cert(
    subject: x509.Name,
    key: pki.PrivateKey,
    *,
    not_before: datetime.datetime = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    not_after: datetime.datetime = datetime.datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC),
) -> bytes:
    signer = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(*rdns: list[x509.NameAttribute]) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName(rdn) for rdn in rdns])


CN, O = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME  # noqa: E741 - X.509's own letter
SUBJECTS = {
    "node": _name([x509.NameAttribute(O, "atoll:nodes")], [x509.NameAttribute(CN, "node-1")]),
    "no CN": _name([x509.NameAttribute(O, "a")], [x509.NameAttribute(O, "b")]),
    "unicode": _name([x509.NameAttribute(CN, "nœud-☃")]),
    "printable and BMP": _name(
        [x509.NameAttribute(CN, "printable", _type=_ASN1Type.PrintableString)],
        [x509.NameAttribute(O, "bmp ☃", _type=_ASN1Type.BMPString)],
    ),
    "teletex, numeric, an unread type": _name(
        [x509.NameAttribute(CN, "café", _type=_ASN1Type.T61String)],
        [x509.NameAttribute(NameOID.SERIAL_NUMBER, "0123", _type=_ASN1Type.NumericString)],
        [x509.NameAttribute(NameOID.SURNAME, "260101000000Z", _type=_ASN1Type.UTCTime)],
    ),
    "multi-valued RDN, two CNs": _name(
        [x509.NameAttribute(CN, "first"), x509.NameAttribute(O, "org")], [x509.NameAttribute(CN, "second")]
    ),
}


@pytest.mark.parametrize("subject", SUBJECTS.values(), ids=list(SUBJECTS))
@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_reads_what_cryptography_reads(subject: x509.Name, kind: str) -> None:
    key = {
        "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[kind]()
    pem = _cert(subject, key)  # type: ignore[arg-type]
    theirs = pki.load_cert(pem)
    ours = certinfo.read_certificate(pem)
    assert ours.cn == pki.subject_cn(theirs)
    assert ours.orgs == pki.subject_orgs(theirs)
    assert ours.lifetime == certinfo.Lifetime.of(theirs)
    assert ours.spki == theirs.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert certinfo.ca_hash(pem) == pki.ca_hash(theirs)
    assert certinfo.public_key_matches(pki.key_pem(key), ours.spki) is (None if kind == "ed25519" else True)  # type: ignore[arg-type]


def test_times_after_2049_are_generalized() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    late = datetime.datetime(2061, 5, 6, 7, 8, 9, tzinfo=UTC)
    early = datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    ours = certinfo.read_certificate(_cert(SUBJECTS["node"], key, not_before=early, not_after=late))
    assert (ours.not_valid_before_utc, ours.not_valid_after_utc) == (early, late)


def test_the_first_certificate_of_a_bundle_is_read() -> None:
    ca = pki.CertificateAuthority.create(3600)
    _, leaf = ca.issue_key_pair(cn="coord", lifetime=60, server=True)
    bundle = b"junk before\n" + leaf + ca.cert_pem
    assert certinfo.read_certificate(bundle).cn == "coord"
    assert certinfo.read_certificate(certinfo.first_pem(bundle)).cn == "coord"


def test_keys_that_do_not_belong_are_told_apart() -> None:
    ca = pki.CertificateAuthority.create(3600)
    key, cert = ca.issue_key_pair(cn="n", lifetime=60)
    other_key, _ = ca.issue_key_pair(cn="n", lifetime=60)
    spki = certinfo.read_certificate(cert).spki
    assert certinfo.public_key_matches(key, spki) is True
    assert certinfo.public_key_matches(other_key, spki) is False
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (
        certinfo.public_key_matches(pki.key_pem(rsa_key), spki) is None
    )  # another algorithm: the child decides
    # Forms this reader leaves to cryptography: SEC1, a key without its public half, garbage.
    sec1 = pki.load_key(key).private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert certinfo.public_key_matches(sec1, spki) is None
    assert (
        certinfo.public_key_matches(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", spki)
        is None
    )
    assert certinfo.public_key_matches(b"", spki) is None


def _ec_pkcs8(private: ec.EllipticCurvePrivateKey, point: bytes) -> bytes:
    """A PKCS#8 P-256 key with the private half of `private` and `point` as its public half."""
    enc = certinfo._encode
    d = private.private_numbers().private_value.to_bytes(32, "big")
    inner = enc(0x30, enc(0x02, b"\x01") + enc(0x04, d) + enc(0xA1, enc(0x03, b"\x00" + point)))
    algorithm = enc(0x30, bytes.fromhex("06072a8648ce3d0201") + bytes.fromhex("06082a8648ce3d030107"))
    der = enc(0x30, enc(0x02, b"\x00") + algorithm + enc(0x04, inner))
    return b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"


def _point(key: ec.EllipticCurvePrivateKey, form: serialization.PublicFormat) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, form)


def test_a_compressed_point_is_left_to_cryptography() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = certinfo.read_certificate(_cert(SUBJECTS["node"], key)).spki
    uncompressed = _ec_pkcs8(key, _point(key, serialization.PublicFormat.UncompressedPoint))
    assert certinfo.public_key_matches(uncompressed, spki) is True
    compressed = _ec_pkcs8(key, _point(key, serialization.PublicFormat.CompressedPoint))
    assert certinfo.public_key_matches(compressed, spki) is None


@pytest.mark.allow_subprocess
def test_a_key_claiming_another_public_half_passes_only_the_quick_reading(tmp_path: pathlib.Path) -> None:
    """read() compares public halves (torn files); the start-up check asks cryptography, which
    refuses a private half that does not make the public one."""
    ca = pki.CertificateAuthority.create(3600)
    victim = ec.generate_private_key(ec.SECP256R1())
    cert = pki.cert_pem(ca.issue(victim.public_key(), cn="node-1", lifetime=600))
    forged = _ec_pkcs8(
        ec.generate_private_key(ec.SECP256R1()), _point(victim, serialization.PublicFormat.UncompressedPoint)
    )
    assert certinfo.public_key_matches(forged, certinfo.read_certificate(cert).spki) is True
    creds = NodeCredentials(tmp_path)
    creds.save(forged, cert, ca.cert_pem)
    assert creds.read() is not None
    assert not creds.sound()
    # At start the agent joins again (here: it has no token, and says why).
    with pytest.raises(errors.FailedPrecondition, match="is damaged"):
        asyncio.run(
            ensure_joined(
                node="node-1", coordinator="127.0.0.1:1", explicit_join_address="", token="", pin="",
                ca_file="", credentials=creds, stop=asyncio.Event(),
            )
        )  # fmt: skip
    creds.save(pki.key_pem(victim), cert, ca.cert_pem)
    assert creds.sound()


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n",
        b"-----BEGIN CERTIFICATE-----\nMIQAAAAA\n-----END CERTIFICATE-----\n",  # 4-byte length, too long
        b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",  # an empty SEQUENCE
    ],
)
def test_malformed_certificates_are_invalid_argument(pem: bytes) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^the thing: not a PEM certificate"):
        certinfo.read_certificate(pem, "the thing")


def test_flipped_bytes_never_raise_anything_else() -> None:
    ca = pki.CertificateAuthority.create(3600)
    _, pem = ca.issue_key_pair(cn="n", orgs=["o"], lifetime=60)
    der = pki.load_cert(pem).public_bytes(serialization.Encoding.DER)
    rng = random.Random(14)
    for _ in range(3000):
        damaged = bytearray(der)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        if rng.random() < 0.2:
            damaged = damaged[: rng.randrange(len(damaged))]
        text = (
            b"-----BEGIN CERTIFICATE-----\n"
            + base64.encodebytes(bytes(damaged))
            + b"\n-----END CERTIFICATE-----\n"
        )
        try:
            certinfo.read_certificate(text)
        except errors.InvalidArgument:
            pass


@pytest.mark.allow_subprocess
@pytest.mark.parametrize("tool", [pkichild.ChildKeyTool, pki.InProcessKeyTool])
def test_the_child_makes_keys_and_checks_what_the_reader_cannot(tool: type[pkichild.KeyTool]) -> None:
    """The agent's child, and the same work in process (benches' hollow agents, the coordinator)."""
    child = tool()
    key, csr = child.new_key_and_csr("node-7")
    request = pki.load_csr(csr)
    assert pki.subject_cn(request) == "node-7"
    ca = pki.CertificateAuthority.create(3600)
    cert = pki.cert_pem(ca.issue(request.public_key(), cn="node-7", lifetime=60))
    assert child.key_matches(key, cert)
    # An Ed25519 key has no public half in PKCS#8 v1: the child answers.
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_cert = _cert(SUBJECTS["node"], ed)
    assert child.key_matches(pki.key_pem(ed), ed_cert)
    assert not child.key_matches(pki.key_pem(ed25519.Ed25519PrivateKey.generate()), ed_cert)
    assert not child.key_matches(
        pki.key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)), cert
    )
    assert child.issued_by(cert, ca.cert_pem)
    assert not child.issued_by(cert, pki.CertificateAuthority.create(3600).cert_pem)
    with pytest.raises(errors.InvalidArgument):
        child.issued_by(b"not a certificate", ca.cert_pem)


@pytest.mark.allow_subprocess
def test_the_agent_never_loads_cryptography() -> None:
    code = (
        "import sys, agent.main, agent.daemon, agent.bootstrap, agent.server\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography' or m == 'atoll.pki'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


class _BrokenChild:
    """A KeyTool whose child cannot run, or refuses the key."""

    def __init__(self, error: errors.AtollError) -> None:
        self.error = error
        self.calls = 0

    def new_key_and_csr(self, cn: str) -> tuple[bytes, bytes]:
        raise self.error

    def issued_by(self, leaf: bytes, ca: bytes) -> bool:
        raise self.error

    def key_matches(self, key: bytes, cert: bytes, *, thorough: bool = False) -> bool:
        self.calls += 1
        if not thorough:
            return pkichild.ChildKeyTool().key_matches(key, cert)  # the reading in this process
        raise self.error


@pytest.mark.parametrize(
    ("error", "sound"),
    [
        (errors.InvalidArgument("cryptography refuses the key"), False),
        (errors.Internal("atoll.pkitool csr failed (status 1): ImportError"), True),
        (errors.Unavailable("atoll.pkitool key-matches took longer than 30s"), True),
    ],
)
def test_only_a_definite_answer_condemns_the_stored_key(
    tmp_path: pathlib.Path, error: errors.AtollError, sound: bool
) -> None:
    ca = pki.CertificateAuthority.create(3600)
    key, cert = ca.issue_key_pair(cn="node-1", lifetime=600)
    tool = _BrokenChild(error)
    creds = NodeCredentials(tmp_path, tool)
    creds.save(key, cert, ca.cert_pem)
    assert creds.sound() is sound
    assert tool.calls >= 1


@pytest.mark.parametrize(
    ("error", "kept"), [(errors.InvalidArgument("unreadable"), False), (errors.Internal("x"), True)]
)
def test_reading_credentials_keeps_them_when_the_check_cannot_run(
    tmp_path: pathlib.Path, error: errors.AtollError, kept: bool
) -> None:
    class Failing(_BrokenChild):
        def key_matches(self, key: bytes, cert: bytes, *, thorough: bool = False) -> bool:
            raise self.error

    ca = pki.CertificateAuthority.create(3600)
    key, cert = ca.issue_key_pair(cn="node-1", lifetime=600)
    creds = NodeCredentials(tmp_path, Failing(error))
    creds.save(key, cert, ca.cert_pem)
    assert (creds.read() is not None) is kept
