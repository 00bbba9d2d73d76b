"""The agent validates again what the coordinator sends: a bad pod gets no container, one event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.pods import render
from agent.pods.events import RecordingRecorder
from agent.pods.state import PodStateStore
from agent.pods.syncer import PodSyncer
from agent.runtime.fake import FakeRuntime
from atoll import validation
from atoll.v1 import pod_pb2


def _pod(name: str = "web", image: str = "busybox") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.uid = name, "uid-0123456789"
    p.spec.containers.add(name="web", image=image)
    validation.default_pod(p)
    return p


@pytest.mark.parametrize("tail", ["\n", "\r", "\t", "\x00"], ids=["LF", "CR", "TAB", "NUL"])
@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        (lambda t: _pod(image="busybox" + t), "spec.containers[0].image"),
        (lambda t: _pod(name="web" + t), "metadata.name"),
    ],
    ids=["image", "name"],
)
async def test_a_pod_that_got_past_the_coordinator_is_refused_with_one_event(
    tmp_path: Path, tail: str, spoil: object, field: str
) -> None:
    rt = FakeRuntime(images=("atoll/pause:1.0", "busybox"))
    recorder = RecordingRecorder()
    ctx = render.RenderContext(
        node_name="n1", infra_image="atoll/pause:1.0", pod_network="bridge", pods_dir=tmp_path / "pods"
    )
    syncer = PodSyncer(
        rt, PodStateStore(tmp_path / "pods"), ctx, host_ip=lambda: "10.0.0.1", recorder=recorder
    )
    assert callable(spoil)
    bad = spoil(tail)
    for _ in range(3):  # resyncs: still refused, still one event
        result = await syncer.sync(bad)
    assert rt.specs == {}  # no sandbox, no container
    assert result.status.phase == pod_pb2.POD_PHASE_PENDING and result.status.reason == "FailedValidation"
    assert result.status.message.startswith(f"{field}: ")
    assert recorder.reasons() == ["FailedValidation"] and field in recorder.events[0][3]
    assert result.requeue_at is None
    # Once the pod is right again it runs.
    await syncer.sync(_pod())
    assert any(s.labels[render.LABEL_CONTAINER] == "web" for s in rt.specs.values())


async def test_a_pod_is_validated_again_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.pods import syncer as syncer_module

    calls: list[str] = []
    real = syncer_module.refusal

    def counting(pod: pod_pb2.Pod, *kept: Any) -> str:
        calls.append(pod.spec.containers[0].image)
        return real(pod, *kept)

    monkeypatch.setattr(syncer_module, "refusal", counting)
    rt = FakeRuntime(images=("atoll/pause:1.0", "busybox", "busybox\n"))
    ctx = render.RenderContext(
        node_name="n1", infra_image="atoll/pause:1.0", pod_network="bridge", pods_dir=tmp_path / "pods"
    )
    syncer = PodSyncer(rt, PodStateStore(tmp_path / "pods"), ctx, host_ip=lambda: "10.0.0.1")
    good = _pod()
    for _ in range(3):
        await syncer.sync(good)
    assert calls == ["busybox"]  # resyncs of the same pod: validated once
    bad = _pod(image="busybox\n")  # the same uid, changed: validated again, and refused
    result = await syncer.sync(bad)
    assert calls == ["busybox", "busybox\n"] and result.status.reason == "FailedValidation"
    await syncer.remove(good.metadata.uid)
    await syncer.sync(good)  # gone and back: validated afresh
    assert calls == ["busybox", "busybox\n", "busybox"]
