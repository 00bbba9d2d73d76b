"""One real OpenStack control plane for the whole test run (session scope), on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.fixtures import cluster
from tests.integration.openstack.controlplane import ControlPlane

# `cluster`: the in-process coordinator of tests/functional, beside the real services.
__all__ = ["cluster"]

_HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here needs the heavy harness: `-m "not harness"` leaves them out."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.harness)


@pytest.fixture(scope="session")
def openstack_cloud() -> Iterator[ControlPlane]:
    plane = ControlPlane().start()
    t = plane.timings
    print(
        f"\nopenstack: install {t['install']:.1f}s (0 = cached), up in {t['start']:.1f}s "
        f"(schemas {t['schemas']:.1f}s, APIs {t['apis']:.1f}s, compute {t['compute']:.1f}s)"
    )
    with pytest.MonkeyPatch.context() as mp:
        # `coordinator provision --os-cloud ...` reads the harness's clouds.yaml.
        mp.setenv("OS_CLIENT_CONFIG_FILE", str(plane.clouds_yaml))
        try:
            yield plane
        finally:
            plane.stop()
