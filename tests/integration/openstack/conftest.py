"""One real OpenStack control plane for the whole test run (session scope), on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.functional.openstack.controlplane import ControlPlane


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
