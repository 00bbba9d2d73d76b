from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from tests.functional.harness import Cluster


@pytest.fixture
async def cluster(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    c = await Cluster(tmp_path).start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def secure(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    """A cluster with its audit log in tmp_path (test_security reads it)."""
    c = await Cluster(tmp_path, audit_log=str(tmp_path / "audit.jsonl")).start()
    try:
        yield c
    finally:
        await c.stop()
