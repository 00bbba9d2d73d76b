"""The agent's Prometheus metrics (atoll_agent_*), served on `--metrics-listen` (off unless set).

Counters and histograms sit where the work happens: pod syncs (PodManager's
hook), container starts, restarts and image pulls (a metered runtime under
the pod syncer), overlay resyncs (NodeNetworking's hook) and nftables
transactions (a metered Netfilter). What already exists as state (pods held,
the coordinator link) is read at scrape time.

A restart is what a pod's restartCount counts: an app container started as a
later attempt (after it exited, went missing or changed), told apart from a
first start by the attempt label the syncer rendered.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from agent.pods import render
from agent.proxy import Netfilter
from agent.runtime.base import (
    BridgeNetwork,
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    NetworkResult,
    PodNetworkSpec,
)
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
        self.container_starts = Counter(
            "atoll_agent_container_starts", "Containers started (infra and app)", registry=r
        )
        self.container_restarts = Counter(
            "atoll_agent_container_restarts",
            "App containers started again (a later attempt: exited, missing or changed)",
            registry=r,
        )
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
        *,
        coordinator: Callable[[], str],
        link_up: Callable[[], bool],
        pods: Callable[[], int],
    ) -> None:
        """Figures read from the agent's state at scrape time."""
        r = self.registry
        r.register(
            Gauges(
                "atoll_agent_coordinator_link_up",
                "1 while the coordinator answers",
                ["coordinator"],
                lambda: [((coordinator(),), 1.0 if link_up() else 0.0)],
            )
        )
        r.register(
            Gauges("atoll_agent_pods", "Pods assigned to this node", [], lambda: [((), float(pods()))])
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
        self._restarting: set[str] = set()  # created as a later attempt, not started yet

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
        except Exception:  # a cancelled pull (the agent stopping) is neither
            self.metrics._pull_failed.inc()
            raise
        finally:
            self.metrics.image_pull_seconds.observe(time.perf_counter() - start)
        self.metrics._pull_ok.inc()

    async def import_image(self, rootfs_tar: bytes, ref: str, changes: tuple[str, ...] = ()) -> None:
        await self.inner.import_image(rootfs_tar, ref, changes)

    async def create_container(self, spec: ContainerSpec) -> str:
        container_id = await self.inner.create_container(spec)
        if is_restart(spec.labels):
            self._restarting.add(container_id)
        return container_id

    async def start_container(self, container_id: str) -> None:
        try:
            await self.inner.start_container(container_id)
        except BaseException:
            self._restarting.discard(container_id)  # the syncer removes it or gives up on it
            raise
        self.metrics.container_starts.inc()
        if container_id in self._restarting:
            self._restarting.discard(container_id)
            self.metrics.container_restarts.inc()

    async def stop_container(self, container_id: str, grace_seconds: int | None) -> None:
        await self.inner.stop_container(container_id, grace_seconds)

    async def remove_container(self, container_id: str) -> None:
        self._restarting.discard(container_id)
        await self.inner.remove_container(container_id)

    def logs(self, container_id: str, *, follow: bool, tail: int, timestamps: bool) -> AsyncIterator[bytes]:
        return self.inner.logs(container_id, follow=follow, tail=tail, timestamps=timestamps)

    async def ensure_network(self, spec: PodNetworkSpec) -> NetworkResult:
        return await self.inner.ensure_network(spec)

    async def remove_network(self, name: str) -> None:
        await self.inner.remove_network(name)

    async def bridge_network(self, name: str) -> BridgeNetwork | None:
        return await self.inner.bridge_network(name)

    async def network_namespace(self, container_id: str) -> str:
        return await self.inner.network_namespace(container_id)

    async def close(self) -> None:
        await self.inner.close()


def is_restart(labels: Mapping[str, str]) -> bool:
    """Whether a container rendered with these labels is an app container's later attempt."""
    if labels.get(render.LABEL_CONTAINER) in (None, render.INFRA):
        return False
    try:
        return int(labels.get(render.LABEL_ATTEMPT, "0")) > 0
    except ValueError:
        return False


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
        except Exception:
            self.metrics.nft_failures.inc()
            raise
        finally:
            self.metrics.nft_seconds.observe(time.perf_counter() - start)
