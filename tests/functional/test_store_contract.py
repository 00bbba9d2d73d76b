"""The store contract (tests/store_contract.py) over the memory store and the SQLite store."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from coordinator.store.base import Store
from coordinator.store.memory import MemoryStore
from coordinator.store.sqlite import SqliteStore
from tests.store_contract import *  # noqa: F403 - the shared suite, collected here


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    made: Store = (
        MemoryStore() if request.param == "memory" else await SqliteStore.open(tmp_path / "atoll.db")
    )
    try:
        yield made
    finally:
        await made.close()
