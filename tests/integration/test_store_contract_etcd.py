"""The store contract (tests/store_contract.py) over etcd: the run's real 3-member cluster.

Each test gets a key prefix of its own (``etcd://.../PREFIX``), so it sees an
empty store on the shared etcd.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from coordinator.store.base import Store
from coordinator.store.etcd import EtcdStore
from tests.integration.etcd import EtcdCluster
from tests.store_contract import *  # noqa: F403 - the shared suite, collected here

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def store(etcd_cluster: EtcdCluster) -> AsyncIterator[Store]:
    made = await EtcdStore.open(etcd_cluster.endpoints, prefix=f"/contract-{uuid.uuid4().hex[:8]}")
    try:
        yield made
    finally:
        await made.close()
