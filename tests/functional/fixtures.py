"""Fixtures of in-process clusters, shared by tests/functional and the harness tests.

tests/functional/conftest.py re-exports them; tests elsewhere that start an
in-process coordinator beside something heavier (tests/integration/ironic,
tests/integration/openstack) import them into their own conftest.py.
"""

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
