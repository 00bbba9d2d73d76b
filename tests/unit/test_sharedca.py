"""The cluster CA sealed with the cluster secret (coordinator.auth.sharedca), on the memory store."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest

from atoll import errors, pki
from coordinator.auth import sharedca
from coordinator.store.base import KV
from coordinator.store.memory import MemoryStore

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def cas() -> tuple[pki.CertificateAuthority, pki.CertificateAuthority]:
    return pki.CertificateAuthority.create(3600), pki.CertificateAuthority.create(3600)


class RacingStore(MemoryStore):
    """Every get waits until `racers` gets are in flight: all of them see an empty store."""

    def __init__(self, racers: int) -> None:
        super().__init__()
        self._barrier = asyncio.Barrier(racers)
        self._racing = True
        self.creates = 0

    async def create(self, key: str, value: bytes) -> KV:
        self.creates += 1
        return await super().create(key, value)

    async def get(self, key: str) -> KV | None:
        found = await super().get(key)
        if self._racing:
            await self._barrier.wait()
            self._racing = False  # only the first gets race; the losers then read the winner's
        return found


def test_sealed_key_opens_with_the_secret_only(
    cas: tuple[pki.CertificateAuthority, pki.CertificateAuthority],
) -> None:
    ca, _ = cas
    sealed = sharedca.seal(SECRET, ca)
    record = json.loads(sealed)
    assert record["cert"] == ca.cert_pem.decode() and b"PRIVATE KEY" not in sealed
    assert sharedca.unseal(SECRET, sealed).cert_pem == ca.cert_pem
    with pytest.raises(errors.InvalidArgument, match="this secret does not open the cluster CA"):
        sharedca.unseal(b"another secret, just as long....", sealed)
    # A fresh nonce every time: sealing twice never gives the same bytes.
    assert sharedca.seal(SECRET, ca) != sealed


def test_a_tampered_or_damaged_record_is_refused(
    cas: tuple[pki.CertificateAuthority, pki.CertificateAuthority],
) -> None:
    ca, other = cas
    record = json.loads(sharedca.seal(SECRET, ca))
    record["cert"] = other.cert_pem.decode()  # the certificate swapped: the key no longer matches it
    with pytest.raises(errors.AtollError):
        sharedca.unseal(SECRET, json.dumps(record).encode())
    with pytest.raises(errors.InvalidArgument, match="is damaged"):
        sharedca.unseal(SECRET, b"{not json")


def test_the_secret_file_must_hold_enough(tmp_path: pathlib.Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"  tiny\n")
    with pytest.raises(errors.InvalidArgument, match="at least 16"):
        sharedca.read_secret(str(short))
    with pytest.raises(errors.InvalidArgument, match="cluster_secret_file"):
        sharedca.read_secret(str(tmp_path / "missing"))
    good = tmp_path / "good"
    good.write_bytes(SECRET + b"\n")
    assert sharedca.read_secret(str(good)) == SECRET


async def test_coordinators_racing_on_an_empty_store_agree_on_one_ca(
    cas: tuple[pki.CertificateAuthority, pki.CertificateAuthority],
) -> None:
    store = RacingStore(racers=2)
    first, second = cas
    got = await asyncio.gather(
        sharedca.shared_ca(store, SECRET, first), sharedca.shared_ca(store, SECRET, second)
    )
    assert got[0].cert_pem == got[1].cert_pem
    kv = await MemoryStore.get(store, sharedca.KEY)
    assert kv is not None and sharedca.unseal(SECRET, kv.value).cert_pem == got[0].cert_pem
    assert store.creates == 2 and len(store.writes) == 1  # both tried; one create won


async def test_a_coordinator_with_another_secret_cannot_take_the_stores_ca(
    cas: tuple[pki.CertificateAuthority, pki.CertificateAuthority],
) -> None:
    store = MemoryStore()
    ca, mine = cas
    await sharedca.shared_ca(store, SECRET, ca)
    with pytest.raises(errors.InvalidArgument, match="this secret does not open"):
        await sharedca.shared_ca(store, b"not the cluster secret, at all!!", mine)
    assert (await sharedca.shared_ca(store, SECRET, mine)).cert_pem == ca.cert_pem  # the store's wins
