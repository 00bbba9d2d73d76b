"""Fuzzing the cluster API over real gRPC: random objects, names and selectors, no crash ever.

A real coordinator (in-process, real gRPC on a free port, real SQLite) runs on
its own event loop thread for the whole module; each generated call must come
back either OK or with one of the statuses a client can act on — never
INTERNAL or UNKNOWN — and a refused write must not move the store's revision
(nothing half-written). Derandomized, so CI sees the same inputs every run.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll import errors, kinds, rpc
from atoll.v1 import network_pb2, pod_pb2, workloads_pb2
from coordinator.cli.client import Client
from tests.functional.harness import Cluster

T = TypeVar("T")
FUZZ = settings(
    max_examples=1700,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
ACCEPTABLE = (
    errors.InvalidArgument,
    errors.AlreadyExists,
    errors.NotFound,
    errors.FailedPrecondition,
    errors.Conflict,
    errors.Gone,
    errors.ResourceExhausted,
)
COUNT = {"calls": 0}


class Server:
    """The coordinator on a loop in a thread, so that sync hypothesis tests can call it."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster: Cluster = self.run(Cluster(tmp).start)
        assert self.cluster.client is not None
        self.client: Client = self.cluster.client

    def run(self, factory: Callable[[], Awaitable[T]]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(_call(factory), self.loop)
        return future.result(30)

    @property
    def revision(self) -> int:
        store = self.cluster.coordinator.store
        assert store is not None
        return store.revision

    def close(self) -> None:
        self.run(self.cluster.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _call(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("fuzz"))
    yield s
    s.close()


names = st.one_of(
    st.text(max_size=70),
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["", "default", "apache", "-x", "x" * 300, "Á", "a/b", "..", "kube-system"]),
)
small_ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
label_maps = st.dictionaries(st.one_of(names, st.sampled_from(["app", "name", "a.b/c"])), names, max_size=3)


@st.composite
def pods(draw: st.DrawFn) -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name = draw(names)
    pod.metadata.namespace = draw(st.one_of(st.just(""), names))
    pod.metadata.labels.update(draw(label_maps))
    for _ in range(draw(st.integers(0, 3))):
        c = pod.spec.containers.add(name=draw(names), image=draw(st.one_of(names, st.just("busybox"))))
        c.command.extend(draw(st.lists(st.text(max_size=10), max_size=3)))
        for _ in range(draw(st.integers(0, 2))):
            c.ports.add(
                container_port=draw(small_ints), host_port=draw(small_ints), protocol=draw(st.integers(0, 3))
            )
        c.resources.requests.cpu_millis = draw(st.integers(min_value=-(2**62), max_value=2**62))
        for _ in range(draw(st.integers(0, 2))):
            c.volume_mounts.add(name=draw(names), mount_path=draw(st.text(max_size=10)))
    for _ in range(draw(st.integers(0, 2))):
        v = pod.spec.volumes.add(name=draw(names))
        if draw(st.booleans()):
            v.host_path.path = draw(st.text(max_size=10))
    pod.spec.restart_policy = draw(st.integers(0, 3))  # type: ignore[assignment]
    pod.spec.node_name = draw(st.one_of(st.just(""), names))
    return pod


@st.composite
def services(draw: st.DrawFn) -> workloads_pb2.Service:
    svc = workloads_pb2.Service()
    svc.metadata.name = draw(names)
    svc.spec.selector.update(draw(label_maps))
    for _ in range(draw(st.integers(0, 3))):
        svc.spec.ports.add(
            name=draw(names),
            port=draw(small_ints),
            target_port=draw(small_ints),
            protocol=draw(st.integers(0, 3)),
        )
    svc.spec.cluster_ip = draw(st.one_of(st.just(""), st.just("None"), names, st.ip_addresses(v=4).map(str)))
    svc.spec.external_ips.extend(draw(st.lists(st.one_of(names, st.ip_addresses().map(str)), max_size=2)))
    return svc


@st.composite
def controllers(draw: st.DrawFn) -> workloads_pb2.ReplicationController:
    rc = workloads_pb2.ReplicationController()
    rc.metadata.name = draw(names)
    if draw(st.booleans()):
        rc.spec.replicas = draw(st.integers(-5, 5))
    rc.spec.selector.update(draw(label_maps))
    template = draw(pods())
    rc.spec.template.metadata.labels.update(template.metadata.labels)
    rc.spec.template.spec.CopyFrom(template.spec)
    return rc


@st.composite
def networks(draw: st.DrawFn) -> network_pb2.Network:
    net = network_pb2.Network()
    net.metadata.name = draw(st.one_of(st.just("default"), names))
    net.spec.network = draw(st.one_of(names, st.sampled_from(["10.100.0.0/16", "10.0.0.0/8", "1.2.3.4/33"])))
    net.spec.subnet_len = draw(st.integers(-1, 40))
    net.spec.subnet_min = draw(st.one_of(names, st.ip_addresses(v=4).map(str)))
    net.spec.subnet_max = draw(st.one_of(names, st.ip_addresses(v=4).map(str)))
    net.spec.backend.type = draw(st.sampled_from(["vxlan", "udp", ""]))
    net.spec.backend.vni = draw(small_ints)
    return net


objects = st.one_of(pods(), services(), controllers(), networks())


def call(server: Server, factory: Callable[[], Awaitable[Any]], *, write: bool) -> None:
    COUNT["calls"] += 1
    before = server.revision
    try:
        server.run(factory)
    except ACCEPTABLE as exc:
        assert "Traceback" not in str(exc)
        if write:
            assert server.revision == before, f"a refused write moved the store: {exc}"
    except errors.AtollError as exc:
        pytest.fail(f"improper status {type(exc).__name__}: {exc}")


@FUZZ
@given(objects, st.booleans())
def test_create_and_update(server: Server, obj: Any, dry_run: bool) -> None:
    call(server, lambda: server.client.create(obj, dry_run=dry_run), write=True)
    call(server, lambda: server.client.update(obj), write=True)


@FUZZ
@given(
    st.sampled_from(kinds.KINDS),
    names,
    names,
    st.text(max_size=30),
    st.integers(min_value=-5, max_value=2**40),
)
def test_reads_and_deletes(
    server: Server, info: kinds.KindInfo, namespace: str, name: str, selector: str, rv: int
) -> None:
    c = server.client
    call(server, lambda: c.get(info, namespace, name), write=False)
    call(server, lambda: c.list(info, namespace, selector), write=False)
    call(server, lambda: c.delete(info, namespace, name), write=True)

    async def watch_one() -> None:
        stream = c.watch(info, namespace, selector, rv)
        try:
            await asyncio.wait_for(stream.__anext__(), 0.05)
        except (TimeoutError, StopAsyncIteration):
            pass
        finally:
            await stream.aclose()

    call(server, watch_one, write=False)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["Create", "Get", "List", "Update", "Delete"]))
def test_raw_bytes(server: Server, payload: bytes, method: str) -> None:
    """Garbage on the wire is INVALID_ARGUMENT, never INTERNAL."""
    COUNT["calls"] += 1

    async def send() -> None:
        channel = server.client._channel  # the CLI client's own channel
        fn = channel.unary_unary(f"/atoll.v1.ClusterService/{method}")
        try:
            await fn(payload, timeout=5)
        except grpc.aio.AioRpcError as err:
            raise rpc.error_from_rpc(err) from None

    call(server, send, write=method in ("Create", "Update", "Delete"))


def test_zz_count() -> None:
    assert COUNT["calls"] >= 10_000, COUNT
