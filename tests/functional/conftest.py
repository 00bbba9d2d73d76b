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
