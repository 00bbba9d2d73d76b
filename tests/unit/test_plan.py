"""The pod planner as data: restart policies, backoff, sandbox changes, adoption."""

from __future__ import annotations

import datetime as dt
import pathlib

from agent.pods import plan, render
from agent.pods.state import ContainerRecord, PodRecord
from agent.runtime.base import ContainerInfo
from atoll.v1 import pod_pb2

CTX = render.RenderContext(
    node_name="n1", infra_image="atoll/pause:1.0", pod_network="bridge", pods_dir=pathlib.Path("/tmp/x")
)
NOW = 1_000_000.0
POLICY = plan.BackoffPolicy(base=10, maximum=300, reset_after=600)


def pod(policy: int = pod_pb2.RESTART_POLICY_ALWAYS, containers: tuple[str, ...] = ("web",)) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "p", "default", "uid-1234567890"
    p.spec.restart_policy = policy  # type: ignore[assignment]
    for name in containers:
        p.spec.containers.add(name=name, image="busybox")
    return p


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def infra(p: pod_pb2.Pod, *, running: bool = True, attempt: int = 0, cid: str = "infra0") -> ContainerInfo:
    spec = render.render_infra(p, CTX, attempt)
    return ContainerInfo(cid, spec.name, spec.image, spec.labels, "running" if running else "exited")


def app(
    p: pod_pb2.Pod,
    name: str = "web",
    *,
    state: str = "running",
    attempt: int = 0,
    exit_code: int = 0,
    cid: str = "",
    sandbox: str = "infra0",
    started: float = NOW - 100,
    finished: float | None = None,
) -> ContainerInfo:
    container = next(c for c in p.spec.containers if c.name == name)
    spec = render.render_container(p, container, CTX, sandbox, attempt)
    return ContainerInfo(
        cid or f"{name}{attempt}",
        spec.name,
        spec.image,
        spec.labels,
        state,  # type: ignore[arg-type]
        exit_code=exit_code,
        started_at=at(started),
        finished_at=at(finished) if finished else None,
    )


def run(
    p: pod_pb2.Pod, containers: list[ContainerInfo], record: PodRecord | None = None, now: float = NOW
) -> plan.Plan:
    return plan.plan_pod(
        p,
        plan.group(containers),
        record or PodRecord(uid=p.metadata.uid),
        now=now,
        infra_hash=render.infra_hash(p, CTX),
        container_hashes={c.name: render.container_hash(p, c) for c in p.spec.containers},
        backoff=POLICY,
    )


def kinds_of(result: plan.Plan) -> list[str]:
    return [type(a).__name__ for a in result.actions]


def test_new_pod_creates_sandbox_then_containers() -> None:
    p = pod(containers=("web", "sidecar"))
    result = run(p, [])
    assert result.actions == [
        plan.CreateSandbox(0),
        plan.StartContainer("web", 0, "new"),
        plan.StartContainer("sidecar", 0, "new"),
    ]


def test_converged_pod_needs_nothing() -> None:
    p = pod()
    assert run(p, [infra(p), app(p)]).actions == []


def test_first_crash_restarts_at_once_then_backs_off() -> None:
    p = pod()
    crashed = app(p, state="exited", exit_code=1, finished=NOW - 1)
    first = run(p, [infra(p), crashed])
    assert first.actions == [plan.StartContainer("web", 1, "restart", next_backoff_s=10)]
    record = PodRecord(uid=p.metadata.uid, containers={"web": ContainerRecord(attempt=1, backoff_s=10)})
    crashed_again = app(p, state="exited", exit_code=1, attempt=1, finished=NOW - 1)
    waiting = run(p, [infra(p), crashed, crashed_again], record)
    assert waiting.actions == []
    assert waiting.requeue_at == NOW - 1 + 10
    later = run(p, [infra(p), crashed, crashed_again], record, now=NOW + 10)
    assert later.actions == [plan.StartContainer("web", 2, "restart", next_backoff_s=20)]


def test_backoff_is_capped_and_resets_after_a_long_run() -> None:
    assert POLICY.next_delay(200, 5) == 300
    assert POLICY.next_delay(300, 5) == 300
    assert POLICY.next_delay(300, 601) == 10
    p = pod()
    record = PodRecord(uid=p.metadata.uid, containers={"web": ContainerRecord(attempt=3, backoff_s=300)})
    long_run = app(p, state="exited", exit_code=1, attempt=3, started=NOW - 1000, finished=NOW - 1)
    assert run(p, [infra(p), long_run], record).actions == [
        plan.StartContainer("web", 4, "restart", next_backoff_s=10)
    ]


def test_on_failure_and_never() -> None:
    ok = pod(pod_pb2.RESTART_POLICY_ON_FAILURE)
    done = run(ok, [infra(ok), app(ok, state="exited", exit_code=0, finished=NOW)])
    assert done.terminal
    assert kinds_of(done) == ["KillContainer"]  # the sandbox of a finished pod stops
    failed = run(ok, [infra(ok), app(ok, state="exited", exit_code=2, finished=NOW)])
    assert kinds_of(failed) == ["StartContainer"]
    never = pod(pod_pb2.RESTART_POLICY_NEVER)
    result = run(never, [infra(never, running=False), app(never, state="exited", exit_code=2, finished=NOW)])
    assert result.terminal and result.actions == []


def test_removed_container_is_recreated_as_a_restart() -> None:
    p = pod()
    record = PodRecord(uid=p.metadata.uid, containers={"web": ContainerRecord(attempt=2)})
    assert run(p, [infra(p)], record).actions == [plan.StartContainer("web", 3, "missing")]
    never = pod(pod_pb2.RESTART_POLICY_NEVER)
    assert run(never, [infra(never)], record).actions == [plan.MarkLost("web")]


def test_dead_sandbox_restarts_everything_in_a_new_one() -> None:
    p = pod()
    dead = infra(p, running=False)
    web = app(p)
    result = run(p, [dead, web])
    assert result.actions == [
        plan.KillContainer(web, "SandboxChanged", remove=False),
        plan.KillContainer(dead, "SandboxChanged"),
        plan.CreateSandbox(1),
        plan.StartContainer("web", 1, "sandbox"),
    ]


def test_changed_spec_replaces_the_container() -> None:
    p = pod()
    running = app(p)
    p.spec.containers[0].image = "busybox:2"
    result = run(p, [infra(p), running])
    assert result.actions == [
        plan.KillContainer(running, "SpecChanged", remove=False),
        plan.StartContainer("web", 1, "changed"),
    ]


def test_old_instances_are_garbage_collected() -> None:
    p = pod()
    instances = [app(p, state="exited", attempt=i, exit_code=1, finished=NOW - 50) for i in range(3)]
    current = app(p, attempt=3)
    result = run(p, [infra(p), current, *instances])
    assert [a.container.id for a in result.actions if isinstance(a, plan.KillContainer)] == ["web1", "web0"]


def test_error_backoff_holds_the_container() -> None:
    p = pod()
    record = PodRecord(
        uid=p.metadata.uid,
        containers={"web": ContainerRecord(attempt=0, waiting_reason="ErrImagePull", not_before=NOW + 5)},
    )
    result = run(p, [infra(p)], record)
    assert result.actions == [] and result.requeue_at == NOW + 5


def test_removal_kills_apps_before_infra() -> None:
    p = pod()
    i, a = infra(p), app(p)
    result = plan.plan_removal(plan.group([i, a]))
    assert [x.container.id for x in result.actions if isinstance(x, plan.KillContainer)] == [a.id, i.id]
