"""The coordinator's composition root: store, informers, controllers and servers.

Every coordinator serves both APIs and keeps informers; what must run once in
the cluster (the scheduler, the controllers, node lifecycle, event garbage
collection, store compaction) runs under the leader's term only: always, on
SQLite (one coordinator); on etcd, while this coordinator holds the leader
lease (coordinator.store.election).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from atoll import callchain, errors, kinds, rpc
from atoll import config as layered
from atoll.handoff import Handoff, LoopThread
from atoll.limits import LimitConfig, Limits
from atoll.loopstalls import Deafness, LoopStalls
from atoll.metrics import MetricsServer
from atoll.v1 import cluster_pb2, cluster_pb2_grpc, network_pb2, node_api_pb2, node_api_pb2_grpc
from coordinator import manifests
from coordinator.admission.podsecurity import PodSecurityConfig
from coordinator.api import callqueue
from coordinator.api.agentchannels import AgentClients
from coordinator.api.callqueue import CallQueueProbe
from coordinator.api.cluster import ClusterServicer
from coordinator.api.externalips import ExternalIPPolicy
from coordinator.api.metrics import CoordinatorMetrics
from coordinator.api.node.assignments import AssignmentTracker
from coordinator.api.node.lane import HeartbeatLane
from coordinator.api.node.nodeconfig import NodeConfigTracker
from coordinator.api.node.service import NodeServicer
from coordinator.api.node.servicestate import ServiceStateTracker
from coordinator.api.podsecurity import PodSecurityAdmission
from coordinator.api.strategy import STRATEGIES, carry_system_metadata
from coordinator.auth import Security, sharedca
from coordinator.config import ServeConfig
from coordinator.controllers.endpoints import EndpointsController
from coordinator.controllers.evictionpace import EvictionPolicy
from coordinator.controllers.heartbeatpace import HeartbeatPace
from coordinator.controllers.nodeleases import NodeLeases
from coordinator.controllers.nodelifecycle import NodeHealth, NodeLifecycle
from coordinator.controllers.replication import ReplicationManager
from coordinator.network.nodeports import NodePortAllocator
from coordinator.network.serviceips import ServiceIPAllocator
from coordinator.network.subnetleases import LeaseManager, ensure_no_orphans
from coordinator.objects import quota
from coordinator.objects.events import EventRecorder
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry
from coordinator.scheduler.scheduler import Scheduler
from coordinator.store.base import Store
from coordinator.store.compactor import Compactor
from coordinator.store.election import Elector, LeaderTerm, SoleLeader
from coordinator.store.open import open_store
from coordinator.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from coordinator.kube.server import KubeServer

log = logging.getLogger(__name__)

FRONT_START_TIMEOUT = 30.0  # seconds for the API's server to start or stop on its thread

# Kinds the coordinator keeps informers (local caches) for.
_WATCHED_KINDS = (
    "Pod",
    "Node",
    "Network",
    "Subnet",
    "Registries",
    "ReplicationController",
    "Service",
    "Endpoints",
    "SriovNetwork",
    "ResourceQuota",
)


class Coordinator:
    def __init__(
        self,
        cfg: ServeConfig,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
        elector: Elector | None = None,
    ) -> None:
        """`clock` drives the per-client rate limits (tests step it instead of sleeping); `store` and
        `elector` given: several in-process coordinators on one store (tests; etcd picks its own)."""
        self.cfg = cfg
        self._clock = clock
        self._given_elector = elector
        self._given_store = store
        self.store: Store | None = store
        self.stop_event = asyncio.Event()
        self.server: rpc.RunningServer | None = None
        self.lane: HeartbeatLane | None = None  # heartbeats' own servers (--lease-listen)
        self.front = LoopThread("api-front")  # where the API's servers run (atoll.handoff)
        self._tasks: list[asyncio.Task[None]] = []
        # The call-queue probes' sockets, and the directories made for them when not the data dir.
        self._probe_paths: list[str] = []
        self._probe_dirs: list[str] = []
        self.registry: Registry | None = None
        self.scheduler: Scheduler | None = None
        self.agents: AgentClients | None = None
        self.recorder: EventRecorder | None = None
        self.security: Security | None = None
        self.informers: dict[str, Informer] = {}
        self.elector: Elector | None = None
        self.health: NodeHealth | None = None
        self.heartbeat_pace: HeartbeatPace | None = None
        self.leading: LeaderTerm | None = None  # the current term while this coordinator leads
        self.prom: CoordinatorMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        self.kube: KubeServer | None = None  # the Kubernetes REST API, with --kube-listen

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def token_port(self) -> int:
        """The port of the first --token-listen address (TLS without client certificates)."""
        assert self.server is not None and len(self.server.ports) > 1
        return self.server.ports[-1]

    async def start(self) -> None:
        cfg = self.cfg
        if self.store is None:
            self.store = await open_store(
                cfg.store,
                data_dir=cfg.data_path,
                history_limit=cfg.store_history,
                synchronous=cfg.store_sync.upper(),
                etcd_cafile=cfg.etcd_cafile,
                etcd_certfile=cfg.etcd_certfile,
                etcd_keyfile=cfg.etcd_keyfile,
            )
        # Metrics only when served: otherwise no registry and no metered store.
        self.prom = CoordinatorMetrics() if cfg.metrics_listen else None
        metered = self.prom.store(self.store) if self.prom is not None else self.store
        registry = self.registry = Registry(metered, max_object_bytes=cfg.max_object_bytes)
        security = self.security = Security(cfg, registry)
        if cfg.cluster_secret_file:
            await security.share_ca(self.store, sharedca.read_secret(cfg.cluster_secret_file))
        await asyncio.to_thread(security.prepare)
        pki = security.pki
        informers = self.informers = {k: Informer(registry, kinds.by_name(k)) for k in _WATCHED_KINDS}
        counted = (informers["Pod"], informers["ReplicationController"], informers["Service"])
        quotas = quota.NamespaceQuota(
            quota.parse_hard(cfg.namespace_quota), counted, informers["ResourceQuota"]
        )
        registry.reserve = quotas.reserve
        pods, nodes = informers["Pod"], informers["Node"]
        recorder = self.recorder = EventRecorder(registry)
        node_configs = NodeConfigTracker(
            informers["Network"], informers["Subnet"], informers["Registries"], informers["SriovNetwork"]
        )
        service_state = ServiceStateTracker(
            informers["Service"], informers["Endpoints"], cfg.service_cluster_ip_range
        )
        leases = LeaseManager(registry, ttl=cfg.lease_ttl)
        assignments = AssignmentTracker(pods)
        health = self.health = NodeHealth()
        # Several coordinators share heartbeats through these leases: often enough that the leader
        # sees a node alive well within the grace period; one coordinator writes them only to
        # remember across a restart, rarely.
        several = _on_etcd(self.store) or self._given_elector is not None
        lease_interval = cfg.node_grace_period / 3 if several else 15.0
        node_leases = NodeLeases(self.store, health, write_interval=lease_interval)
        self.scheduler = Scheduler(
            registry, pods, nodes, recorder=recorder, retry_interval=cfg.scheduler_retry_interval
        )
        if self.prom is not None:
            self.scheduler.on_attempt = self.prom.observe_attempt
        stalls = LoopStalls()
        # One probe on the API's listener, one on the heartbeat lane: agents heartbeat on either
        # (old agents, a firewalled lane, a lane in its backoff), so both waits count.
        call_queues = [CallQueueProbe(self._probe_socket()) for _ in range(2)]
        # Heartbeats paced to the fleet's size, the grace period with them (Nomad's answer to a
        # fleet whose heartbeats would outgrow the coordinator's core).
        pace = self.heartbeat_pace = HeartbeatPace(
            cfg.heartbeat_interval,
            cfg.node_grace_period,
            cfg.max_heartbeats_per_second,
            nodes=lambda: len(nodes.cache),
            judged=health.judged_interval,
            max_interval=cfg.max_heartbeat_interval,
        )
        lifecycle = NodeLifecycle(
            registry,
            nodes,
            health,
            grace=pace.grace_of,
            eviction_timeout=cfg.pod_eviction_timeout,
            eviction_policy=EvictionPolicy(
                rate=cfg.node_eviction_rate,
                secondary_rate=cfg.secondary_node_eviction_rate,
                unhealthy_threshold=cfg.unhealthy_zone_threshold,
                large_zone=cfg.large_cluster_size_threshold,
            ),
            pods=pods,
            recorder=recorder,
            stalls=Deafness([stalls, *call_queues]),
        )
        pod_security = PodSecurityConfig.from_config(cfg.allowed_host_paths, cfg.allowed_host_ports)
        replication = ReplicationManager(
            registry,
            informers["ReplicationController"],
            pods,
            recorder,
            admit=PodSecurityAdmission(registry, pod_security).check_workload,
        )
        endpoints = EndpointsController(registry, informers["Service"], pods)
        self.agents = (
            AgentClients(nodes)
            if pki is None
            else AgentClients(nodes, credentials=pki.agent_credentials, version=lambda: pki.version)
        )
        stop = self.stop_event
        scheduler, compactor = self.scheduler, Compactor(self.store, cfg.compaction_interval)

        async def lead(term: LeaderTerm) -> None:
            """What must run once in the cluster, for as long as this coordinator leads."""
            self.leading = term
            lost = term.lost
            await asyncio.gather(
                scheduler.run(lost),
                lifecycle.run(lost),
                replication.run(lost),
                endpoints.run(lost),
                recorder.run_gc(lost, cfg.event_ttl),
                compactor.run(lost),
            )
            self.leading = None

        address = cfg.advertise_address or cfg.listen
        if self._given_elector is not None:
            self.elector = self._given_elector
        elif _on_etcd(self.store):
            from coordinator.store.etcdelection import EtcdElector  # etcd's client only where used

            self.elector = EtcdElector(self.store, address=address, ttl=cfg.leader_ttl)  # type: ignore[arg-type]
        else:
            self.elector = SoleLeader(address)
        self._tasks = [
            *(asyncio.create_task(i.run(stop), name=f"{i.info.plural}-informer") for i in informers.values()),
            asyncio.create_task(security.run(stop), name="certificate-renewal"),
            asyncio.create_task(node_leases.run(stop), name="node-leases"),
            asyncio.create_task(stalls.run(stop), name="loop-stalls"),
            asyncio.create_task(self.elector.run(stop, lead), name="leader-election"),
        ]
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in informers.values())), 30)
        if cfg.network_config:
            await apply_network_config(registry, cfg.network_config)
        cluster = ClusterServicer(
            registry,
            health,
            self.agents.stub,
            ServiceIPAllocator(self.store, cfg.service_cluster_ip_range),
            pki=pki,
            external_ips=ExternalIPPolicy.from_config(cfg.service_external_ip_cidrs, self._daemon_ports),
            cluster_info=lambda: security.info,
            members=self.elector.members,
            quotas=quotas,
            max_replicas=cfg.max_replicas,
            pod_security=pod_security,
            node_ports=NodePortAllocator(self.store, cfg.node_port_range),
        )
        node_api = NodeServicer(
            registry,
            assignments=assignments,
            pods=pods,
            nodes=informers["Node"],
            health=health,
            leases=leases,
            node_configs=node_configs,
            service_state=service_state,
            recorder=recorder,
            heartbeat_interval=pace.interval,
            status_interval=cfg.node_status_interval,
            clock=time.time,
            pki=pki,
            tokens=security.tokens,
        )
        # One set of per-client limits for both APIs: a user's gRPC and REST calls count together.
        limits = Limits(
            LimitConfig(
                rate=cfg.api_rate,
                burst=cfg.api_burst,
                max_watches=cfg.max_watches_per_client,
                max_total_watches=cfg.max_watches,
            ),
            clock=self._clock,
        )
        links: list[callchain.CallInterceptor] = [
            *([self.prom.link()] if self.prom is not None else []),
            security.interceptor,
            limits,
        ]
        api_probe, lane_probe = (rpc.Listener(q.target) for q in call_queues)
        if security.lease_listeners():
            lane = HeartbeatLane()
            try:
                await lane.start(security.lease_listeners, lane_probe, node_api, links, cfg.handshake_timeout)
            except (errors.Unavailable, RuntimeError, TimeoutError) as exc:
                if cfg.lease_listen != "auto":
                    raise errors.Unavailable(
                        f"lease_listen: cannot listen on {cfg.lease_listen}: {exc}"
                    ) from None
                # The lane is an optimisation: without it heartbeats share the API's listener.
                log.warning(
                    "no heartbeat lane: cannot listen on %s (%s); set --lease-listen",
                    ",".join(cfg.lease_addresses()),
                    exc,
                )
            else:
                self.lane = lane
                node_api.lease_port = lane.port
        # The API's servers take and answer calls on a loop of their own; handlers run here
        # (atoll.handoff: on this loop alone, busy with the scheduler and informers, a burst's
        # status reports waited seconds for the turns gRPC needs per call).
        self.front.start()
        self.server = await self.front.run(
            self._start_api(
                security,
                api_probe,
                cluster=cluster,
                node_api=node_api,
                links=links,
                handoff=Handoff(asyncio.get_running_loop()),
            ),
            FRONT_START_TIMEOUT,
        )
        await asyncio.to_thread(security.bind, self.server.ports)
        security.announce()
        self._tasks.append(asyncio.create_task(call_queues[0].run(stop), name="call-queue-probe"))
        if self.lane is not None:
            self._tasks.append(asyncio.create_task(call_queues[1].run(stop), name="lane-queue-probe"))
        if cfg.kube_listen:
            await self._start_kube(cluster, registry, security, limits)
        if self.prom is not None:
            store = self.store
            self.prom.watch_cluster(
                nodes=lambda: nodes.cache.values(),  # noqa: PLW0108 (the informer may swap its cache)
                subnets=lambda: len(informers["Subnet"].cache),
                pods_bound=lambda: scheduler.bound,
                leading=lambda: self.leading is not None,
                revision=lambda: store.revision,
                objects=lambda: {kind: len(i.cache) for kind, i in informers.items()},
                store_files=store.files if isinstance(store, SqliteStore) else (),
                events_dropped=recorder.not_recorded,
            )
            self.metrics_server = await asyncio.to_thread(
                MetricsServer(self.prom.registry, cfg.metrics_listen).start
            )
        log.info(
            "coordinator serving on %s (port %d, heartbeat lane %s), store at revision %d",
            cfg.listen,
            self.port,
            f"port {node_api.lease_port}" if node_api.lease_port else "off",
            self.store.revision,
        )

    async def _start_kube(
        self, cluster: ClusterServicer, registry: Registry, security: Security, limits: Limits
    ) -> None:
        try:
            from coordinator.kube.server import KubeApi, KubeServer  # aiohttp only where it is served
        except ImportError as exc:
            raise errors.FailedPrecondition(
                f"kube_listen: the Kubernetes API needs aiohttp (pip install 'atoll[coordinator]'): {exc}"
            ) from None

        host, port = layered.split_host_port(self.cfg.kube_listen, "kube_listen")
        files = security.pki.server_files if security.pki is not None else None
        api = KubeApi(cluster, registry, security.interceptor, limits=limits)
        self.kube = KubeServer(api, host, port, files)
        await self.kube.start()

    async def _start_api(
        self,
        security: Security,
        probe: rpc.Listener,
        *,
        cluster: ClusterServicer,
        node_api: NodeServicer,
        links: list[callchain.CallInterceptor],
        handoff: Handoff,
    ) -> rpc.RunningServer:
        """On the front's loop: the API's server, its handlers handed to the main loop."""
        return await rpc.start_server(
            [*security.listeners(), probe],
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
            links=links,
            handshake_timeout=self.cfg.handshake_timeout,
            handoff=handoff,
        )

    def _daemon_ports(self) -> set[int]:
        """Ports no service may take on an external IP: ours (as bound) and every node's agent's."""
        lane = self.lane.servers if self.lane is not None else []
        ports = {p for s in (self.server, *lane) if s is not None for p in s.ports}
        ports |= self.cfg.listen_ports() - {0}
        nodes = self.informers["Node"].cache.values() if "Node" in self.informers else ()
        return ports | {n.status.agent_port for n in nodes if n.status.agent_port}  # type: ignore[attr-defined]

    @property
    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """The coordinator's long-running loops (started by `start`), by name."""
        return {t.get_name(): t for t in self._tasks}

    def describe(self) -> str:
        """One line for systemd's STATUS=: where it serves, its role, the nodes it knows."""
        nodes = len(self.informers["Node"].cache) if "Node" in self.informers else 0
        role = "leader" if self.leading is not None else "follower"
        return f"serving on {self.cfg.listen}; {role}; {nodes} nodes"

    async def stop(self) -> None:
        self.stop_event.set()
        if self.kube is not None:
            await self.kube.stop()
        await asyncio.gather(
            *([self.stop_api()] if self.server is not None else []),
            *([self.lane.stop(0.5)] if self.lane is not None else []),
        )
        if not await self.front.stop():
            log.warning("the API's thread did not end within 10 s")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.stop)
        if self.agents is not None:
            await self.agents.close()
        if self.store is not None and self._given_store is None:
            await self.store.close()
        if self.security is not None:
            self.security.close()
        self._remove_probe_socket()

    async def stop_api(self, grace: float = 0.5) -> None:
        """The API's server stops (on its own loop); the heartbeat lane is left alone."""
        assert self.server is not None
        try:
            await self.front.run(self.server.stop(grace), FRONT_START_TIMEOUT)
        except (TimeoutError, RuntimeError) as exc:
            log.warning("stopping the API's server: %s", exc)

    def _probe_socket(self) -> str:
        path, made = callqueue.socket_path(self.cfg.data_path)
        self._probe_paths.append(path)
        if made:
            self._probe_dirs.append(made)
        return path

    def _remove_probe_socket(self) -> None:
        for path in self._probe_paths:
            pathlib.Path(path).unlink(missing_ok=True)
        for made in self._probe_dirs:
            shutil.rmtree(made, ignore_errors=True)

    async def run_forever(self) -> None:
        await self.start()
        await self.stop_event.wait()
        await self.stop()


def _on_etcd(store: Store) -> bool:
    """Whether `store` is etcd's (checked without importing etcd's client where it is not used)."""
    etcd = sys.modules.get("coordinator.store.etcd")
    return etcd is not None and isinstance(store, etcd.EtcdStore)


async def apply_network_config(registry: Registry, path: str) -> None:
    """Create or update the Network object from a flannel net-conf.json; refuse orphaning leases."""
    try:
        text = await asyncio.to_thread(pathlib.Path(path).read_text)
        spec = manifests.network_from_flannel_json(text, source=path)
    except OSError as exc:
        raise errors.InvalidArgument(f"--network-config: cannot read {path}: {exc}") from None
    network = network_pb2.Network(spec=spec)
    network.metadata.name = "default"
    strategy = STRATEGIES[network_pb2.Network]
    info = kinds.by_name("Network")
    try:
        current = await registry.get(info, "", "default")
    except errors.NotFound:
        strategy.prepare_create(network)
        await ensure_no_orphans(registry, network)
        await registry.create(network)
        log.info("overlay network %s configured from %s", spec.network, path)
        return
    carry_system_metadata(network, current)
    strategy.prepare_update(network, current)
    if network.spec == current.spec:  # type: ignore[attr-defined]
        return
    await ensure_no_orphans(registry, network)
    await registry.update(network, expected_revision=current.metadata.resource_version)  # type: ignore[attr-defined]
    log.info("overlay network config updated from %s", path)
