"""Open the store a coordinator's config names: SQLite by default, etcd for several coordinators."""

from __future__ import annotations

import asyncio
import logging
import pathlib

from atoll import errors, files
from coordinator.store.base import Store
from coordinator.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


async def open_store(
    url: str,
    *,
    data_dir: pathlib.Path,
    history_limit: int,
    synchronous: str,
    etcd_cafile: str = "",
    etcd_certfile: str = "",
    etcd_keyfile: str = "",
) -> Store:
    """``sqlite:///PATH`` (or "": ``<data_dir>/atoll.db``) or ``etcd://HOST:PORT,HOST:PORT[/PREFIX]``
    (every key under /PREFIX: clusters can share an etcd).

    The data directory, the store's home and the PKI's whatever the store, is made 0700 first (an
    existing one this process owns is tightened, and the log says so)."""
    if await asyncio.to_thread(files.private_dir, data_dir):
        log.warning("data dir %s was open to other users: now mode 0700", data_dir)
    scheme, _, rest = url.partition("://") if url else ("sqlite", "", "")
    if scheme == "sqlite":
        path = pathlib.Path(rest) if rest else data_dir / "atoll.db"
        return await SqliteStore.open(path, history_limit=history_limit, synchronous=synchronous)
    if scheme == "etcd":
        from coordinator.store.etcd import EtcdStore, EtcdTLS  # here: only etcd users need its client

        tls = (
            EtcdTLS(*await asyncio.to_thread(_read_tls, etcd_cafile, etcd_certfile, etcd_keyfile))
            if etcd_cafile
            else None
        )
        endpoints, _, key_prefix = rest.partition("/")
        return await EtcdStore.open(endpoints, tls=tls, prefix=f"/{key_prefix}" if key_prefix else "")
    raise errors.InvalidArgument(f"store: expected sqlite:///PATH or etcd://HOST:PORT,..., got {url!r}")


def _read_tls(cafile: str, certfile: str, keyfile: str) -> tuple[bytes, bytes, bytes]:
    """The CA bundle, client certificate and key for etcd (the last two may be absent)."""
    try:
        return (
            pathlib.Path(cafile).read_bytes(),
            pathlib.Path(certfile).read_bytes() if certfile else b"",
            pathlib.Path(keyfile).read_bytes() if keyfile else b"",
        )
    except OSError as exc:
        raise errors.InvalidArgument(f"etcd TLS files: {exc}") from None
