"""Revoking node certificates: deleting a Node cuts its host off at once, not when its certificate expires.

Every node certificate the coordinator signs (join, renewal) is recorded under
``/nodecerts/<node>/<serial>`` with its expiry. Deleting the Node moves those
serials to ``/revokedcerts/<serial>`` in one transaction. Every coordinator
keeps the revoked serials in memory, current through a watch (a list again
when the watch falls behind), and the auth interceptor refuses a revoked
certificate on every call without a store read. Entries are dropped once the
certificate has expired anyway; node certificates are short-lived
(--node-cert-lifetime, 12 h), so a revocation some coordinator missed heals.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable

from cryptography import x509

from atoll import errors
from atoll.aio import wait_or_stop
from coordinator.store.base import Op, Store

log = logging.getLogger(__name__)

ISSUED = "/nodecerts/"
REVOKED = "/revokedcerts/"
PRUNE_INTERVAL = 600.0


@functools.lru_cache(maxsize=4096)
def certificate_facts(cert_pem: bytes) -> tuple[str, float]:
    """(serial as hex, expiry as epoch seconds) of a PEM certificate; cached, as every call shows one."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return format(cert.serial_number, "x"), cert.not_valid_after_utc.timestamp()


async def record_issued(store: Store, node: str, cert_pem: bytes) -> None:
    serial, expires = certificate_facts(cert_pem)
    await store.create(f"{ISSUED}{node}/{serial}", json.dumps({"notAfter": expires}).encode())


async def revoke_node(store: Store, node: str) -> int:
    """Revoke every certificate issued to `node`; returns how many. Idempotent."""
    issued, _ = await store.list(f"{ISSUED}{node}/")
    ops: list[Op] = []
    for kv in issued:
        serial = kv.key.rsplit("/", 1)[1]
        if await store.get(f"{REVOKED}{serial}") is None:
            ops.append(Op("create", f"{REVOKED}{serial}", kv.value))
        ops.append(Op("delete", kv.key, expected_revision=kv.mod_revision))
    for start in range(0, len(ops), 64):  # etcd caps the ops of one transaction
        await store.txn(ops[start : start + 64])
    if issued:
        log.info("revoked %d certificates of node %s", len(issued), node, extra={"node": node})
    return len(issued)


class RevocationList:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._revoked: dict[str, float] = {}  # serial -> expiry
        self.synced = asyncio.Event()

    def is_revoked(self, cert_pem: bytes) -> bool:
        serial, _ = certificate_facts(cert_pem)
        return serial in self._revoked

    async def _relist(self) -> int:
        items, revision = await self._store.list(REVOKED)
        self._revoked = {kv.key.removeprefix(REVOKED): json.loads(kv.value)["notAfter"] for kv in items}
        self.synced.set()
        return revision

    async def run(self, stop: asyncio.Event) -> None:
        revision = await self._relist()
        pruner = asyncio.create_task(self._prune(stop))
        try:
            while not stop.is_set():
                try:
                    async for event in self._store.watch(REVOKED, revision):
                        serial = event.kv.key.removeprefix(REVOKED)
                        if event.type == "put":
                            self._revoked[serial] = json.loads(event.kv.value)["notAfter"]
                        else:
                            self._revoked.pop(serial, None)
                        revision = event.revision
                        if stop.is_set():
                            return
                except errors.Gone:
                    revision = await self._relist()
        finally:
            pruner.cancel()

    async def _prune(self, stop: asyncio.Event) -> None:
        """Forget revocations of certificates that have expired anyway (any coordinator may)."""
        while not await wait_or_stop(stop, PRUNE_INTERVAL):
            now = self._clock()
            for serial, expires in list(self._revoked.items()):
                if expires < now:
                    try:
                        await self._store.delete(f"{REVOKED}{serial}")
                    except errors.NotFound:
                        pass
