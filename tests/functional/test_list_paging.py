"""Finding 6 (d): List pages with `limit` and a continue token over real gRPC, pages
read one snapshot, and a list too big for one message is cut into pages, not failed."""

from __future__ import annotations

import asyncio
import base64
import pathlib

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2
from coordinator.api import paging
from coordinator.cli.main import main
from tests.functional.harness import Cluster

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")


def pod(name: str, *, pad: int = 0, team: str = "") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    if team:
        p.metadata.labels["team"] = team
    c = p.spec.containers.add(name="main", image="busybox")
    if pad:
        c.env.add(name="PAD", value="x" * pad)
    return p


async def test_limit_and_continue_page_through_one_snapshot(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, insecure=True, compaction_interval=0).start()
    try:
        c = cluster.client
        assert c is not None
        for i in range(250):
            await c.create(pod(f"p{i:03}", team="a" if i % 2 else "b"))
        first = await c.list_page(POD, "default", limit=100)
        assert len(first.items) == 100 and first.continue_token
        assert first.remaining_item_count == 150
        # Writes after the first page do not show in the later pages of the same list.
        await c.create(pod("p999"))
        await c.delete(POD, "default", "p200")
        second = await c.list_page(POD, "default", limit=100, token=first.continue_token)
        third = await c.list_page(POD, "default", limit=100, token=second.continue_token)
        assert (len(second.items), second.remaining_item_count) == (100, 50)
        assert len(third.items) == 50 and not third.continue_token
        assert not third.HasField("remaining_item_count")
        assert first.resource_version == second.resource_version == third.resource_version
        names = [kinds.unwrap(o)[1].metadata.name for r in (first, second, third) for o in r.items]  # type: ignore[attr-defined]
        assert names == [f"p{i:03}" for i in range(250)]

        # The client (and so the CLI) pages through on its own; now at the current revision.
        items, revision = await c.list(POD, "default", chunk_size=30)
        assert len(items) == 250 and revision > first.resource_version
        assert "p999" in {o.metadata.name for o in items} and "p200" not in {o.metadata.name for o in items}  # type: ignore[attr-defined]

        # With a selector the count of what follows is unknown, as in Kubernetes.
        team = await c.list_page(POD, "default", "team=a", limit=100)
        assert len(team.items) == 100 and team.continue_token and not team.HasField("remaining_item_count")
        rest = await c.list_page(POD, "default", "team=a", limit=100, token=team.continue_token)
        assert len(rest.items) == 25 and not rest.continue_token

        with pytest.raises(errors.InvalidArgument) as bad:
            await c.list_page(POD, "default", limit=10, token="not-a-token")
        assert bad.value.field == "continue_token"
        with pytest.raises(errors.InvalidArgument) as other:
            await c.list_page(NODE, "", limit=10, token=first.continue_token)
        assert other.value.field == "continue_token"
        # A token made up: a key that is no string of bytes, a revision that is a bool.
        for forged in ('{"rv":1,"start":"/pods/default/\\ud800"}', '{"rv":true,"start":"/pods/default/p1"}'):
            with pytest.raises(errors.InvalidArgument) as made_up:
                await c.list_page(
                    POD, "default", limit=10, token=base64.urlsafe_b64encode(forged.encode()).decode()
                )
            assert made_up.value.field == "continue_token"
        with pytest.raises(errors.InvalidArgument) as negative:
            await c.list_page(POD, "default", limit=-1)
        assert negative.value.field == "limit"

        # Once the snapshot's revision is compacted the token expires: list again.
        store = cluster.coordinator.store
        assert store is not None
        await store.compact(store.revision)
        with pytest.raises(errors.Gone, match="continue token expired"):
            await c.list_page(POD, "default", limit=100, token=second.continue_token)
    finally:
        await cluster.stop()


async def test_a_list_too_big_for_one_message_comes_in_pages(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real budget is paging.PAGE_BYTES (3 MiB, under the 4 MiB other clients accept); 1 MiB keeps it small.
    monkeypatch.setattr(paging, "PAGE_BYTES", 1024 * 1024)
    cluster = await Cluster(tmp_path, insecure=True).start()
    try:
        c = cluster.client
        assert c is not None
        for i in range(10):
            await c.create(pod(f"big-{i}", pad=300 * 1024))
        page = await c.list_page(POD, "default")  # no limit: as many as fit
        assert len(page.items) == 3 and page.continue_token and page.remaining_item_count == 7
        assert page.ByteSize() < 1024 * 1024 + 64 * 1024
        items, _ = await c.list(POD, "default", chunk_size=0)
        assert sorted(o.metadata.name for o in items) == [f"big-{i}" for i in range(10)]  # type: ignore[attr-defined]
    finally:
        await cluster.stop()


async def test_cli_get_pages_with_chunk_size(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = await Cluster(tmp_path, insecure=True).start()
    try:
        assert cluster.client is not None
        for i in range(25):
            await cluster.client.create(pod(f"p{i:02}"))
        code = await asyncio.to_thread(
            main, [*cluster.cli_args(), "get", "pods", "--chunk-size", "10", "-o", "name"]
        )
        out, _ = capsys.readouterr()
        assert code == 0 and out.split() == [f"pod/p{i:02}" for i in range(25)]
    finally:
        await cluster.stop()
