"""What a certificate says, read without the cryptography package.

The agent only ever *reads* certificates: its own (subject, validity, public
key), the coordinator's client certificate on each new connection, and the
CA a joining node pins. Importing cryptography cost it about 11 MB of
resident memory (its Rust library and Python modules) for reads that a small
DER walker does, so the agent reads here and leaves what needs cryptography
(new keys, CSRs, signature checks) to a short-lived child (atoll.pkichild).
The coordinator, which signs, uses atoll.pki on top of these readers.

Only the parts of X.509 that Atoll reads are decoded: the subject's CN and O
attributes, the validity and the SubjectPublicKeyInfo. Anything malformed is
InvalidArgument. The readers never verify a signature: callers read
certificates that TLS verified already, their own files, or (when joining) a
chain they pin by hash and then verify through the child.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from atoll import errors

# Subject organisations with a meaning to Atoll.
NODES_GROUP = "atoll:nodes"
SYSTEM_GROUP = "atoll:system"
COORDINATOR_CLIENT_CN = "atoll:coordinator"

_UTC = datetime.UTC

_SEQUENCE, _SET, _INTEGER, _BIT_STRING, _OCTET_STRING, _NULL, _OID = 0x30, 0x31, 0x02, 0x03, 0x04, 0x05, 0x06
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_CONTEXT_0, _CONTEXT_1 = 0xA0, 0xA1
_OID_CN = bytes.fromhex("0603550403")  # 2.5.4.3
_OID_O = bytes.fromhex("060355040a")  # 2.5.4.10
_OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")  # 1.2.840.10045.2.1
_OID_RSA = bytes.fromhex("06092a864886f70d010101")  # 1.2.840.113549.1.1.1
_STRINGS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x14: "utf-8",  # TeletexString, as cryptography reads it
    0x12: "ascii",  # NumericString
    0x1A: "ascii",  # VisibleString
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


def now() -> datetime.datetime:
    return datetime.datetime.now(_UTC)


class _Validity(Protocol):
    @property
    def not_valid_before_utc(self) -> datetime.datetime: ...
    @property
    def not_valid_after_utc(self) -> datetime.datetime: ...


@dataclass(frozen=True)
class Lifetime:
    """When a certificate is valid and when it should be renewed."""

    not_before: datetime.datetime
    not_after: datetime.datetime

    @classmethod
    def of(cls, cert: _Validity) -> Lifetime:
        """Of a Certificate from here or a cryptography certificate (same attribute names)."""
        return cls(cert.not_valid_before_utc, cert.not_valid_after_utc)

    @property
    def renew_at(self) -> datetime.datetime:
        return self.not_before + (self.not_after - self.not_before) * 2 / 3

    def expired(self, at: datetime.datetime | None = None) -> bool:
        return (at or now()) >= self.not_after

    def due(self, at: datetime.datetime | None = None) -> bool:
        return (at or now()) >= self.renew_at


class _Tlv(NamedTuple):
    tag: int
    head: int  # where the tag byte is
    start: int  # where the contents begin
    end: int  # where the contents end


def _tlv(der: bytes, pos: int, end: int) -> _Tlv:
    if pos + 2 > end:
        raise ValueError("truncated")
    tag, length, start = der[pos], der[pos + 1], pos + 2
    if tag & 0x1F == 0x1F:
        raise ValueError("a high tag number")
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or start + count > end:
            raise ValueError("a bad length")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    if start + length > end:
        raise ValueError("truncated")
    return _Tlv(tag, pos, start, start + length)


def _children(der: bytes, parent: _Tlv) -> list[_Tlv]:
    found, pos = [], parent.start
    while pos < parent.end:
        child = _tlv(der, pos, parent.end)
        found.append(child)
        pos = child.end
    return found


def _expect(item: _Tlv, tag: int, what: str) -> _Tlv:
    if item.tag != tag:
        raise ValueError(f"{what}: tag {item.tag:#04x}, expected {tag:#04x}")
    return item


def _whole(der: bytes, tag: int, what: str) -> _Tlv:
    item = _expect(_tlv(der, 0, len(der)), tag, what)
    if item.end != len(der):
        raise ValueError(f"{what}: trailing bytes")
    return item


def _pem_blocks(pem: bytes, labels: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
    """(label, DER) of each PEM block whose label is one of `labels`, in order."""
    blocks, pos = [], 0
    while (begin := pem.find(b"-----BEGIN ", pos)) >= 0:
        close = pem.find(b"-----", begin + 11)
        if close < 0:
            break
        label = pem[begin + 11 : close]
        footer = b"-----END " + label + b"-----"
        end = pem.find(footer, close + 5)
        if end < 0:
            raise ValueError(f"no END line for {label.decode(errors='replace')}")
        if label in labels:
            body = b"".join(pem[close + 5 : end].split())
            try:
                blocks.append((label, base64.b64decode(body, validate=True)))
            except binascii.Error as exc:
                raise ValueError(f"bad base64 ({exc})") from None
        pos = end + len(footer)
    return blocks


def first_pem(chain: bytes) -> bytes:
    """The first certificate of a PEM bundle (a leaf followed by its CA)."""
    end = b"-----END CERTIFICATE-----"
    index = chain.find(end)
    return chain if index < 0 else chain[: index + len(end)] + b"\n"


def _time(der: bytes, item: _Tlv) -> datetime.datetime:
    text = der[item.start : item.end].decode("ascii")
    if not text[:-1].isdigit():
        raise ValueError(f"time {text!r}")
    if item.tag == _UTC_TIME and len(text) == 13 and text.endswith("Z"):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"  # RFC 5280 4.1.2.5.1
    elif item.tag != _GENERALIZED_TIME or len(text) != 15 or not text.endswith("Z"):
        raise ValueError(f"time {text!r}: not UTCTime or GeneralizedTime in UTC")
    return datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=_UTC)


def _attributes(der: bytes, name: _Tlv) -> list[tuple[bytes, str]]:
    """(attribute type OID, value) of a Name, in order."""
    found = []
    for rdn in _children(der, _expect(name, _SEQUENCE, "name")):
        for pair in _children(der, _expect(rdn, _SET, "relative distinguished name")):
            oid, value = _children(der, _expect(pair, _SEQUENCE, "attribute"))
            kind = der[oid.head : oid.end]
            encoding = _STRINGS.get(value.tag)
            if encoding is None:
                if kind in (_OID_CN, _OID_O):
                    raise ValueError(f"CN or O: unsupported string tag {value.tag:#04x}")
                continue  # an attribute Atoll does not read
            found.append((kind, der[value.start : value.end].decode(encoding)))
    return found


@dataclass(frozen=True)
class Certificate:
    """The parts of a certificate Atoll reads. The validity attributes carry cryptography's names."""

    cn: str
    orgs: tuple[str, ...]
    not_valid_before_utc: datetime.datetime
    not_valid_after_utc: datetime.datetime
    spki: bytes  # the DER SubjectPublicKeyInfo, as signed

    @property
    def lifetime(self) -> Lifetime:
        return Lifetime.of(self)

    @property
    def pin(self) -> str:
        return pin_of(self.spki)


def read_certificate(pem: bytes, what: str = "certificate") -> Certificate:
    """The first CERTIFICATE block of `pem`, read; InvalidArgument naming `what` when malformed."""
    try:
        blocks = _pem_blocks(pem, (b"CERTIFICATE",))
        if not blocks:
            raise ValueError("no CERTIFICATE block")
        der = blocks[0][1]
        outer = _children(der, _whole(der, _SEQUENCE, "certificate"))
        fields = _children(der, _expect(outer[0], _SEQUENCE, "tbsCertificate"))
        if fields and fields[0].tag == _CONTEXT_0:  # version
            fields = fields[1:]
        _expect(fields[0], _INTEGER, "serial number")
        validity = _children(der, _expect(fields[3], _SEQUENCE, "validity"))
        attributes = _attributes(der, fields[4])
        spki = _expect(fields[5], _SEQUENCE, "subjectPublicKeyInfo")
        not_before, not_after = _time(der, validity[0]), _time(der, validity[1])
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise errors.InvalidArgument(f"{what}: not a PEM certificate ({exc})") from None
    cns = [value for oid, value in attributes if oid == _OID_CN]
    return Certificate(
        cn=cns[0] if cns else "",
        orgs=tuple(value for oid, value in attributes if oid == _OID_O),
        not_valid_before_utc=not_before,
        not_valid_after_utc=not_after,
        spki=der[spki.head : spki.end],
    )


def pin_of(spki: bytes) -> str:
    """kubeadm's discovery hash of a DER SubjectPublicKeyInfo (see atoll.pki)."""
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def ca_hash(cert: Certificate | bytes) -> str:
    return (cert if isinstance(cert, Certificate) else read_certificate(cert, "CA certificate")).pin


def parse_pin(text: str) -> str:
    """Normalise a --ca-hash value; refuse anything but sha256:<64 hex digits>."""
    kind, sep, digest = text.strip().partition(":")
    digest = digest.lower()
    if (
        not sep
        or kind.lower() != "sha256"
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise errors.InvalidArgument(f"ca_hash: expected sha256:<64 hex digits>, got {text!r}")
    return f"sha256:{digest}"


def _public_key_of_spki(spki: bytes) -> tuple[bytes, bytes]:
    """(AlgorithmIdentifier, subjectPublicKey BIT STRING) of a SubjectPublicKeyInfo, both as DER."""
    algorithm, bits = _children(spki, _whole(spki, _SEQUENCE, "subjectPublicKeyInfo"))
    _expect(algorithm, _SEQUENCE, "algorithm")
    _expect(bits, _BIT_STRING, "subjectPublicKey")
    return spki[algorithm.head : algorithm.end], spki[bits.head : bits.end]


def _encode(tag: int, contents: bytes) -> bytes:
    n = len(contents)
    if n < 0x80:
        return bytes((tag, n)) + contents
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + contents


def _public_key_of_private(der: bytes) -> tuple[bytes, bytes] | None:
    """(AlgorithmIdentifier, public key BIT STRING) held in a PKCS#8 EC or RSA private key, as
    they appear in a SubjectPublicKeyInfo; None for a form read only by cryptography."""
    fields = _children(der, _whole(der, _SEQUENCE, "private key"))
    algorithm, inner = _expect(fields[1], _SEQUENCE, "algorithm"), _expect(fields[2], _OCTET_STRING, "key")
    algorithm_der = der[algorithm.head : algorithm.end]
    oid = _children(der, algorithm)[0]
    key = _tlv(der, inner.start, inner.end)
    if der[oid.head : oid.end] == _OID_EC_PUBLIC_KEY:
        # ECPrivateKey (RFC 5915): version, privateKey, [0] parameters, [1] publicKey.
        for item in _children(der, _expect(key, _SEQUENCE, "EC private key")):
            if item.tag == _CONTEXT_1:
                bits = _tlv(der, item.start, item.end)
                return algorithm_der, der[bits.head : _expect(bits, _BIT_STRING, "public key").end]
        return None  # a key saved without its public half
    if der[oid.head : oid.end] == _OID_RSA:
        # RSAPrivateKey (RFC 8017): version, modulus, publicExponent, ...
        parts = _children(der, _expect(key, _SEQUENCE, "RSA private key"))
        modulus, exponent = _expect(parts[1], _INTEGER, "modulus"), _expect(parts[2], _INTEGER, "exponent")
        public = _encode(_SEQUENCE, der[modulus.head : exponent.end])
        return algorithm_der, _encode(_BIT_STRING, b"\x00" + public)
    return None


_EC_POINT_FORMS = {0x02, 0x03}  # compressed; 0x04 is uncompressed


def _point_form(public: tuple[bytes, bytes]) -> int:
    bits = _tlv(public[1], 0, len(public[1]))
    return public[1][bits.start + 1] if bits.end > bits.start + 1 else -1


def public_key_matches(key_pem: bytes, spki: bytes) -> bool | None:
    """Whether a PKCS#8 private key (PEM) holds the public key of `spki`. None when this reader
    cannot tell (another key form, or unreadable): the caller asks cryptography through the child."""
    try:
        blocks = _pem_blocks(key_pem, (b"PRIVATE KEY",))
        public = _public_key_of_private(blocks[0][1]) if blocks else None
        if public is None:
            return None
        wanted = _public_key_of_spki(spki)
        if public[0] != wanted[0]:
            return None  # the same key may name its algorithm two ways: cryptography decides
        if (
            public != wanted
            and public[0] == wanted[0]
            and _EC_POINT_FORMS & {_point_form(public), _point_form(wanted)}
        ):
            return None  # an EC point written compressed on one side: the same key, two ways
        return public == wanted
    except (ValueError, IndexError):
        return None
