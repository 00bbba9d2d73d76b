"""The agent's composition root: build every part from config and run them.

Side effects come in through the runtime, metrics, runner (host commands),
netlink, firewall and netfilter arguments, so the same Agent runs on a real
host (DockerRuntime, PsutilMetrics, AsyncioRunner) or hollow in a benchmark
(FakeRuntime, FakeMetrics, the kernel fakes) with real gRPC on both sides.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent import bootstrap, failover
from agent.execute import AsyncioRunner, CommandRunner
from agent.host.heap import Heap, trim_loop
from agent.host.metrics import HostMetrics, PsutilMetrics
from agent.host.status import NodeFacts, build_status, detect_node_ip
from agent.link import AssignmentFile, CoordinatorLink
from agent.network import Firewall, IptablesFirewall, NetlinkDriver, PyrouteNetlink
from agent.network.node import NodeNetworking
from agent.network.sandbox import Plumber, SandboxIpam, SandboxNetworks
from agent.network.veth import VethPlumber
from agent.pods import images, plan, render
from agent.pods.events import EventRecorder, TeeRecorder
from agent.pods.manager import PodManager
from agent.pods.state import PodStateStore
from agent.pods.syncer import PodSyncer
from agent.proxy import Netfilter, NetfilterError, NftNetfilter, ServiceProxy
from agent.registries import DaemonJsonConfigurator, RegistryManager
from agent.reporting import EventReporter, StatusReporter
from agent.runtime.base import LABEL_SANDBOX_NETWORK, ContainerRuntime, RuntimeError_
from agent.runtime.docker import DockerRuntime
from agent.server import AgentServicer, CoordinatorOnly
from agent.sriov import setup as sriov_setup
from agent.sriov.pods import SriovPodNetworks
from atoll import config as layered
from atoll import files, rpc, tls
from atoll.agentconfig import AgentConfig
from atoll.pkichild import KeyTool
from atoll.v1 import agent_pb2, agent_pb2_grpc, node_api_pb2, node_pb2, workloads_pb2

if TYPE_CHECKING:
    # prometheus_client (4.6 MB resident) is imported only when metrics are served.
    from agent.metrics import AgentMetrics
    from atoll.metrics import MetricsServer

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        runtime: ContainerRuntime | None = None,
        metrics: HostMetrics | None = None,
        recorder: EventRecorder | None = None,
        runner: CommandRunner | None = None,
        netlink: Callable[[], NetlinkDriver] = PyrouteNetlink,
        firewall: Callable[[], Firewall] | None = None,
        netfilter: Callable[[], Netfilter] | None = None,
        sriov: Callable[[AgentConfig], SriovPodNetworks | None] = sriov_setup.from_config,
        plumber: Callable[[], Plumber] = VethPlumber,
        serve_api: bool = True,
        keys: KeyTool | None = None,
        heap: Heap | None = None,
    ) -> None:
        self.cfg = cfg
        # The process's C heap, trimmed while the agent runs: only the daemon's own (agent.main);
        # agents sharing a process (tests, hollow fleets) leave it alone.
        self._heap = heap
        self.node_name = cfg.node_name or socket.gethostname().lower()
        self.runtime: ContainerRuntime = runtime or DockerRuntime(
            cfg.docker_host, call_timeout=cfg.docker_timeout, pull_timeout=cfg.pull_timeout
        )
        self.metrics: HostMetrics = metrics or PsutilMetrics(cfg.state_path)
        self.events = EventReporter()
        self._recorder: EventRecorder = TeeRecorder(self.events, recorder) if recorder else self.events
        self._serve_api = serve_api
        self._netlink = netlink
        self._plumber = plumber
        # The one runner of host commands (iptables, nft), unless the kernel is faked altogether.
        self.runner: CommandRunner = runner or AsyncioRunner()
        self._firewall: Callable[[], Firewall] = firewall or (lambda: IptablesFirewall(self.runner))
        # Metrics only when served: otherwise no registry, no wrappers, no cost (hollow fleets).
        self.prom: AgentMetrics | None = None
        if cfg.metrics_listen:
            from agent.metrics import AgentMetrics

            self.prom = AgentMetrics()
        self.metrics_server: MetricsServer | None = None
        nf = netfilter() if netfilter is not None else NftNetfilter(self.runner)
        if self.prom is not None:
            nf = self.prom.netfilter(nf)
        self.proxy = ServiceProxy(
            nf,
            node_name=self.node_name,
            reserved_ports=cfg.daemon_ports(),
            on_failure=self._service_not_served,
        )
        self.networking: NodeNetworking | None = None
        self._sriov_factory = sriov
        self.sriov: SriovPodNetworks | None = None
        self.sandboxes: SandboxNetworks | None = None
        self.stop_event = asyncio.Event()
        self.server: rpc.RunningServer | None = None
        self.manager: PodManager | None = None
        self.link: CoordinatorLink | None = None
        self._facts: NodeFacts | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.connection: bootstrap.CoordinatorConnection | None = None
        self.credentials: bootstrap.NodeCredentials | None = (
            None if cfg.insecure else bootstrap.NodeCredentials(cfg.state_path / "pki", keys)
        )

    def _status(self) -> node_pb2.NodeStatus:
        assert self._facts is not None and self.manager is not None
        last = self.manager.last_relist
        healthy = bool(last) and time.time() - last < max(30.0, 5 * self.cfg.relist_interval)
        message = (
            "agent is posting ready status" if healthy else "container runtime relist is failing or stale"
        )
        extended, conditions = sriov_setup.status_parts(self.sriov)
        return build_status(
            self._facts,
            self.metrics,
            ready=healthy,
            ready_message=message,
            extended=extended,
            conditions=conditions,
        )

    async def start(self) -> None:
        cfg = self.cfg
        # The first coordinator listed: which route finds this node's address (joins try each).
        first = rpc.servers(cfg.coordinator)[0]
        coord_host, coord_port = layered.split_host_port(first, "coordinator")
        # Keys, pod records and volumes: the state dir is 0700 whatever the umask (volumes reach
        # containers through bind mounts, which need no way through it).
        if await asyncio.to_thread(files.private_dir, cfg.state_path):
            log.warning("state dir %s was open to other users: now mode 0700", cfg.state_path)
        if self.credentials is not None:
            # First: without an identity nothing else can work.
            await bootstrap.ensure_joined(
                node=self.node_name,
                coordinator=cfg.coordinator,
                explicit_join_address=cfg.join_address,
                token=cfg.join_token,
                pin=cfg.ca_hash,
                ca_file=cfg.ca_cert,
                credentials=self.credentials,
                stop=self.stop_event,
            )
        node_ip = cfg.node_ip or detect_node_ip(coord_host, coord_port)
        await images.ensure_infra_image(
            self.runtime, cfg.infra_image, images.find_static_busybox(cfg.infra_busybox)
        )
        runtime_version = await self.runtime.version()
        engine = None
        if cfg.docker_config and isinstance(self.runtime, DockerRuntime):
            engine = DaemonJsonConfigurator(
                cfg.docker_config, cfg.docker_pidfile, check=self.runtime.registry_config
            )
        self.registries = RegistryManager(
            engine, local_file=cfg.registries_file or None, legacy_file=cfg.legacy_sysconfig or None
        )
        await self.registries.apply(None)
        pods_dir = cfg.state_path / "pods"
        states = PodStateStore(pods_dir)
        records = states.load_all()
        self.sriov = self._sriov_factory(cfg)
        self.sandboxes = SandboxNetworks(
            self._plumber(),
            SandboxIpam(cfg.state_path),
            self.runtime.bridge_network,
            explicit=cfg.sandbox_network == "agent",
        )
        known = states.known()
        # The pods' records say which addresses they hold: what the IPAM file lost, they restore.
        self.sandboxes.ipam.adopt(
            (r.uid, r.sandbox_network, r.sandbox_address)
            for r in records.values()
            if r.sandbox_network and r.sandbox_address
        )
        try:
            # Sandboxes the agent built still hold their addresses, even if their records are lost.
            built = await self.runtime.list_containers({LABEL_SANDBOX_NETWORK: ""})
            holders = known | {c.labels.get(render.LABEL_POD_UID, "") for c in built}
            released_addresses = self.sandboxes.ipam.retain(lambda uid: uid in holders)
        except RuntimeError_ as exc:
            log.warning("sandbox networks: engine unreachable (%s); no address released", exc)
            released_addresses = []
        if released_addresses:
            log.info(
                "sandbox networks: addresses of %d pods gone while away released", len(released_addresses)
            )
        if cfg.sandbox_network == "agent":
            from agent.network import pyroute

            await asyncio.to_thread(pyroute.load)  # now, not in the first pod's start-up
        if self.sriov is not None:
            # Before any pod sync: size the PFs, then finish what a crash interrupted and give back
            # the VFs of pods this node no longer runs (kept: those of pods it still has records of).
            await self.sriov.manager.setup()
            released = await self.sriov.manager.recover(lambda uid: uid in known)
            if released:
                log.info("SR-IOV: %d VFs released on start (interrupted steps, pods gone)", len(released))
        ctx = render.RenderContext(
            node_name=self.node_name,
            infra_image=cfg.infra_image,
            pod_network=cfg.pod_network,
            pods_dir=pods_dir,
        )
        syncer = PodSyncer(
            self.prom.runtime(self.runtime) if self.prom is not None else self.runtime,
            states,
            ctx,
            host_ip=lambda: node_ip,
            backoff=plan.BackoffPolicy(base=cfg.backoff_base, maximum=cfg.backoff_max),
            recorder=self._recorder,
            registries=self.registries.resolver,
            networks=self.sriov,
            sandboxes=self.sandboxes,
            # auto: not with an engine elsewhere, whose namespaces this host cannot reach.
            build_sandbox_networks=cfg.sandbox_network == "agent"
            or (cfg.sandbox_network == "auto" and cfg.docker_host.startswith("unix://")),
        )
        reporter = StatusReporter()
        self.manager = PodManager(
            syncer,
            self.runtime,
            reporter,
            node_name=self.node_name,
            relist_interval=cfg.relist_interval,
            resync_interval=cfg.resync_interval,
            max_parallel=cfg.max_parallel_syncs,
            held=lambda: self._held_pods(states),
        )
        self.manager.gate.clear()
        if self.prom is not None:
            self.manager.observe_sync = self.prom.observe_sync
        self.networking = NodeNetworking(
            runtime=self.runtime,
            syncer=syncer,
            gate=self.manager.gate,
            state_file=cfg.state_path / "network.json",
            default_pod_network=cfg.pod_network,
            mode=cfg.overlay,
            coordinator_host=coord_host,
            netlink=self._netlink,
            firewall=self._firewall,
            iface=cfg.iface,
            public_ip=cfg.public_ip,
            subnet_env=cfg.subnet_env,
            share_subnet=cfg.sandbox_network != "engine",
        )
        self.networking.restore()
        if self.prom is not None:
            self.networking.observe_overlay = self.prom.observe_overlay
            manager = self.manager
            self.prom.watch_agent(
                # The coordinator the link is on (it moves on failover).
                coordinator=lambda: (
                    self.connection.targets.current if self.connection is not None else cfg.coordinator
                ),
                link_up=lambda: self.link is not None and self.link.connected,
                pods=lambda: len(manager.desired),
            )
            from atoll.metrics import MetricsServer

            self.metrics_server = await asyncio.to_thread(
                MetricsServer(self.prom.registry, cfg.metrics_listen).start
            )
        assignments = AssignmentFile(cfg.state_path / "assignment.pb")
        saved = assignments.load()
        if saved is not None:
            # Keep running what we ran; removals wait for the coordinator's word.
            self.manager.set_desired(saved.pods, saved.generation, authoritative=False)
        agent_port = 0
        if self._serve_api:
            servicer = AgentServicer(
                node_name=self.node_name,
                manager=self.manager,
                runtime=self.runtime,
                build_status=self._status,
                connected=lambda: bool(self.link and self.link.connected),
                clock=time.time,
            )
            server_creds = None
            if self.credentials is not None:
                server_creds = tls.ReloadingServerCredentials(
                    self.credentials.files, require_client_cert=True, keys=self.credentials.keys
                ).credentials()
            self.server = await rpc.start_server(
                rpc.listeners(cfg.listen, server_creds),
                [
                    rpc.ServiceBinding(
                        servicer,
                        agent_pb2_grpc.add_AgentServiceServicer_to_server,
                        agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
                    )
                ],
                links=[CoordinatorOnly(insecure=cfg.insecure)],
            )
            agent_port = self.server.port
        self._facts = NodeFacts(
            name=self.node_name,
            internal_ip=node_ip,
            agent_port=agent_port,
            runtime_version=runtime_version,
            max_pods=cfg.max_pods,
            reserved_cpu_millis=cfg.reserved_cpu_millis,
            reserved_memory_bytes=cfg.reserved_memory_bytes,
        )
        # One coordinator at a time, the next when it dies; where the last good one is remembered.
        remembered = cfg.state_path / "coordinator"
        targets = failover.Targets(rpc.servers(cfg.coordinator), start=_read_remembered(remembered))
        connection = self.connection = bootstrap.CoordinatorConnection(
            targets, self.credentials, remember=remembered
        )
        self.link = CoordinatorLink(
            connection,
            node_name=self.node_name,
            node_labels=dict(cfg.labels),
            build_status=self._status,
            manager=self.manager,
            reporter=reporter,
            assignments=assignments,
            heartbeat_interval=cfg.heartbeat_interval,
        )
        self.link.events = self.events
        self.link.on_node_config = self._on_node_config
        self.link.on_services = self._on_services
        # A first relist before anything else, so the first heartbeat already reports Ready.
        try:
            await self.manager.relist()
        except Exception as exc:
            log.warning("first relist failed: %s", exc)
        self._tasks = [
            asyncio.create_task(self.manager.run(self.stop_event), name="pod-manager"),
            asyncio.create_task(self.link.run(self.stop_event), name="coordinator-link"),
            asyncio.create_task(self.networking.run(self.stop_event), name="node-network"),
            asyncio.create_task(connection.renew_loop(self.node_name, self.stop_event), name="cert-renewal"),
        ]
        if self._heap is not None:
            self._tasks.append(asyncio.create_task(trim_loop(self._heap, self.stop_event), name="heap-trim"))
        log.info(
            "agent %s up: coordinator %s, node IP %s, agent API port %d, engine %s",
            self.node_name,
            cfg.coordinator,
            node_ip,
            agent_port,
            runtime_version,
        )

    def _held_pods(self, states: PodStateStore) -> set[str]:
        """The pods this agent keeps a state record or a VF for."""
        held = states.known()
        if self.sriov is not None:
            held.update(a.pod_uid for a in self.sriov.manager.pool.allocations())
        return held

    async def _on_node_config(self, config: node_api_pb2.NodeConfig) -> None:
        if self.sriov is not None:
            self.sriov.set_networks(config.sriov_networks)
        if await self.registries.apply(config.registries if config.HasField("registries") else None):
            log.info("registry settings updated")
        assert self.networking is not None and self.link is not None
        await self.networking.on_config(config, self.link.acquire_lease)

    async def _on_services(self, state: node_api_pb2.ServiceState) -> None:
        assert self.networking is not None
        await self.networking.ensure_service_route(state.service_cidr)
        try:
            report = await self.proxy.apply(state, self.metrics.addresses())
        except NetfilterError as exc:
            # The table is unchanged (nft transactions are atomic); read it again next time.
            log.warning("programming services failed: %s", exc)
            self.proxy.invalidate()
            raise
        if report.changed:
            log.info(
                "services at generation %d: %d added, %d updated, %d removed",
                state.generation,
                len(report.added),
                len(report.updated),
                len(report.removed),
            )

    def _service_not_served(self, service: str, why: str) -> None:
        """A Warning event on this node naming the service: a node may only speak of itself and its
        pods, and a service whose name is bad would make a bad event of its own."""
        self.events.record_ref(
            workloads_pb2.ObjectReference(kind="Node", name=self.node_name),
            "Warning",
            "FailedProgramService",
            f"service {service!r} is not served on this node: {why}",
        )

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The agent's long-running loops (started by `start`)."""
        return list(self._tasks)

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.stop(0.5)
        if self.connection is not None:
            await self.connection.close()
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.stop)
        await self.runtime.close()

    async def run_forever(self) -> None:
        await self.start()
        await self.stop_event.wait()
        await self.stop()


def _read_remembered(path: pathlib.Path) -> str:
    """The coordinator that answered last (agent.failover), or ""."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""
