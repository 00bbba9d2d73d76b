"""One real Ironic for the whole test run (session scope), started on a free loopback port."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.functional.fixtures import cluster
from tests.integration.ironic.harness import Ironic, ensure_venv

# `cluster`: the in-process coordinator of tests/functional, beside the real services.
__all__ = ["cluster"]

_HERE = pathlib.Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here needs the heavy harness: `-m "not harness"` leaves them out."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.harness)


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
