"""The coordinator's Prometheus metrics (atoll_coordinator_*), served on `--metrics-listen` (off unless set).

- API calls: a call link of the gRPC chain (atoll.callchain.CallInterceptor) counts
  every call by method and status code, times it, and keeps the open
  watches (Watch* server streams) as a gauge. Each method's children are
  resolved once: a heartbeat costs two dict lookups, no label parsing.
- Scheduling: the scheduler reports each attempt (scheduled once its bind
  landed, unschedulable, error when the bind failed) and how long it took;
  pods bound are its own counter, read at scrape time.
- Store: writes are timed and sized by a metered store under the registry;
  the SQLite files' size is read at scrape time.
- Nodes by condition, objects by kind, subnet leases and leadership are read
  from the informers' caches at scrape time: nothing is counted twice.
"""

from __future__ import annotations

import builtins
import os
import pathlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from atoll.callchain import CallInterceptor
from atoll.metrics import LATENCY_BUCKETS, Gauges
from atoll.v1 import meta_pb2
from coordinator.store.base import KV, Op, Range, Store, StoreEvent

SIZE_BUCKETS = (128, 512, 2048, 8192, 32768, 131072, 524288, 1048576)
#: What a scheduling attempt came to.
SCHEDULING_RESULTS = ("scheduled", "unschedulable", "error")


class CoordinatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "atoll_coordinator_api_requests",
            "API calls by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "atoll_coordinator_api_request_duration_seconds",
            "API call latency (a watch: how long it stayed open)",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.watches = Gauge("atoll_coordinator_watches_open", "Server streams open", ["method"], registry=r)
        self.attempts = Counter(
            "atoll_coordinator_scheduling_attempts", "Scheduling attempts by result", ["result"], registry=r
        )
        self.attempt_seconds = Histogram(
            "atoll_coordinator_scheduling_duration_seconds",
            "Time of one scheduling attempt: deciding, and binding when a node fits",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._attempts = {result: self.attempts.labels(result) for result in SCHEDULING_RESULTS}
        self.store_write_seconds = Histogram(
            "atoll_coordinator_store_write_duration_seconds",
            "Store write latency by operation",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_write_bytes = Histogram(
            "atoll_coordinator_store_write_size_bytes",
            "Bytes of each value written",
            buckets=SIZE_BUCKETS,
            registry=r,
        )

    def link(self) -> CallInterceptor:
        return _ApiLink(self)

    def observe_attempt(self, result: str, seconds: float) -> None:
        child = self._attempts.get(result)
        (child if child is not None else self.attempts.labels(result)).inc()
        self.attempt_seconds.observe(seconds)

    def store(self, inner: Store) -> Store:
        return MeteredStore(inner, self)

    def watch_cluster(
        self,
        *,
        nodes: Callable[[], Iterable[Any]],
        subnets: Callable[[], int],
        pods_bound: Callable[[], int],
        leading: Callable[[], bool],
        revision: Callable[[], int],
        objects: Callable[[], Mapping[str, int]] = dict,
        store_files: Sequence[pathlib.Path] = (),
        events_dropped: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        """Figures read from the coordinator's caches at scrape time. `objects`: cached objects by
        kind; `store_files`: the store's files on disk (SQLite's database and WAL; none on etcd);
        `events_dropped`: events not written, by why (EventRecorder.not_recorded)."""
        r = self.registry
        r.register(
            Gauges(
                "atoll_coordinator_nodes",
                "Nodes by condition and status",
                ["condition", "status"],
                lambda: nodes_by_condition(nodes()),
            )
        )
        r.register(
            Gauges(
                "atoll_coordinator_objects",
                "Objects by kind (the informers' caches)",
                ["kind"],
                lambda: [((kind,), float(n)) for kind, n in sorted(objects().items())],
            )
        )
        if store_files:
            files = tuple(store_files)
            r.register(
                Gauges(
                    "atoll_coordinator_store_size_bytes",
                    "Bytes of the store's files on disk",
                    [],
                    lambda: [((), float(files_size(files)))],
                )
            )
        r.register(
            Gauges("atoll_coordinator_subnet_leases", "Subnet leases held", [], lambda: [((), subnets())])
        )
        r.register(
            Gauges(
                "atoll_coordinator_leader", "1 while this coordinator leads", [], lambda: [((), leading())]
            )
        )
        r.register(
            Gauges("atoll_coordinator_store_revision", "The store's revision", [], lambda: [((), revision())])
        )
        r.register(
            _Count("atoll_coordinator_pods_bound", "Pods bound to nodes by this coordinator", pods_bound)
        )
        r.register(
            _Counts(
                "atoll_coordinator_events_dropped",
                "Events not written: spam (over an object's budget) or queue (too many pending)",
                "reason",
                events_dropped,
            )
        )


def nodes_by_condition(nodes: Iterable[Any]) -> list[tuple[tuple[str, ...], float]]:
    """(condition type, status) -> how many nodes, e.g. (("Ready", "True"), 3.0)."""
    counts: dict[tuple[str, str], int] = {}
    for node in nodes:
        for c in node.status.conditions:
            key = (c.type, _STATUS_NAMES.get(c.status, "Unknown"))
            counts[key] = counts.get(key, 0) + 1
    return [(k, float(v)) for k, v in sorted(counts.items())]


_STATUS_NAMES = {
    value: name.removeprefix("CONDITION_STATUS_").title()
    for name, value in meta_pb2.ConditionStatus.items()
    if name != "CONDITION_STATUS_UNSPECIFIED"
}


def files_size(paths: Iterable[pathlib.Path]) -> int:
    """The summed size of the files that exist among `paths` (a WAL may not)."""
    total = 0
    for path in paths:
        try:
            total += os.stat(path).st_size
        except FileNotFoundError:
            pass
    return total


class _Count(Collector):
    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.read())


class _Counts(Collector):
    def __init__(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        self.name, self.documentation, self.label, self.read = name, documentation, label, read

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in sorted(self.read().items()):
            family.add_metric([value], count)
        yield family


class _Method:
    """One API method's children: resolved on its first call, reused by every later one."""

    __slots__ = ("codes", "latency", "metrics", "name", "watches")

    def __init__(self, metrics: CoordinatorMetrics, method: str) -> None:
        self.metrics = metrics
        self.name = method.rsplit("/", 1)[-1]
        self.latency = metrics.request_seconds.labels(self.name)
        # Watches are the streams that stay open for as long as a client follows (not GetLogs).
        self.watches = metrics.watches.labels(self.name) if self.name.startswith("Watch") else None
        self.codes: dict[grpc.StatusCode, Counter] = {}

    def count(self, code: grpc.StatusCode) -> None:
        child = self.codes.get(code)
        if child is None:
            child = self.codes[code] = self.metrics.requests.labels(self.name, code.name)
        child.inc()


class _ApiLink(CallInterceptor):
    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics
        self._methods: dict[str, _Method] = {}

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        m = self._methods.get(method)
        if m is None:
            m = self._methods[method] = _Method(self.metrics, method)
        if m.watches is not None:
            m.watches.inc()
        return (m, time.perf_counter())

    def finish(self, method: str, ticket: Any, code: grpc.StatusCode) -> None:
        m, started = ticket
        if m.watches is not None:
            m.watches.dec()
        m.count(code)
        m.latency.observe(time.perf_counter() - started)


class MeteredStore:
    """A Store that times and sizes writes, then does what `inner` does."""

    def __init__(self, inner: Store, metrics: CoordinatorMetrics) -> None:
        self.inner = inner
        h = metrics.store_write_seconds
        self._create, self._update, self._delete, self._txn = (
            h.labels("create"),
            h.labels("update"),
            h.labels("delete"),
            h.labels("txn"),
        )
        self._bytes = metrics.store_write_bytes

    async def get(self, key: str) -> KV | None:
        return await self.inner.get(key)

    async def list(self, prefix: str, revision: int = 0) -> tuple[builtins.list[KV], int]:
        return await self.inner.list(prefix, revision)

    async def list_range(self, prefix: str, revision: int = 0, *, after: str = "", limit: int = 0) -> Range:
        return await self.inner.list_range(prefix, revision, after=after, limit=limit)

    async def create(self, key: str, value: bytes) -> KV:
        started = time.perf_counter()
        kv = await self.inner.create(key, value)
        self._create.observe(time.perf_counter() - started)
        self._bytes.observe(len(value))
        return kv

    async def update(self, key: str, value: bytes, expected_revision: int | None = None) -> KV:
        started = time.perf_counter()
        kv = await self.inner.update(key, value, expected_revision)
        self._update.observe(time.perf_counter() - started)
        self._bytes.observe(len(value))
        return kv

    async def delete(self, key: str, expected_revision: int | None = None) -> KV:
        started = time.perf_counter()
        kv = await self.inner.delete(key, expected_revision)
        self._delete.observe(time.perf_counter() - started)
        return kv

    async def txn(self, ops: Sequence[Op]) -> builtins.list[KV]:
        started = time.perf_counter()
        kvs = await self.inner.txn(ops)
        self._txn.observe(time.perf_counter() - started)
        return kvs

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[StoreEvent]:
        return self.inner.watch(prefix, from_revision)

    async def compact(self, revision: int) -> None:
        await self.inner.compact(revision)

    @property
    def revision(self) -> int:
        return self.inner.revision

    @property
    def compacted(self) -> int:
        return self.inner.compacted

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Store-specific extras (the SQLite checkpoint, etcd's prefix) pass through.
        return getattr(self.inner, name)
