"""Plan what one pod needs: a pure function from (desired, observed, record) to actions.

Like kubelet's computePodActions: compare the pod's spec with the containers
the runtime reports and the agent's record of the pod, and return the steps
that converge them. Nothing here touches the runtime, the clock or the disk,
so every rule (restart policies, crash-loop backoff, sandbox recreation,
adoption after an agent restart) is tested as data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.pods import render
from agent.pods.state import PodRecord
from agent.runtime.base import ContainerInfo
from atoll.v1 import pod_pb2


@dataclass(frozen=True)
class BackoffPolicy:
    """Crash-loop backoff: restart k waits base * 2**(k-2) seconds (the first restart is immediate)."""

    base: float = 10.0
    maximum: float = 300.0
    # A container that ran this long before exiting starts its backoff afresh.
    reset_after: float = 600.0

    def next_delay(self, current: float, ran_for: float | None) -> float:
        if current == 0 or (ran_for is not None and ran_for >= self.reset_after):
            return self.base
        return min(current * 2, self.maximum)


@dataclass(frozen=True)
class Observed:
    """The containers of one pod, newest attempt first."""

    infra: tuple[ContainerInfo, ...] = ()
    apps: Mapping[str, tuple[ContainerInfo, ...]] = field(default_factory=dict)

    @property
    def all(self) -> list[ContainerInfo]:
        return [*self.infra, *(c for cs in self.apps.values() for c in cs)]


def attempt_of(info: ContainerInfo) -> int:
    try:
        return int(info.labels.get(render.LABEL_ATTEMPT, "0"))
    except ValueError:
        return 0


def group(containers: Iterable[ContainerInfo]) -> Observed:
    infra: list[ContainerInfo] = []
    apps: dict[str, list[ContainerInfo]] = {}
    for c in containers:
        if c.state == "removing":
            continue  # on its way out (e.g. `docker rm -f`): plan as if it were gone
        name = c.labels.get(render.LABEL_CONTAINER, "")
        if name == render.INFRA:
            infra.append(c)
        else:
            apps.setdefault(name, []).append(c)
    return Observed(_newest_first(infra), {n: _newest_first(cs) for n, cs in apps.items()})


def _newest_first(containers: list[ContainerInfo]) -> tuple[ContainerInfo, ...]:
    return tuple(sorted(containers, key=attempt_of, reverse=True))


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillContainer:
    container: ContainerInfo
    reason: str
    remove: bool = True


@dataclass(frozen=True)
class CreateSandbox:
    attempt: int


@dataclass(frozen=True)
class StartContainer:
    name: str
    attempt: int
    reason: str  # new, restart, missing, changed, sandbox
    next_backoff_s: float = 0.0


@dataclass(frozen=True)
class StartExisting:
    name: str
    container_id: str


@dataclass(frozen=True)
class MarkLost:
    """A container removed behind our back that its restart policy does not bring back."""

    name: str


Action = KillContainer | CreateSandbox | StartContainer | StartExisting | MarkLost


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    # Sync the pod again at this time (epoch seconds): a backoff ends then.
    requeue_at: float | None = None
    terminal: bool = False

    def wait_until(self, when: float) -> None:
        self.requeue_at = when if self.requeue_at is None else min(self.requeue_at, when)


def should_restart(policy: int, exit_code: int) -> bool:
    if policy == pod_pb2.RESTART_POLICY_NEVER:
        return False
    if policy == pod_pb2.RESTART_POLICY_ON_FAILURE:
        return exit_code != 0
    return True


def _epoch(info: ContainerInfo) -> tuple[float | None, float | None]:
    started = info.started_at.timestamp() if info.started_at else None
    finished = info.finished_at.timestamp() if info.finished_at else None
    return started, finished


def _container_done(pod: pod_pb2.Pod, obs: Observed, record: PodRecord, name: str) -> bool:
    """True when this container has finished for good under the pod's restart policy."""
    instances = obs.apps.get(name, ())
    crec = record.containers.get(name)
    if instances:
        cur = instances[0]
        return cur.state in ("exited", "dead") and not should_restart(pod.spec.restart_policy, cur.exit_code)
    return crec is not None and crec.lost


def plan_removal(obs: Observed) -> Plan:
    """Everything of a pod that is no longer wanted goes, app containers before the infra."""
    apps = [c for cs in obs.apps.values() for c in cs]
    return Plan(
        [
            *(KillContainer(c, "PodDeleted") for c in apps),
            *(KillContainer(c, "PodDeleted") for c in obs.infra),
        ]
    )


def plan_pod(
    pod: pod_pb2.Pod,
    obs: Observed,
    record: PodRecord,
    *,
    now: float,
    infra_hash: str,
    container_hashes: Mapping[str, str],
    backoff: BackoffPolicy,
) -> Plan:
    plan = Plan()
    spec_names = [c.name for c in pod.spec.containers]
    # Containers no longer in the spec, and instances older than the newest two, go.
    for name, instances in obs.apps.items():
        if name not in spec_names:
            plan.actions.extend(KillContainer(c, "NotInSpec") for c in instances)
            continue
        plan.actions.extend(KillContainer(c, "Superseded") for c in instances[2:])
    sandbox = obs.infra[0] if obs.infra else None
    plan.actions.extend(KillContainer(c, "Superseded") for c in obs.infra[1:])

    if all(_container_done(pod, obs, record, n) for n in spec_names):
        plan.terminal = True
        if sandbox is not None and sandbox.running:
            plan.actions.append(KillContainer(sandbox, "PodCompleted", remove=False))
        return plan

    sandbox_ok = (
        sandbox is not None and sandbox.running and sandbox.labels.get(render.LABEL_HASH) == infra_hash
    )
    if not sandbox_ok:
        if record.sandbox_not_before > now:
            plan.wait_until(record.sandbox_not_before)
            return plan
        # A new sandbox means every app container starts again inside it.
        for name in spec_names:
            for c in obs.apps.get(name, ())[:1]:
                if c.running:
                    plan.actions.append(KillContainer(c, "SandboxChanged", remove=False))
        if sandbox is not None:
            plan.actions.append(KillContainer(sandbox, "SandboxChanged"))
        attempt = max(record.sandbox_attempt, *(attempt_of(c) for c in obs.infra), -1) + 1
        plan.actions.append(CreateSandbox(attempt))
        for name in spec_names:
            if _container_done(pod, obs, record, name):
                continue
            last = _last_attempt(obs, record, name)
            plan.actions.append(StartContainer(name, last + 1, "new" if last < 0 else "sandbox"))
        return plan

    assert sandbox is not None
    for name in spec_names:
        _plan_container(
            plan,
            pod=pod,
            obs=obs,
            record=record,
            name=name,
            sandbox_id=sandbox.id,
            now=now,
            spec_hash=container_hashes[name],
            backoff=backoff,
        )
    return plan


def _last_attempt(obs: Observed, record: PodRecord, name: str) -> int:
    crec = record.containers.get(name)
    instances = obs.apps.get(name, ())
    return max(crec.attempt if crec else -1, attempt_of(instances[0]) if instances else -1)


def _plan_container(
    plan: Plan,
    *,
    pod: pod_pb2.Pod,
    obs: Observed,
    record: PodRecord,
    name: str,
    sandbox_id: str,
    now: float,
    spec_hash: str,
    backoff: BackoffPolicy,
) -> None:
    instances = obs.apps.get(name, ())
    cur = instances[0] if instances else None
    crec = record.containers.get(name)
    last = _last_attempt(obs, record, name)
    # Errors (image pull, create) hold the container back until their backoff ends.
    if crec is not None and crec.not_before > now:
        plan.wait_until(crec.not_before)
        return

    if cur is None:
        if last < 0:
            plan.actions.append(StartContainer(name, 0, "new"))
        elif crec is not None and crec.lost:
            return
        elif pod.spec.restart_policy == pod_pb2.RESTART_POLICY_NEVER:
            plan.actions.append(MarkLost(name))
        else:
            # Removed behind our back: recreate it, and count it as a restart.
            plan.actions.append(StartContainer(name, last + 1, "missing"))
        return

    if cur.labels.get(render.LABEL_SANDBOX) != sandbox_id:
        if cur.running:
            plan.actions.append(KillContainer(cur, "SandboxChanged", remove=False))
        plan.actions.append(StartContainer(name, last + 1, "sandbox"))
        return
    if cur.running:
        if cur.labels.get(render.LABEL_HASH) != spec_hash:
            plan.actions.append(KillContainer(cur, "SpecChanged", remove=False))
            plan.actions.append(StartContainer(name, last + 1, "changed"))
        return
    if cur.state == "created":
        plan.actions.append(StartExisting(name, cur.id))
        return
    # Exited or dead.
    if not should_restart(pod.spec.restart_policy, cur.exit_code):
        return
    started, finished = _epoch(cur)
    ran_for = finished - started if started is not None and finished is not None else None
    current_backoff = crec.backoff_s if crec else 0.0
    if ran_for is not None and ran_for >= backoff.reset_after:
        current_backoff = 0.0
    not_before = (finished or now) + current_backoff
    if not_before > now:
        plan.wait_until(not_before)
        return
    plan.actions.append(
        StartContainer(name, last + 1, "restart", backoff.next_delay(current_backoff, ran_for))
    )
