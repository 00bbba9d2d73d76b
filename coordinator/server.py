"""The coordinator's composition root: store, informers, controllers and servers."""

from __future__ import annotations

import asyncio
import logging
import time

from atoll import kinds, rpc
from atoll.v1 import cluster_pb2, cluster_pb2_grpc, node_api_pb2, node_api_pb2_grpc
from coordinator.agents import AgentClients
from coordinator.api.cluster import ClusterServicer
from coordinator.api.node_api import NodeServicer
from coordinator.assignments import AssignmentTracker
from coordinator.config import ServeConfig
from coordinator.informer import Informer
from coordinator.nodes import NodeHealth, NodeLifecycle
from coordinator.registry import Registry
from coordinator.scheduler.scheduler import Scheduler
from coordinator.store.base import Store
from coordinator.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, cfg: ServeConfig, *, store: Store | None = None) -> None:
        self.cfg = cfg
        self._given_store = store
        self.store: Store | None = store
        self.stop_event = asyncio.Event()
        self.server: rpc.RunningServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.registry: Registry | None = None
        self.scheduler: Scheduler | None = None
        self.agents: AgentClients | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    async def start(self) -> None:
        cfg = self.cfg
        if self.store is None:
            self.store = await SqliteStore.open(
                cfg.data_path / "atoll.db",
                history_limit=cfg.store_history,
                synchronous=cfg.store_sync.upper(),
            )
        registry = self.registry = Registry(self.store)
        pods = Informer(registry, kinds.by_name("Pod"))
        nodes = Informer(registry, kinds.by_name("Node"))
        assignments = AssignmentTracker(pods)
        health = NodeHealth()
        self.scheduler = Scheduler(registry, pods, nodes, retry_interval=cfg.scheduler_retry_interval)
        lifecycle = NodeLifecycle(registry, nodes, health, grace=cfg.node_grace_period)
        self.agents = AgentClients(nodes)
        stop = self.stop_event
        self._tasks = [
            asyncio.create_task(pods.run(stop), name="pod-informer"),
            asyncio.create_task(nodes.run(stop), name="node-informer"),
            asyncio.create_task(self.scheduler.run(stop), name="scheduler"),
            asyncio.create_task(lifecycle.run(stop), name="node-lifecycle"),
        ]
        await asyncio.wait_for(asyncio.gather(pods.synced.wait(), nodes.synced.wait()), 30)
        cluster = ClusterServicer(registry, health, self.agents.stub)
        node_api = NodeServicer(
            registry,
            assignments,
            health,
            heartbeat_interval=cfg.heartbeat_interval,
            status_interval=cfg.node_status_interval,
            clock=time.time,
        )
        self.server = await rpc.start_server(
            cfg.listen,
            [
                rpc.ServiceBinding(
                    cluster,
                    cluster_pb2_grpc.add_ClusterServiceServicer_to_server,
                    cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
                ),
                rpc.ServiceBinding(
                    node_api,
                    node_api_pb2_grpc.add_NodeServiceServicer_to_server,
                    node_api_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name,
                ),
            ],
        )
        log.info(
            "coordinator serving on %s (port %d), store at revision %d",
            cfg.listen,
            self.port,
            self.store.revision,
        )

    async def stop(self) -> None:
        self.stop_event.set()
        if self.server is not None:
            await self.server.stop(0.5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.agents is not None:
            await self.agents.close()
        if self.store is not None and self._given_store is None:
            await self.store.close()

    async def run_forever(self) -> None:
        await self.start()
        await self.stop_event.wait()
        await self.stop()
