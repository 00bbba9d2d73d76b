"""The cluster CA in the store, sealed with the cluster secret: what several coordinators share.

Every coordinator of a cluster is given the same cluster secret
(`--cluster-secret-file`). The CA's certificate and key live under one store
key, the key sealed with AES-256-GCM under a key derived from that secret
(HKDF-SHA256), the store key bound in as associated data. So a new
coordinator starts with the etcd endpoints and the secret only: it reads the
CA, issues its own serving and client certificates from it, and serves.

The first coordinator on an empty store puts its CA there with a create: when
two start at once, one create wins and the other adopts the winner's CA. A
wrong secret is refused at start, naming the problem, never used to issue.
Tokens need no sharing (they are store objects, kept as digests), and each
coordinator's own certificates stay its own.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pathlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from atoll import errors, pki
from coordinator.store.base import Store

log = logging.getLogger(__name__)

KEY = "/secrets/cluster-ca"
_INFO = b"atoll cluster secret v1: cluster CA"
MIN_SECRET_BYTES = 16


def read_secret(path: str) -> bytes:
    """The cluster secret from its file (surrounding whitespace ignored); at least 16 bytes."""
    try:
        secret = pathlib.Path(path).read_bytes().strip()
    except OSError as exc:
        raise errors.InvalidArgument(f"cluster_secret_file: {exc}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise errors.InvalidArgument(
            f"cluster_secret_file: {path} holds {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed "
            "(e.g. head -c 32 /dev/urandom | base64 > FILE)"
        )
    return secret


def _aead(secret: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"atoll", info=_INFO).derive(secret)
    return AESGCM(key)


def seal(secret: bytes, ca: pki.CertificateAuthority) -> bytes:
    nonce = os.urandom(12)
    sealed = _aead(secret).encrypt(nonce, pki.key_pem(ca.key), KEY.encode())
    record = {
        "cert": ca.cert_pem.decode(),
        "key": base64.b64encode(nonce + sealed).decode(),
        "sealing": "aes-256-gcm+hkdf-sha256",
    }
    return json.dumps(record, sort_keys=True).encode()


def unseal(secret: bytes, value: bytes) -> pki.CertificateAuthority:
    try:
        record = json.loads(value)
        raw = base64.b64decode(record["key"])
        cert = record["cert"].encode()
    except (ValueError, KeyError, TypeError):
        raise errors.InvalidArgument(f"the cluster CA record at {KEY} is damaged") from None
    try:
        key = _aead(secret).decrypt(raw[:12], raw[12:], KEY.encode())
    except InvalidTag:
        raise errors.InvalidArgument(
            "cluster_secret_file: this secret does not open the cluster CA in the store; "
            "every coordinator of a cluster needs the secret the first one was started with"
        ) from None
    return pki.CertificateAuthority.load(cert, key)


async def shared_ca(
    store: Store, secret: bytes, local: pki.CertificateAuthority | None, create: bool = True
) -> pki.CertificateAuthority:
    """The cluster's CA: the store's, else `local` (or a new one) put there first, race-safe."""
    kv = await store.get(KEY)
    if kv is not None:
        ca = unseal(secret, kv.value)
        if local is not None and local.cert_pem != ca.cert_pem:
            log.warning("the cluster CA in the store differs from the one in the data dir: using the store's")
        return ca
    if local is None:
        if not create:
            raise errors.NotFound(f"no cluster CA at {KEY}")
        raise errors.InvalidArgument("no local CA to share")  # the caller creates one first
    try:
        await store.create(KEY, seal(secret, local))
        log.info("put the cluster CA into the store (sealed with the cluster secret)")
        return local
    except (errors.AlreadyExists, errors.Conflict):
        kv = await store.get(KEY)
        assert kv is not None
        log.info("another coordinator put the cluster CA first: adopting it")
        return unseal(secret, kv.value)
