"""The coordinator's Prometheus metrics (atoll_coordinator_*), served on `--metrics-listen` (off unless set).

- API calls: a call link of the gRPC chain (atoll.rpc.CallInterceptor) counts
  every call by method and status code, times it, and keeps the open
  watches (server streams) as a gauge.
- Scheduling: the scheduler reports each attempt (bound, unschedulable) and
  how long deciding took; pods bound are its own counter, read at scrape time.
- Store: writes are timed and sized by a metered store under the registry.
- Nodes by condition, subnet leases and leadership are read from the
  informers' caches at scrape time: nothing is counted twice.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from atoll.metrics import LATENCY_BUCKETS, Gauges
from atoll.rpc import CallInterceptor
from atoll.v1 import meta_pb2
from coordinator.store.base import KV, Op, Store, StoreEvent

SIZE_BUCKETS = (128, 512, 2048, 8192, 32768, 131072, 524288, 1048576)


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
            "Time to decide one pod's node",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
        self.attempts.labels(result).inc()
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
    ) -> None:
        """Figures read from the coordinator's caches at scrape time."""

        def by_condition() -> list[tuple[tuple[str, ...], float]]:
            counts: dict[tuple[str, str], int] = {}
            for node in nodes():
                for c in node.status.conditions:
                    key = (
                        c.type,
                        meta_pb2.ConditionStatus.Name(c.status).removeprefix("CONDITION_STATUS_").title(),
                    )
                    counts[key] = counts.get(key, 0) + 1
            return [(k, float(v)) for k, v in sorted(counts.items())]

        r = self.registry
        r.register(
            Gauges(
                "atoll_coordinator_nodes",
                "Nodes by condition and status",
                ["condition", "status"],
                by_condition,
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


class _Count(Collector):
    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.read())


class _ApiLink(CallInterceptor):
    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name = method.rsplit("/", 1)[-1]
        streaming = name.startswith("Watch") or name.startswith("Stream")
        if streaming:
            self.metrics.watches.labels(name).inc()
        return (name, streaming, time.perf_counter())

    def finish(self, method: str, ticket: Any, code: grpc.StatusCode) -> None:
        name, streaming, started = ticket
        if streaming:
            self.metrics.watches.labels(name).dec()
        self.metrics.requests.labels(name, code.name).inc()
        self.metrics.request_seconds.labels(name).observe(time.perf_counter() - started)


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
