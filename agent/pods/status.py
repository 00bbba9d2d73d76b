"""Compute a pod's status from what runs, as kubelet's generateAPIPodStatus does."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from agent.pods import plan as planning
from agent.pods.state import ContainerRecord, PodRecord, Termination
from agent.runtime.base import ContainerInfo
from atoll.v1 import meta_pb2, pod_pb2

TRUE, FALSE = meta_pb2.CONDITION_STATUS_TRUE, meta_pb2.CONDITION_STATUS_FALSE


def _ts(value: dt.datetime | float | None) -> Timestamp:
    ts = Timestamp()
    if value is None:
        return ts
    if isinstance(value, dt.datetime):
        ts.FromDatetime(value)
    else:
        ts.FromNanoseconds(int(value * 1e9))
    return ts


def runtime_id(info: ContainerInfo) -> str:
    return f"docker://{info.id}"


def termination_of(info: ContainerInfo) -> Termination:
    reason = "OOMKilled" if info.oom_killed else ("Completed" if info.exit_code == 0 else "Error")
    return Termination(
        exit_code=info.exit_code,
        reason=reason,
        message=info.error,
        started_at=info.started_at.timestamp() if info.started_at else None,
        finished_at=info.finished_at.timestamp() if info.finished_at else None,
        container_id=runtime_id(info),
    )


def _terminated(term: Termination) -> pod_pb2.ContainerState:
    return pod_pb2.ContainerState(
        terminated=pod_pb2.ContainerStateTerminated(
            exit_code=term.exit_code,
            reason=term.reason,
            message=term.message,
            started_at=_ts(term.started_at),
            finished_at=_ts(term.finished_at),
            container_id=term.container_id,
        )
    )


def _waiting(reason: str, message: str = "") -> pod_pb2.ContainerState:
    return pod_pb2.ContainerState(waiting=pod_pb2.ContainerStateWaiting(reason=reason, message=message))


def container_status(
    pod: pod_pb2.Pod,
    container: pod_pb2.Container,
    obs: planning.Observed,
    crec: ContainerRecord | None,
    now: float,
) -> pod_pb2.ContainerStatus:
    instances = obs.apps.get(container.name, ())
    cur = instances[0] if instances else None
    attempt = max(crec.attempt if crec else -1, planning.attempt_of(cur) if cur else -1)
    status = pod_pb2.ContainerStatus(
        name=container.name, image=container.image, restart_count=max(0, attempt)
    )
    if len(instances) > 1:
        status.last_state.CopyFrom(_terminated(termination_of(instances[1])))
    elif crec is not None and crec.last_termination is not None:
        status.last_state.CopyFrom(_terminated(crec.last_termination))
    if cur is not None:
        status.container_id = runtime_id(cur)
        status.image_id = cur.image_id
    if cur is not None and cur.running:
        status.state.running.started_at.CopyFrom(_ts(cur.started_at))
        status.ready = True
    elif crec is not None and crec.waiting_reason:
        status.state.CopyFrom(_waiting(crec.waiting_reason, crec.waiting_message))
    elif cur is None:
        if crec is not None and crec.lost:
            status.state.CopyFrom(
                _terminated(Termination(137, "ContainerMissing", "the container was removed outside Atoll"))
            )
        else:
            status.state.CopyFrom(_waiting("ContainerCreating"))
    elif cur.state == "created":
        status.state.CopyFrom(_waiting("ContainerCreating"))
    elif planning.should_restart(pod.spec.restart_policy, cur.exit_code):
        status.last_state.CopyFrom(_terminated(termination_of(cur)))
        delay = crec.backoff_s if crec else 0.0
        status.state.CopyFrom(
            _waiting(
                "CrashLoopBackOff", f"back-off {delay:.0f}s restarting failed container={container.name}"
            )
        )
    else:
        status.state.CopyFrom(_terminated(termination_of(cur)))
    return status


def phase_of(pod: pod_pb2.Pod, statuses: list[pod_pb2.ContainerStatus]) -> pod_pb2.PodPhase:
    waiting = running = stopped = succeeded = 0
    for cs in statuses:
        which = cs.state.WhichOneof("state")
        if which == "running":
            running += 1
        elif which == "terminated":
            stopped += 1
            succeeded += cs.state.terminated.exit_code == 0
        elif cs.last_state.WhichOneof("state") == "terminated":
            stopped += 1
        else:
            waiting += 1
    policy = pod.spec.restart_policy
    if waiting:
        return pod_pb2.POD_PHASE_PENDING
    if running:
        return pod_pb2.POD_PHASE_RUNNING
    if stopped:
        if policy == pod_pb2.RESTART_POLICY_ALWAYS:
            return pod_pb2.POD_PHASE_RUNNING
        if stopped == succeeded and stopped == len(statuses):
            return pod_pb2.POD_PHASE_SUCCEEDED
        if policy == pod_pb2.RESTART_POLICY_NEVER:
            return pod_pb2.POD_PHASE_FAILED
        return pod_pb2.POD_PHASE_RUNNING
    return pod_pb2.POD_PHASE_PENDING


def pod_status(
    pod: pod_pb2.Pod, obs: planning.Observed, record: PodRecord, *, host_ip: str, now: float
) -> pod_pb2.PodStatus:
    statuses = [
        container_status(pod, c, obs, record.containers.get(c.name), now) for c in pod.spec.containers
    ]
    status = pod_pb2.PodStatus(
        phase=phase_of(pod, statuses),
        host_ip=host_ip,
        container_statuses=statuses,
        observed_generation=pod.metadata.generation,
    )
    if record.start_time:
        status.start_time.CopyFrom(_ts(record.start_time))
    sandbox = obs.infra[0] if obs.infra else None
    if sandbox is not None and sandbox.running:
        status.pod_ip = sandbox.ip
        if not sandbox.ip and record.sandbox_plumbed == sandbox.id:
            status.pod_ip = record.sandbox_address.partition("/")[0]
    elif record.sandbox_error:
        status.reason = "SandboxError"
        status.message = record.sandbox_error
    ready = bool(statuses) and all(cs.ready for cs in statuses) and bool(status.pod_ip)
    for ctype, value in (("Initialized", True), ("ContainersReady", ready), ("Ready", ready)):
        status.conditions.append(pod_pb2.PodCondition(type=ctype, status=TRUE if value else FALSE))
    return status
