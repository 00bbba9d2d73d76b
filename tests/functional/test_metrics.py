"""Both daemons' Prometheus metrics, scraped over HTTP: the counters move with the work done."""

from __future__ import annotations

import asyncio
import pathlib
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from atoll import kinds
from tests.functional.harness import Cluster, eventually
from tests.functional.test_agent_behaviour import make_pod, started

POD = kinds.by_name("Pod")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_coordinator_and_agent_metrics_count_the_work(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, metrics_listen="127.0.0.1:0").start()
    try:
        node = await cluster.add_node("node-0", images=("busybox",), metrics_listen="127.0.0.1:0")
        assert cluster.coordinator.metrics_server is not None and node.agent.metrics_server is not None
        c_port, a_port = cluster.coordinator.metrics_server.port, node.agent.metrics_server.port
        before = await asyncio.to_thread(scrape, c_port)
        assert cluster.client is not None
        node.runtime.pullable.add("redis")  # one pod's image is pulled, the others' are there
        for i in range(3):
            await cluster.client.create(make_pod(f"p{i}", image="redis" if i == 2 else "busybox"))

        async def all_running() -> bool:
            items, _ = await cluster.client.list(POD, "default")  # type: ignore[union-attr]
            return len(items) == 3 and all(p.status.phase == 2 for p in items)  # type: ignore[attr-defined]

        await eventually(all_running, timeout=20, what="3 pods running")
        node.runtime.exit(await started(cluster, node, "p0", 0), 1)
        await started(cluster, node, "p0", 1)  # restarted once
        after = await asyncio.to_thread(scrape, c_port)
        assert (
            value(after, "atoll_coordinator_pods_bound_total")
            - value(before, "atoll_coordinator_pods_bound_total")
            == 3
        )
        created = value(after, "atoll_coordinator_api_requests_total", method="Create", code="OK") - value(
            before, "atoll_coordinator_api_requests_total", method="Create", code="OK"
        )
        assert created == 3
        assert value(after, "atoll_coordinator_api_requests_total", method="Heartbeat", code="OK") >= 1
        assert value(after, "atoll_coordinator_api_request_duration_seconds_count", method="Create") >= 3
        assert value(after, "atoll_coordinator_scheduling_attempts_total", result="scheduled") == 3
        assert value(after, "atoll_coordinator_scheduling_duration_seconds_count") >= 3
        writes = sum(
            value(after, "atoll_coordinator_store_write_duration_seconds_count", op=op)
            for op in ("create", "update", "delete", "txn")
        )
        assert writes >= 3 * 2  # each pod: created, then bound
        assert value(after, "atoll_coordinator_nodes", condition="Ready", status="True") == 1
        assert value(after, "atoll_coordinator_leader") == 1
        assert (
            value(after, "atoll_coordinator_watches_open", method="WatchNode") == 1
        )  # the agent's one stream
        assert value(after, "atoll_coordinator_objects", kind="Pod") == 3
        assert value(after, "atoll_coordinator_objects", kind="Node") == 1
        assert value(after, "atoll_coordinator_store_size_bytes") > 0

        agent = await asyncio.to_thread(scrape, a_port)
        assert value(agent, "atoll_agent_pod_syncs_total", result="ok") >= 3
        assert value(agent, "atoll_agent_pod_sync_duration_seconds_count") >= 3
        # An infra and an app container each, and p0's app container again.
        assert value(agent, "atoll_agent_container_starts_total") == 7
        assert value(agent, "atoll_agent_container_restarts_total") == 1
        assert value(agent, "atoll_agent_image_pulls_total", result="ok") == 1
        assert value(agent, "atoll_agent_image_pull_duration_seconds_count") >= 1
        assert value(agent, "atoll_agent_pods") == 3
        assert value(agent, "atoll_agent_coordinator_link_up", coordinator=node.config.coordinator) == 1
    finally:
        await cluster.stop()
