"""What only the in-memory store does: a bounded history (the shared contract is tests/store_contract.py,
run over every store by tests/functional/test_store_contract.py)."""

from __future__ import annotations

import pytest

from atoll import errors
from coordinator.store.memory import MemoryStore


async def test_a_watch_older_than_the_kept_history_is_gone() -> None:
    s = MemoryStore(history_limit=5)
    for i in range(10):
        await s.create(f"/pods/default/p{i}", b"x")
    with pytest.raises(errors.Gone):
        async for _ in s.watch("/pods/", 2):
            pass
    events = []
    async for e in s.watch("/pods/", 6):
        events.append(e.revision)
        if e.revision == 10:
            break
    assert events == [7, 8, 9, 10]
