"""Fuzzing the cluster API over real gRPC: random objects, names and selectors, no crash ever.

A real coordinator (in-process, real gRPC on a free port, real SQLite) runs on
its own event loop thread for the whole module; each generated call must come
back either OK or with one of the statuses a client can act on — never
INTERNAL or UNKNOWN — and a refused write must leave its object as it was
(nothing half-written). The store's revision is no measure of that: the
controllers write too (a replication controller's status, its pods, events),
so the object is compared, without its status and resource version, before and
after. Derandomized, so CI sees the same inputs every run.
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
from atoll.v1 import cluster_pb2, network_pb2, pod_pb2, workloads_pb2
from coordinator.client.api import Client
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
        # The rate limit has its own tests (test_limits): here every call must reach validation.
        self.cluster: Cluster = self.run(Cluster(tmp, api_rate=1e6, api_burst=10**6).start)
        assert self.cluster.client is not None
        self.client: Client = self.cluster.client

    def run(self, factory: Callable[[], Awaitable[T]]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(_call(factory), self.loop)
        return future.result(30)

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


_valid_names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True)
names = st.one_of(
    st.text(max_size=70),
    _valid_names,
    st.sampled_from(["", "default", "apache", "-x", "x" * 300, "Á", "a/b", "..", "kube-system"]),
    # A valid name and a final control character: `$` in re.match once let "web\n" through.
    st.builds(str.__add__, _valid_names, st.sampled_from(["\n", "\r", "\t", "\x00"])),
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


Target = tuple[kinds.KindInfo, str, str]


def target_of(obj: Any) -> Target:
    return kinds.of(obj), obj.metadata.namespace, obj.metadata.name


async def snapshot(server: Server, target: Target | None) -> bytes | None:
    """The stored object as a write would change it (no status, no resource version), or None.

    Read from the store itself: a read through the API would count against the rate limit.
    """
    if target is None:
        return None
    info, namespace, name = target
    registry = server.cluster.coordinator.registry
    assert registry is not None
    try:
        obj = await registry.get(info, (namespace or "default") if info.namespaced else "", name)
    except errors.NotFound:
        return None
    if "status" in obj.DESCRIPTOR.fields_by_name:
        obj.ClearField("status")
    obj.metadata.resource_version = 0
    return obj.SerializeToString(deterministic=True)


def call(server: Server, factory: Callable[[], Awaitable[Any]], *, write: Target | None = None) -> None:
    COUNT["calls"] += 1
    before = server.run(lambda: snapshot(server, write))
    try:
        server.run(factory)
    except ACCEPTABLE as exc:
        assert "Traceback" not in str(exc)
        COUNT[type(exc).__name__] = COUNT.get(type(exc).__name__, 0) + 1
        after = server.run(lambda: snapshot(server, write))
        assert after == before, f"a refused write changed {write}: {exc}"
    except errors.AtollError as exc:
        pytest.fail(f"improper status {type(exc).__name__}: {exc}")


@FUZZ
@given(objects, st.booleans())
def test_create_and_update(server: Server, obj: Any, dry_run: bool) -> None:
    call(server, lambda: server.client.create(obj, dry_run=dry_run), write=target_of(obj))
    call(server, lambda: server.client.update(obj), write=target_of(obj))


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
    call(server, lambda: c.get(info, namespace, name))
    call(server, lambda: c.list(info, namespace, selector))
    call(server, lambda: c.delete(info, namespace, name), write=(info, namespace, name))

    async def watch_one() -> None:
        stream = c.watch(info, namespace, selector, rv)
        try:
            await asyncio.wait_for(stream.__anext__(), 0.05)
        except (TimeoutError, StopAsyncIteration):
            pass
        finally:
            await stream.aclose()

    call(server, watch_one)


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

    call(server, send, write=raw_target(method, payload))


def raw_target(method: str, payload: bytes) -> Target | None:
    """What the server would write if it parsed `payload` as far as we can; None if nothing can."""
    request_types = {
        "Create": cluster_pb2.CreateRequest,
        "Update": cluster_pb2.UpdateRequest,
        "Delete": cluster_pb2.DeleteRequest,
    }
    if method not in request_types:
        return None
    request = request_types[method]()
    try:
        request.ParseFromString(payload)
        if isinstance(request, cluster_pb2.DeleteRequest):
            return kinds.by_kind(request.kind), request.namespace, request.name
        if request.object.WhichOneof("kind") is None:
            return None
        return target_of(kinds.unwrap(request.object)[1])
    except Exception:  # unparsable or an unknown kind: the server refuses it before any write
        return None


def test_zz_count() -> None:
    print(f"fuzzed gRPC calls: {COUNT}")
    assert COUNT["calls"] >= 10_000, COUNT
    assert COUNT.get("ResourceExhausted", 0) < COUNT["calls"] // 100, "calls stopped short of validation"
