"""PodSyncer: one pass of plan-then-execute for one pod.

Each pass lists the pod's containers, plans (agent.pods.plan), executes the
actions through the runtime, persists the pod's record and computes its
status. Passes are idempotent: running one twice in a row does nothing the
second time. A failing step is recorded on the container it concerns, with a
backoff, and the pass carries on with the pod's other containers.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from agent.pods import images, plan, render, status
from agent.pods.events import EventRecorder, LogRecorder
from agent.pods.state import PodRecord, PodStateStore, Termination
from agent.registries.resolve import DEFAULT_RESOLVER, ImageResolver
from agent.runtime.base import LABEL_SANDBOX_NETWORK, BridgeNetwork, ContainerRuntime, RuntimeError_
from atoll import errors, files, logs, validation
from atoll.v1 import pod_pb2

log = logging.getLogger(__name__)


def refusal(
    pod: pod_pb2.Pod,
    spec_problems: Callable[[pod_pb2.PodSpec], validation.SpecProblems] = validation.pod_spec_problems,
) -> str:
    """Why the agent will not run `pod` ("" when it will): the coordinator's own validation, run
    again on what arrived (names, images, every string field), as "field: problem"."""
    problem = validation.first_pod_problem(pod, spec_problems)
    if problem is None:
        return ""
    field, message = problem
    return f"{field}: {message}"


# Distinct pod specs whose problems a syncer keeps (SpecVerdicts).
SPECS_KEPT = 256


class SpecVerdicts:
    """A pod spec's problems by its bytes: the pods of one controller on a node share a spec,
    and validating one walks every string it has (most of a pod's validation)."""

    def __init__(self, limit: int = SPECS_KEPT) -> None:
        self._limit = limit
        self._known: dict[bytes, validation.SpecProblems] = {}

    def __call__(self, spec: pod_pb2.PodSpec) -> validation.SpecProblems:
        raw = spec.SerializeToString(deterministic=True)
        found = self._known.get(raw)
        if found is None:
            if len(self._known) >= self._limit:
                self._known.clear()  # bounded: the specs in use come back at their next sync
            found = self._known[raw] = validation.pod_spec_problems(spec)
        return found


class PodNetworkHook(Protocol):
    """Extra networks of a pod (SR-IOV VFs, agent.sriov.pods): attached in the running sandbox's
    network namespace, released when the pod goes. Both idempotent."""

    async def ensure(self, pod: pod_pb2.Pod, netns: str) -> Sequence[object]: ...

    async def removed(self, pod_uid: str) -> None: ...

    def status(self, pod_uid: str) -> Sequence[pod_pb2.NetworkStatus]: ...


class SandboxNetworkHook(Protocol):
    """Sandbox networks the agent builds itself (agent.network.sandbox.SandboxNetworks)."""

    async def network(self, name: str) -> BridgeNetwork | None:
        """Engine network `name` if the agent can plumb sandboxes onto its bridge, else None."""
        ...

    def address(self, info: BridgeNetwork, uid: str) -> str:
        """Pod `uid`'s address on `info` (CIDR); ResourceExhausted when none is left."""
        ...

    async def plumb(self, info: BridgeNetwork, sandbox_id: str, netns: str, address: str) -> None:
        """Build the network of sandbox `sandbox_id` (namespace `netns`) with `address`."""
        ...

    def forget_network(self, name: str) -> None: ...

    def release(self, uid: str) -> None: ...


@dataclass
class SyncResult:
    status: pod_pb2.PodStatus
    requeue_at: float | None
    terminal: bool


class PodSyncer:
    def __init__(
        self,
        runtime: ContainerRuntime,
        states: PodStateStore,
        ctx: render.RenderContext,
        *,
        host_ip: Callable[[], str],
        backoff: plan.BackoffPolicy | None = None,
        clock: Callable[[], float] = time.time,
        recorder: EventRecorder | None = None,
        registries: Callable[[], ImageResolver] | None = None,
        networks: PodNetworkHook | None = None,
        sandboxes: SandboxNetworkHook | None = None,
        build_sandbox_networks: bool = False,
    ) -> None:
        self.runtime = runtime
        self.states = states
        self.ctx = ctx
        self.host_ip = host_ip
        self.backoff = backoff or plan.BackoffPolicy()
        self.clock = clock
        self.recorder = recorder or LogRecorder()
        # The registry settings in force (RegistryManager.resolver); read per image, as they change.
        self.registries: Callable[[], ImageResolver] = registries or (lambda: DEFAULT_RESOLVER)
        self.networks = networks
        # Given, it keeps the sandbox networks the agent built (whatever the mode now); with
        # `build_sandbox_networks`, new sandboxes of pods without host ports are built that way too.
        self.sandboxes = sandboxes
        self.build_sandbox_networks = build_sandbox_networks and sandboxes is not None
        # Called when a pod's sandbox got its port on the pod bridge (NodeNetworking).
        self.on_sandbox_started: Callable[[], None] = lambda: None
        self._refused: dict[str, str] = {}  # pod uid -> why it was refused (one event per reason)
        # pod uid -> (the pod as last validated, the verdict): a pod is synced again and again
        # (every event, every resync) and validating it walks every string it has.
        self._verdicts: dict[str, tuple[bytes, str]] = {}
        self._spec_verdicts = SpecVerdicts()

    def _refusal(self, pod: pod_pb2.Pod) -> str:
        uid = pod.metadata.uid
        raw = pod.SerializeToString(deterministic=True)
        known = self._verdicts.get(uid)
        if known is not None and known[0] == raw:
            return known[1]
        verdict = refusal(pod, self._spec_verdicts)
        self._verdicts[uid] = (raw, verdict)
        return verdict

    def _refuse(self, pod: pod_pb2.Pod, problem: str) -> SyncResult:
        """Defence in depth: a pod the coordinator should never have sent gets no container, an
        event (once per reason) and a Pending status saying why; nothing is retried until it changes."""
        uid = pod.metadata.uid
        if self._refused.get(uid) != problem:
            self._refused[uid] = problem
            self.recorder.record(pod, "Warning", "FailedValidation", f"refused by the agent: {problem}")
        pod_status = pod_pb2.PodStatus(
            phase=pod_pb2.POD_PHASE_PENDING,
            reason="FailedValidation",
            message=problem,
            host_ip=self.host_ip(),
            observed_generation=pod.metadata.generation,
        )
        return SyncResult(pod_status, None, False)

    async def observe(self, uid: str) -> plan.Observed:
        return plan.group(await self.runtime.list_containers({render.LABEL_POD_UID: uid}))

    async def sync(self, pod: pod_pb2.Pod) -> SyncResult:
        uid = pod.metadata.uid
        if problem := self._refusal(pod):
            return self._refuse(pod, problem)
        self._refused.pop(uid, None)
        record = self.states.get(uid)
        now = self.clock()
        if not record.start_time:
            record.namespace, record.name, record.start_time = pod.metadata.namespace, pod.metadata.name, now
        obs = await self.observe(uid)
        the_plan = plan.plan_pod(
            pod,
            obs,
            record,
            now=now,
            infra_hash=render.infra_hash(pod, self.ctx),
            container_hashes={c.name: render.container_hash(pod, c) for c in pod.spec.containers},
            backoff=self.backoff,
        )
        # A sandbox the agent was to plumb and has not (it stopped in between) is plumbed before
        # any app container starts in it; until that works, none does.
        requeue_sandbox = await self._ensure_sandbox_network(pod, obs, record)
        actions = the_plan.actions
        if requeue_sandbox is not None:
            actions = [a for a in actions if not isinstance(a, (plan.StartContainer, plan.StartExisting))]
        if actions:
            await _Execution(self, pod, record, obs).run(actions)
            obs = await self.observe(uid)
            requeue_sandbox = await self._ensure_sandbox_network(pod, obs, record)
        requeue_networks = await self._ensure_networks(pod, obs, record, terminal=the_plan.terminal)
        if the_plan.terminal:
            self._release_finished_sandbox(record, obs)
        if requeue_networks is None or (requeue_sandbox is not None and requeue_sandbox < requeue_networks):
            requeue_networks = requeue_sandbox
        self.states.save(record)
        pod_status = status.pod_status(pod, obs, record, host_ip=self.host_ip(), now=self.clock())
        if self.networks is not None:
            pod_status.networks.extend(self.networks.status(uid))
        requeue = the_plan.requeue_at
        for crec in record.containers.values():
            if crec.not_before > now:
                requeue = crec.not_before if requeue is None else min(requeue, crec.not_before)
        if requeue_networks is not None:
            requeue = requeue_networks if requeue is None else min(requeue, requeue_networks)
        if record.sandbox_not_before > now:
            requeue = (
                record.sandbox_not_before if requeue is None else min(requeue, record.sandbox_not_before)
            )
        return SyncResult(pod_status, requeue, the_plan.terminal)

    async def agent_bridge(self, pod: pod_pb2.Pod) -> BridgeNetwork | None:
        """The bridge a new sandbox of `pod` is plumbed onto by the agent; None: the engine builds it."""
        if not self.build_sandbox_networks or self.sandboxes is None:
            return None
        if any(port.host_port for port in render.host_ports(pod)):
            return None  # the engine publishes host ports, on a network of its own making
        try:
            return await self.sandboxes.network(self.ctx.pod_network)
        except RuntimeError_ as exc:
            log.warning("cannot inspect engine network %s: %s", self.ctx.pod_network, exc)
            return None

    async def plumb(self, record: PodRecord, info: BridgeNetwork, sandbox_id: str, address: str = "") -> None:
        """Build running sandbox `sandbox_id`'s network and note it in `record`."""
        assert self.sandboxes is not None
        netns = await self.runtime.network_namespace(sandbox_id)
        if not netns:
            raise RuntimeError_("the sandbox stopped before its network was built")
        address = address or self.sandboxes.address(info, record.uid)
        record.sandbox_network, record.sandbox_address = info.name, address
        await self.sandboxes.plumb(info, sandbox_id, netns, address)
        record.sandbox_plumbed = sandbox_id
        self.on_sandbox_started()  # its veth is on the bridge now

    async def _ensure_sandbox_network(
        self, pod: pod_pb2.Pod, obs: plan.Observed, record: PodRecord
    ) -> float | None:
        """The safety net: a running sandbox that the agent was to plumb and has not (the agent
        stopped in between, or the last try failed) is plumbed now; on failure, a retry time."""
        sandbox = obs.infra[0] if obs.infra else None
        if sandbox is None or not sandbox.running or record.sandbox_plumbed == sandbox.id:
            return None
        name = sandbox.labels.get(LABEL_SANDBOX_NETWORK)
        if not name or self.sandboxes is None:
            return None
        try:
            if any(c.running for c in obs.infra[1:]):
                raise RuntimeError_("the pod's previous sandbox still runs and holds its address")
            info = await self.sandboxes.network(name)
            if info is None:
                raise errors.FailedPrecondition(f"engine network {name} leaves no addresses to the agent")
            await self.plumb(record, info, sandbox.id)
        except errors.AtollError as exc:
            record.sandbox_backoff_s = self.backoff.next_delay(record.sandbox_backoff_s, None)
            self.recorder.record(pod, "Warning", "FailedSetUpNetwork", f"sandbox network: {exc}")
            return self.clock() + record.sandbox_backoff_s
        record.sandbox_backoff_s = 0.0
        log.info(
            "pod %s: sandbox network built (%s)",
            pod.metadata.name,
            record.sandbox_address,
            extra=logs.pod(pod.metadata),
        )
        return None

    def _release_finished_sandbox(self, record: PodRecord, obs: plan.Observed) -> None:
        """A finished pod's address goes back once nothing of it runs (CNI DEL at sandbox
        teardown): the namespace, and the veth in it, went with the last of its processes. A
        container that could not be stopped keeps the namespace, and the address, alive."""
        if self.sandboxes is None or not record.sandbox_address or any(c.running for c in obs.all):
            return
        self.sandboxes.release(record.uid)
        log.info(
            "pod %s finished: sandbox address %s released",
            record.uid,
            record.sandbox_address,
            extra=logs.pod(None, record.uid),
        )
        record.sandbox_plumbed = record.sandbox_network = record.sandbox_address = ""

    async def _ensure_networks(
        self, pod: pod_pb2.Pod, obs: plan.Observed, record: PodRecord, *, terminal: bool
    ) -> float | None:
        """Attach the pod's extra networks in its running sandbox; on failure, an event and a retry time.
        A pod that has finished (succeeded or failed) gives its networks back at once."""
        if self.networks is None or not (pod.spec.networks or record.networks_attached):
            return None
        if terminal:
            if record.networks_attached:
                await self.networks.removed(pod.metadata.uid)
                record.networks_attached = False
            return None
        sandbox = next((c for c in obs.infra if c.running and c.pid), None)
        if sandbox is None:
            return None
        try:
            attached = await self.networks.ensure(pod, f"/proc/{sandbox.pid}/ns/net")
        except errors.AtollError as exc:
            record.networks_backoff_s = self.backoff.next_delay(record.networks_backoff_s, None)
            self.recorder.record(pod, "Warning", "FailedAttachNetwork", str(exc))
            return self.clock() + record.networks_backoff_s
        record.networks_backoff_s = 0.0
        record.networks_attached = bool(attached)
        return None

    async def remove(self, uid: str) -> None:
        """Stop and remove every container of a pod that is no longer wanted, then its files."""
        obs = await self.observe(uid)
        for action in plan.plan_removal(obs).actions:
            assert isinstance(action, plan.KillContainer)
            await self.runtime.stop_container(action.container.id, None)
            await self.runtime.remove_container(action.container.id)
        if self.networks is not None:
            await self.networks.removed(uid)  # after the sandbox: its VFs are home (or on their way)
        if self.sandboxes is not None:
            self.sandboxes.release(uid)  # after the sandbox: its veth went with its namespace
        self.states.forget(uid)
        self._verdicts.pop(uid, None)
        self._refused.pop(uid, None)
        directory = render.pod_dir(self.ctx, uid)
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        log.info("removed pod %s (%d containers)", uid, len(obs.all), extra=logs.pod(None, uid))


class _Execution:
    """Carries out one plan; keeps the sandbox id that later steps join."""

    def __init__(self, syncer: PodSyncer, pod: pod_pb2.Pod, record: PodRecord, obs: plan.Observed) -> None:
        self.s = syncer
        self.pod = pod
        self.record = record
        self.sandbox_id = obs.infra[0].id if obs.infra else ""
        self.containers = {c.name: c for c in pod.spec.containers}
        self.previous = {name: instances[0] for name, instances in obs.apps.items() if instances}
        # A sandbox of the pod that could not be stopped: a new one must not get its address.
        self.old_sandbox_alive = False

    def event(self, type_: str, reason: str, message: str) -> None:
        self.s.recorder.record(self.pod, type_, reason, message)

    async def run(self, actions: list[plan.Action]) -> None:
        for action in actions:
            if isinstance(action, plan.CreateSandbox):
                if not await self.create_sandbox(action):
                    return  # nothing can join a sandbox that does not exist
            elif isinstance(action, plan.KillContainer):
                await self.kill(action)
            elif isinstance(action, plan.StartContainer):
                await self.start(action)
            elif isinstance(action, plan.StartExisting):
                await self.start_existing(action)
            elif isinstance(action, plan.MarkLost):
                crec = self.record.container(action.name)
                crec.lost = True
                crec.last_termination = Termination(137, "ContainerMissing", "removed outside Atoll")
                self.event(
                    "Warning", "ContainerMissing", f"container {action.name} was removed outside Atoll"
                )

    async def kill(self, action: plan.KillContainer) -> None:
        c = action.container
        name = c.labels.get(render.LABEL_CONTAINER, c.name)
        try:
            if c.running:
                timeout = 2 if name == render.INFRA else None
                await self.s.runtime.stop_container(c.id, timeout)
                self.event("Normal", "Killing", f"stopping container {name} ({action.reason})")
            if action.remove:
                await self.s.runtime.remove_container(c.id)
        except RuntimeError_ as exc:
            if c.running:  # it keeps the old namespace, and its address, alive
                self.old_sandbox_alive = True
            log.warning(
                "pod %s: cannot stop %s: %s",
                self.pod.metadata.name,
                c.name,
                exc,
                extra=logs.pod(self.pod.metadata, container=c.name),
            )

    async def create_sandbox(self, action: plan.CreateSandbox) -> bool:
        rec = self.record
        bridge, address = await self.agent_network()
        spec = render.render_infra(self.pod, self.s.ctx, action.attempt, agent_built=address)
        rec.sandbox_attempt = action.attempt
        if bridge is not None:  # the record holds the address before anything uses it
            rec.sandbox_network, rec.sandbox_address = bridge.name, address
        self.s.states.save(rec)
        try:
            if bridge is not None and self.old_sandbox_alive:
                raise RuntimeError_("the pod's previous sandbox still runs and holds its address")
            cid = await self.s.runtime.create_container(spec)
            rec.sandbox_id = cid
            try:
                await self.s.runtime.start_container(cid)
                if bridge is not None:
                    # Before any app container: they join a namespace that has its network (CNI ADD).
                    await self.s.plumb(rec, bridge, cid, address)
            except errors.AtollError:
                await self.s.runtime.remove_container(cid)
                raise
        except errors.AtollError as exc:
            rec.sandbox_backoff_s = self.s.backoff.next_delay(rec.sandbox_backoff_s, None)
            rec.sandbox_not_before = self.s.clock() + rec.sandbox_backoff_s
            rec.sandbox_error = f"failed to create pod sandbox: {exc}"
            self.event("Warning", "FailedCreatePodSandBox", rec.sandbox_error)
            return False
        rec.sandbox_error, rec.sandbox_backoff_s, rec.sandbox_not_before = "", 0.0, 0.0
        self.sandbox_id = cid
        if bridge is None:  # the engine plugged it in (the agent's own plumbing tells, above)
            self.s.on_sandbox_started()
        return True

    async def agent_network(self) -> tuple[BridgeNetwork | None, str]:
        """The bridge and address of a sandbox the agent is to plumb; (None, "") for the engine's,
        which is also where a pod goes when the agent's share of addresses is full."""
        bridge = await self.s.agent_bridge(self.pod)
        if bridge is None or self.s.sandboxes is None:
            return None, ""
        try:
            return bridge, self.s.sandboxes.address(bridge, self.pod.metadata.uid)
        except errors.ResourceExhausted as exc:
            log.warning("pod %s: %s; the engine builds its network", self.pod.metadata.name, exc)
            return None, ""

    def _prepare_volumes(self) -> None:
        for vol in self.pod.spec.volumes:
            # 0755 as before the agent ran with umask 077: containers' users read them.
            if vol.WhichOneof("source") == "empty_dir":
                files.public_dirs(render.volume_path(self.s.ctx, self.pod.metadata.uid, vol.name))
            elif vol.host_path.type in ("DirectoryOrCreate",):
                files.public_dirs(pathlib.Path(vol.host_path.path))

    def _fail(self, name: str, reason: str, message: str) -> None:
        crec = self.record.container(name)
        if reason == "ErrImagePull" and crec.waiting_reason in ("ErrImagePull", "ImagePullBackOff"):
            reason = "ImagePullBackOff"
        crec.backoff_s = self.s.backoff.next_delay(crec.backoff_s, None)
        crec.not_before = self.s.clock() + crec.backoff_s
        crec.waiting_reason, crec.waiting_message = reason, message
        self.event("Warning", "Failed", f"{name}: {reason}: {message}")

    async def start(self, action: plan.StartContainer) -> None:
        container = self.containers[action.name]
        crec = self.record.container(action.name)
        image = self.s.ctx.resolve_image(container.image)
        try:
            got = await images.ensure_image(
                self.s.runtime, image, container.image_pull_policy, self.s.registries()
            )
            if got.pulled:
                self.event("Normal", "Pulled", f"pulled image {got.ref}")
        except images.ImageError as exc:
            self._fail(action.name, exc.reason, exc.message)
            return
        try:
            self._prepare_volumes()
        except OSError as exc:
            self._fail(action.name, "CreateContainerConfigError", f"cannot prepare volumes: {exc}")
            return
        # Before the attempt is counted: like a failed pull, this waits and retries (kubelet's
        # CreateContainerConfigError), it does not end the container.
        sec = render.security(self.pod, container)
        try:
            image_user = await self.s.runtime.image_user(got.ref) if sec.needs_image_user else ""
        except RuntimeError_ as exc:
            self._fail(action.name, "CreateContainerConfigError", f"cannot read the image's user: {exc}")
            return
        if problem := render.security_problem(sec, image_user):
            self._fail(action.name, "CreateContainerConfigError", problem)
            return
        if action.reason == "missing":
            crec.last_termination = Termination(137, "ContainerMissing", "removed outside Atoll")
        elif self.previous.get(action.name) is not None:
            # Remember how the last instance ended, in case it is removed later.
            crec.last_termination = status.termination_of(self.previous[action.name])
        crec.attempt = action.attempt
        self.s.states.save(self.record)
        spec = render.render_container(self.pod, container, self.s.ctx, self.sandbox_id, action.attempt)
        if spec.image != got.ref:
            spec = replace(spec, image=got.ref)  # the registry-qualified name that was found or pulled
        try:
            cid = await self.s.runtime.create_container(spec)
        except RuntimeError_ as exc:
            self._fail(action.name, "CreateContainerError", str(exc))
            return
        crec.container_id = cid
        try:
            await self.s.runtime.start_container(cid)
        except RuntimeError_ as exc:
            self._fail(action.name, "RunContainerError", str(exc))
            return
        crec.waiting_reason, crec.waiting_message, crec.not_before = "", "", 0.0
        if action.reason == "restart":
            crec.backoff_s = action.next_backoff_s
            self.event("Normal", "Restarted", f"restarted container {action.name} (attempt {action.attempt})")
        else:
            self.event("Normal", "Started", f"started container {action.name} ({action.reason})")

    async def start_existing(self, action: plan.StartExisting) -> None:
        try:
            await self.s.runtime.start_container(action.container_id)
        except RuntimeError_ as exc:
            self._fail(action.name, "RunContainerError", str(exc))
            return
        crec = self.record.container(action.name)
        crec.waiting_reason, crec.waiting_message, crec.not_before = "", "", 0.0
        self.event("Normal", "Started", f"started container {action.name}")
