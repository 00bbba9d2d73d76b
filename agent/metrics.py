"""The agent's Prometheus metrics (atoll_agent_*), served on `--metrics-listen` (off unless set).

Counters and histograms sit where the work happens: pod syncs (PodManager's
hook), container starts and image pulls (a metered runtime under the pod
syncer), overlay resyncs (NodeNetworking's hook) and nftables transactions
(a metered Netfilter). What already exists as state (pods held, containers'
restart counts, the coordinator link) is read at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from agent.proxy import Netfilter
from agent.runtime.base import ContainerInfo, ContainerRuntime, ContainerSpec, NetworkResult, PodNetworkSpec
from atoll.metrics import LATENCY_BUCKETS, Gauges


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.pod_syncs = Counter("atoll_agent_pod_syncs", "Pod syncs by result", ["result"], registry=r)
        self.pod_sync_seconds = Histogram(
            "atoll_agent_pod_sync_duration_seconds",
            "Time of one pod sync",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.container_starts = Counter("atoll_agent_container_starts", "Containers started", registry=r)
        self.image_pulls = Counter("atoll_agent_image_pulls", "Image pulls by result", ["result"], registry=r)
        self.image_pull_seconds = Histogram(
            "atoll_agent_image_pull_duration_seconds",
            "Time of one image pull",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overlay_resyncs = Counter(
            "atoll_agent_overlay_resyncs", "Overlay applies (kernel resyncs)", registry=r
        )
        self.overlay_resync_seconds = Histogram(
            "atoll_agent_overlay_resync_duration_seconds",
            "Time of one overlay apply",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.nft_seconds = Histogram(
            "atoll_agent_nftables_transaction_duration_seconds",
            "Time of one nftables transaction (nft -f)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.nft_failures = Counter(
            "atoll_agent_nftables_transaction_failures", "nft transactions refused", registry=r
        )
        # Children resolved once: the hot paths do no label lookups.
        self._sync_ok, self._sync_failed = self.pod_syncs.labels("ok"), self.pod_syncs.labels("failed")
        self._pull_ok, self._pull_failed = self.image_pulls.labels("ok"), self.image_pulls.labels("failed")

    def observe_sync(self, ok: bool, seconds: float) -> None:
        (self._sync_ok if ok else self._sync_failed).inc()
        self.pod_sync_seconds.observe(seconds)

    def observe_overlay(self, seconds: float) -> None:
        self.overlay_resyncs.inc()
        self.overlay_resync_seconds.observe(seconds)

    def watch_agent(
        self,
        coordinator: str,
        link_up: Callable[[], bool],
        pods: Callable[[], int],
        restarts: Callable[[], int],
    ) -> None:
        """Figures read from the agent's state at scrape time."""
        r = self.registry
        r.register(
            Gauges(
                "atoll_agent_coordinator_link_up",
                "1 while the coordinator answers",
                ["coordinator"],
                lambda: [((coordinator,), 1.0 if link_up() else 0.0)],
            )
        )
        r.register(
            Gauges("atoll_agent_pods", "Pods assigned to this node", [], lambda: [((), float(pods()))])
        )
        r.register(
            Gauges(
                "atoll_agent_container_restarts",
                "Restarts of the pods' containers, summed",
                [],
                lambda: [((), float(restarts()))],
            )
        )

    def runtime(self, inner: ContainerRuntime) -> ContainerRuntime:
        return MeteredRuntime(inner, self)

    def netfilter(self, inner: Netfilter) -> Netfilter:
        return MeteredNetfilter(inner, self)


class MeteredRuntime:
    """A ContainerRuntime that counts starts and pulls, then does what `inner` does."""

    def __init__(self, inner: ContainerRuntime, metrics: AgentMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def version(self) -> str:
        return await self.inner.version()

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return await self.inner.list_containers(labels)

    async def image_present(self, ref: str) -> bool:
        return await self.inner.image_present(ref)

    async def image_user(self, ref: str) -> str:
        return await self.inner.image_user(ref)

    async def pull_image(self, ref: str, auth: Mapping[str, str] | None = None) -> None:
        start = time.perf_counter()
        try:
            await self.inner.pull_image(ref, auth)
        except BaseException:
            self.metrics._pull_failed.inc()
            raise
        self.metrics._pull_ok.inc()
        self.metrics.image_pull_seconds.observe(time.perf_counter() - start)

    async def import_image(self, rootfs_tar: bytes, ref: str, changes: tuple[str, ...] = ()) -> None:
        await self.inner.import_image(rootfs_tar, ref, changes)

    async def create_container(self, spec: ContainerSpec) -> str:
        return await self.inner.create_container(spec)

    async def start_container(self, container_id: str) -> None:
        await self.inner.start_container(container_id)
        self.metrics.container_starts.inc()

    async def stop_container(self, container_id: str, grace_seconds: int | None) -> None:
        await self.inner.stop_container(container_id, grace_seconds)

    async def remove_container(self, container_id: str) -> None:
        await self.inner.remove_container(container_id)

    def logs(self, container_id: str, *, follow: bool, tail: int, timestamps: bool) -> AsyncIterator[bytes]:
        return self.inner.logs(container_id, follow=follow, tail=tail, timestamps=timestamps)

    async def ensure_network(self, spec: PodNetworkSpec) -> NetworkResult:
        return await self.inner.ensure_network(spec)

    async def remove_network(self, name: str) -> None:
        await self.inner.remove_network(name)

    async def close(self) -> None:
        await self.inner.close()


class MeteredNetfilter:
    """A Netfilter that times each transaction of `inner`."""

    def __init__(self, inner: Netfilter, metrics: AgentMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def list_table(self) -> Mapping[str, Any] | None:
        return await self.inner.list_table()

    async def apply(self, script: str) -> None:
        start = time.perf_counter()
        try:
            await self.inner.apply(script)
        except BaseException:
            self.metrics.nft_failures.inc()
            raise
        finally:
            self.metrics.nft_seconds.observe(time.perf_counter() - start)
