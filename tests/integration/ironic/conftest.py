"""One real Ironic for the whole test run (session scope), started on a free loopback port."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.functional.ironic.harness import Ironic, ensure_venv


@pytest.fixture(scope="session")
def ironic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ironic]:
    venv, install_seconds = ensure_venv()
    server = Ironic(venv, pathlib.Path(tmp_path_factory.mktemp("ironic"))).start()
    print(
        f"\nironic: install {install_seconds:.1f}s (0 = cached), start {server.startup_seconds:.1f}s at {server.url}"
    )
    try:
        yield server
    finally:
        server.stop()
