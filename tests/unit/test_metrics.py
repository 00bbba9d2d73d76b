"""Both daemons' metrics objects, without a listener: what each hook counts, read from its registry."""

from __future__ import annotations

import pathlib
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from agent.metrics import AgentMetrics, is_restart
from agent.pods import render
from agent.proxy.fake import FakeNetfilter
from agent.runtime.base import ContainerSpec, ImagePullError
from agent.runtime.fake import FakeRuntime
from atoll import agentconfig, errors
from atoll.metrics import Gauges
from atoll.v1 import meta_pb2, node_pb2
from coordinator.api.metrics import CoordinatorMetrics, files_size, nodes_by_condition
from coordinator.config import ServeConfig
from coordinator.store.base import Op
from coordinator.store.memory import MemoryStore


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


# -- the coordinator ---------------------------------------------------------------------------


async def test_api_calls_are_counted_by_method_and_code_and_watches_kept_open() -> None:
    m = CoordinatorMetrics()
    link = m.link()
    r = m.registry
    ctx: Any = None  # the link never looks at the context
    for code in (grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND):
        ticket = await link.admit("/atoll.v1.ClusterService/Get", object(), ctx)
        link.finish("/atoll.v1.ClusterService/Get", ticket, code)
    assert sample(r, "atoll_coordinator_api_requests_total", method="Get", code="OK") == 2
    assert sample(r, "atoll_coordinator_api_requests_total", method="Get", code="NOT_FOUND") == 1
    assert sample(r, "atoll_coordinator_api_request_duration_seconds_count", method="Get") == 3

    watch = await link.admit("/atoll.v1.NodeService/WatchAssignment", object(), ctx)
    logs = await link.admit("/atoll.v1.ClusterService/GetLogs", object(), ctx)
    assert sample(r, "atoll_coordinator_watches_open", method="WatchAssignment") == 1
    assert r.get_sample_value("atoll_coordinator_watches_open", {"method": "GetLogs"}) is None
    link.finish("/atoll.v1.NodeService/WatchAssignment", watch, grpc.StatusCode.CANCELLED)
    link.finish("/atoll.v1.ClusterService/GetLogs", logs, grpc.StatusCode.OK)
    assert sample(r, "atoll_coordinator_watches_open", method="WatchAssignment") == 0
    assert sample(r, "atoll_coordinator_api_requests_total", method="WatchAssignment", code="CANCELLED") == 1


async def test_a_methods_children_are_resolved_once() -> None:
    link = CoordinatorMetrics().link()
    first = await link.admit("/atoll.v1.NodeService/Heartbeat", object(), None)  # type: ignore[arg-type]
    second = await link.admit("/atoll.v1.NodeService/Heartbeat", object(), None)  # type: ignore[arg-type]
    assert first[0] is second[0]  # the same per-method record: no label lookup per heartbeat


def test_scheduling_attempts_by_result() -> None:
    m = CoordinatorMetrics()
    m.observe_attempt("scheduled", 0.002)
    m.observe_attempt("unschedulable", 0.001)
    m.observe_attempt("error", 0.01)
    m.observe_attempt("scheduled", 0.003)
    r = m.registry
    assert sample(r, "atoll_coordinator_scheduling_attempts_total", result="scheduled") == 2
    assert sample(r, "atoll_coordinator_scheduling_attempts_total", result="unschedulable") == 1
    assert sample(r, "atoll_coordinator_scheduling_attempts_total", result="error") == 1
    assert sample(r, "atoll_coordinator_scheduling_duration_seconds_count") == 4


def _node(name: str, ready: int, **more: int) -> node_pb2.Node:
    node = node_pb2.Node()
    node.metadata.name = name
    node.status.conditions.add(type="Ready", status=ready)  # type: ignore[arg-type]
    for kind, status in more.items():
        node.status.conditions.add(type=kind, status=status)  # type: ignore[arg-type]
    return node


def test_nodes_by_condition() -> None:
    t, f, u = (
        meta_pb2.CONDITION_STATUS_TRUE,
        meta_pb2.CONDITION_STATUS_FALSE,
        meta_pb2.CONDITION_STATUS_UNKNOWN,
    )
    nodes = [_node("a", t), _node("b", t, NetworkUnavailable=f), _node("c", u)]
    assert nodes_by_condition(nodes) == [
        (("NetworkUnavailable", "False"), 1.0),
        (("Ready", "True"), 2.0),
        (("Ready", "Unknown"), 1.0),
    ]
    assert nodes_by_condition([]) == []


def test_files_size_counts_the_files_that_exist(tmp_path: pathlib.Path) -> None:
    (tmp_path / "atoll.db").write_bytes(b"x" * 4096)
    (tmp_path / "atoll.db-wal").write_bytes(b"y" * 100)
    paths = [tmp_path / n for n in ("atoll.db", "atoll.db-wal", "atoll.db-shm")]
    assert files_size(paths) == 4196


def test_cluster_figures_are_read_at_scrape_time(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "atoll.db"
    db.write_bytes(b"\0" * 1000)
    nodes = [_node("a", meta_pb2.CONDITION_STATUS_TRUE)]
    state = {"bound": 0, "leading": True, "revision": 7}
    dropped = {"spam": 0, "queue": 0}
    m = CoordinatorMetrics()
    m.watch_cluster(
        nodes=lambda: nodes,
        subnets=lambda: 2,
        pods_bound=lambda: state["bound"],
        leading=lambda: bool(state["leading"]),
        revision=lambda: state["revision"],
        objects=lambda: {"Pod": 5, "Node": len(nodes)},
        store_files=(db, tmp_path / "atoll.db-wal"),
        events_dropped=lambda: dropped,
    )
    r = m.registry
    assert sample(r, "atoll_coordinator_nodes", condition="Ready", status="True") == 1
    assert sample(r, "atoll_coordinator_subnet_leases") == 2
    assert sample(r, "atoll_coordinator_leader") == 1
    assert sample(r, "atoll_coordinator_objects", kind="Pod") == 5
    assert sample(r, "atoll_coordinator_store_size_bytes") == 1000
    state.update(bound=3, leading=False)
    nodes.append(_node("b", meta_pb2.CONDITION_STATUS_TRUE))
    db.write_bytes(b"\0" * 3000)
    assert sample(r, "atoll_coordinator_pods_bound_total") == 3
    dropped.update(spam=15, queue=2)
    assert sample(r, "atoll_coordinator_events_dropped_total", reason="spam") == 15
    assert sample(r, "atoll_coordinator_events_dropped_total", reason="queue") == 2
    assert sample(r, "atoll_coordinator_leader") == 0
    assert sample(r, "atoll_coordinator_nodes", condition="Ready", status="True") == 2
    assert sample(r, "atoll_coordinator_objects", kind="Node") == 2
    assert sample(r, "atoll_coordinator_store_size_bytes") == 3000


def test_a_figure_that_cannot_be_read_is_left_out_of_the_scrape() -> None:
    r = CollectorRegistry()

    def broken() -> list[tuple[tuple[str, ...], float]]:
        raise KeyError("gone")

    r.register(Gauges("atoll_test_broken", "never read", [], broken))
    r.register(Gauges("atoll_test_fine", "read", [], lambda: [((), 1.0)]))
    assert r.get_sample_value("atoll_test_broken") is None
    assert r.get_sample_value("atoll_test_fine") == 1.0


async def test_the_metered_store_times_and_sizes_writes() -> None:
    m = CoordinatorMetrics()
    store = m.store(MemoryStore())
    kv = await store.create("/pods/a", b"12345")
    await store.update("/pods/a", b"123", kv.mod_revision)
    await store.txn([Op("create", "/pods/b", b"1")])
    await store.delete("/pods/a")
    assert (await store.get("/pods/b")) is not None and store.revision == 4
    r = m.registry
    for op in ("create", "update", "txn", "delete"):
        assert sample(r, "atoll_coordinator_store_write_duration_seconds_count", op=op) == 1
    assert sample(r, "atoll_coordinator_store_write_size_bytes_count") == 2  # create and update
    assert sample(r, "atoll_coordinator_store_write_size_bytes_sum") == 8


async def test_a_failed_store_write_is_not_timed_as_one() -> None:
    m = CoordinatorMetrics()
    store = m.store(MemoryStore())
    await store.create("/pods/a", b"x")
    with pytest.raises(errors.AlreadyExists):
        await store.create("/pods/a", b"x")
    assert sample(m.registry, "atoll_coordinator_store_write_duration_seconds_count", op="create") == 1


def test_several_daemons_in_one_process_keep_their_own_figures() -> None:
    a, b = CoordinatorMetrics(), CoordinatorMetrics()
    a.observe_attempt("scheduled", 0.1)
    assert sample(b.registry, "atoll_coordinator_scheduling_attempts_total", result="scheduled") == 0
    c, d = AgentMetrics(), AgentMetrics()
    c.observe_sync(True, 0.1)
    assert sample(d.registry, "atoll_agent_pod_syncs_total", result="ok") == 0


# -- the agent -------------------------------------------------------------------------------


def _spec(container: str, attempt: int) -> ContainerSpec:
    labels = {render.LABEL_CONTAINER: container, render.LABEL_ATTEMPT: str(attempt)}
    return ContainerSpec(name=f"{container}-{attempt}", image="busybox", labels=labels)


def test_is_restart() -> None:
    assert not is_restart(_spec("main", 0).labels)
    assert is_restart(_spec("main", 1).labels)
    assert not is_restart(_spec(render.INFRA, 3).labels)  # a new sandbox is no container restart
    assert not is_restart({})
    assert not is_restart({render.LABEL_CONTAINER: "main", render.LABEL_ATTEMPT: "x"})


async def test_the_metered_runtime_counts_starts_restarts_and_pulls() -> None:
    m = AgentMetrics()
    inner = FakeRuntime(images=("busybox",))
    inner.pullable.add("redis")
    rt = m.runtime(inner)
    for container, attempt in ((render.INFRA, 0), ("main", 0), ("main", 1), (render.INFRA, 1)):
        await rt.start_container(await rt.create_container(_spec(container, attempt)))
    await rt.pull_image("redis")
    with pytest.raises(ImagePullError):
        await rt.pull_image("nosuch")
    r = m.registry
    assert sample(r, "atoll_agent_container_starts_total") == 4
    assert sample(r, "atoll_agent_container_restarts_total") == 1
    assert sample(r, "atoll_agent_image_pulls_total", result="ok") == 1
    assert sample(r, "atoll_agent_image_pulls_total", result="failed") == 1
    assert sample(r, "atoll_agent_image_pull_duration_seconds_count") == 2
    assert inner.calls_of("start_container")  # every call reached the real runtime


async def test_a_restart_counts_once_it_has_started() -> None:
    m = AgentMetrics()
    inner = FakeRuntime(images=("busybox",))
    rt = m.runtime(inner)
    cid = await rt.create_container(_spec("main", 2))
    await rt.remove_container(cid)  # created, never started: no restart
    cid = await rt.create_container(_spec("main", 3))
    await rt.start_container(cid)
    await rt.stop_container(cid, 0)
    await rt.start_container(cid)  # the same container started again (StartExisting): a start only
    assert sample(m.registry, "atoll_agent_container_restarts_total") == 1
    assert sample(m.registry, "atoll_agent_container_starts_total") == 2


async def test_the_metered_netfilter_times_transactions_and_counts_refusals() -> None:
    m = AgentMetrics()
    inner = FakeNetfilter()
    nf = m.netfilter(inner)
    await nf.apply("add table ip atoll\n")
    inner.fail_next = "Error: syntax error"
    with pytest.raises(Exception, match="syntax error"):
        await nf.apply("nonsense\n")
    assert await nf.list_table() is not None
    assert sample(m.registry, "atoll_agent_nftables_transaction_duration_seconds_count") == 2
    assert sample(m.registry, "atoll_agent_nftables_transaction_failures_total") == 1


def test_agent_hooks_and_state_figures() -> None:
    m = AgentMetrics()
    link = {"up": False, "at": "10.0.0.1:6443"}
    m.watch_agent(coordinator=lambda: link["at"], link_up=lambda: bool(link["up"]), pods=lambda: 4)
    m.observe_sync(True, 0.01)
    m.observe_sync(False, 0.2)
    m.observe_overlay(0.05)
    r = m.registry
    assert sample(r, "atoll_agent_pod_syncs_total", result="ok") == 1
    assert sample(r, "atoll_agent_pod_syncs_total", result="failed") == 1
    assert sample(r, "atoll_agent_pod_sync_duration_seconds_count") == 2
    assert sample(r, "atoll_agent_overlay_resyncs_total") == 1
    assert sample(r, "atoll_agent_pods") == 4
    assert sample(r, "atoll_agent_coordinator_link_up", coordinator="10.0.0.1:6443") == 0
    link.update(up=True, at="10.0.0.2:6443")  # failed over, and connected
    assert sample(r, "atoll_agent_coordinator_link_up", coordinator="10.0.0.2:6443") == 1


# -- the option ------------------------------------------------------------------------------


def test_metrics_listen_is_off_by_default_and_checked() -> None:
    cfg, _ = agentconfig.load([], environ={})
    assert cfg.metrics_listen == "" and ServeConfig().metrics_listen == ""
    cfg, _ = agentconfig.load([], environ={"ATOLL_AGENT_METRICS_LISTEN": "127.0.0.1:9101"})
    assert cfg.metrics_listen == "127.0.0.1:9101"
    cfg, _ = agentconfig.load(
        ["--metrics-listen", "[::1]:9102"], environ={"ATOLL_AGENT_METRICS_LISTEN": "127.0.0.1:9101"}
    )
    assert cfg.metrics_listen == "[::1]:9102"  # the flag wins over the environment
    with pytest.raises(errors.InvalidArgument, match="metrics_listen"):
        agentconfig.load(["--metrics-listen", "9101"], environ={})
    ServeConfig(metrics_listen="127.0.0.1:0").validate()
    with pytest.raises(errors.InvalidArgument, match="metrics_listen"):
        ServeConfig(metrics_listen="localhost:http").validate()
