"""ensure_image and the pod syncer with registry settings, on the recording fake runtime."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.pods import images, render
from agent.pods.events import RecordingRecorder
from agent.pods.state import PodStateStore
from agent.pods.syncer import PodSyncer
from agent.registries import ImageResolver, RegistryManager, settings
from agent.runtime.fake import FakeRuntime
from atoll.v1 import network_pb2, pod_pb2

LAB = "198.51.100.10:5000"
ALWAYS, NEVER, IF_NOT_PRESENT = (
    pod_pb2.PULL_POLICY_ALWAYS,
    pod_pb2.PULL_POLICY_NEVER,
    pod_pb2.PULL_POLICY_IF_NOT_PRESENT,
)
SECRET = "s3cr3t-Passw0rd"


def resolver(**kwargs: object) -> ImageResolver:
    return ImageResolver(settings.merge(settings.build(source="test", strict=True, **kwargs)))  # type: ignore[arg-type]


async def test_without_registry_settings_nothing_changes() -> None:
    rt = FakeRuntime(images=("fedora/apache",))
    assert await images.ensure_image(rt, "fedora/apache", IF_NOT_PRESENT) == images.ImageResult(
        "fedora/apache", False
    )
    rt.pullable.add("busybox")
    assert await images.ensure_image(rt, "busybox", IF_NOT_PRESENT) == images.ImageResult("busybox", True)


async def test_a_locally_built_image_wins_over_every_registry() -> None:
    # `make up` offline: fedora/apache exists only locally, a search registry is configured.
    rt = FakeRuntime(images=("fedora/apache",))
    got = await images.ensure_image(rt, "fedora/apache", IF_NOT_PRESENT, resolver(search=[LAB]))
    assert got == images.ImageResult("fedora/apache", False)
    assert rt.calls_of("image_present") == [f"{LAB}/fedora/apache", "fedora/apache"]
    assert rt.calls_of("pull_image") == []


async def test_pulls_walk_the_candidates_and_stop_at_the_first_success() -> None:
    rt = FakeRuntime()
    rt.pull_errors[f"a.lab/{'fedora/apache'}"] = "manifest unknown"
    rt.pullable.add(f"{LAB}/fedora/apache")
    got = await images.ensure_image(rt, "fedora/apache", IF_NOT_PRESENT, resolver(search=["a.lab", LAB]))
    assert got == images.ImageResult(f"{LAB}/fedora/apache", True)
    assert rt.calls_of("pull_image") == ["a.lab/fedora/apache", f"{LAB}/fedora/apache"]


async def test_the_last_registry_message_and_the_registries_tried_are_the_pod_message() -> None:
    rt = FakeRuntime()
    rt.pull_errors["a.lab/nosuch"] = "manifest unknown"
    rt.pull_errors["nosuch"] = "pull access denied for nosuch, repository does not exist"
    with pytest.raises(images.ImageError) as exc:
        await images.ensure_image(rt, "nosuch", IF_NOT_PRESENT, resolver(search=["a.lab"], blocked=["b.lab"]))
    assert exc.value.reason == "ErrImagePull"
    assert exc.value.message == (
        'failed to pull image "nosuch" (tried a.lab, docker.io): '
        "pull access denied for nosuch, repository does not exist"
    )


async def test_always_pulls_even_when_present_and_never_only_looks() -> None:
    rt = FakeRuntime(images=(f"{LAB}/app",))
    rt.pullable.add(f"{LAB}/app")
    got = await images.ensure_image(rt, "app", ALWAYS, resolver(search=[LAB]))
    assert got == images.ImageResult(f"{LAB}/app", True)
    assert await images.ensure_image(rt, "app", NEVER, resolver(search=[LAB])) == images.ImageResult(
        f"{LAB}/app", False
    )
    with pytest.raises(images.ImageError) as exc:
        await images.ensure_image(FakeRuntime(), "app", NEVER, resolver(search=[LAB]))
    assert exc.value.reason == "ErrImageNeverPull"
    assert f"looked for {LAB}/app, app" in exc.value.message


async def test_blocked_registry_is_never_contacted() -> None:
    rt = FakeRuntime(images=("quay.io/x",))
    with pytest.raises(images.ImageError) as exc:
        await images.ensure_image(rt, "quay.io/x", IF_NOT_PRESENT, resolver(blocked=["quay.io"]))
    assert exc.value.reason == "ErrImagePull"
    assert exc.value.message == (
        'failed to pull image "quay.io/x": registry quay.io is blocked by the node\'s registry settings'
    )
    assert rt.calls == []  # blocked wins even over an image that is present


async def test_credentials_go_to_their_registry_only() -> None:
    rt = FakeRuntime()
    rt.pull_errors[f"{LAB}/app"] = "manifest unknown"
    rt.pullable.add("app")
    r = resolver(search=[LAB], auths=[(LAB, "deploy", SECRET)])
    await images.ensure_image(rt, "app", IF_NOT_PRESENT, r)
    assert dict(rt.pull_auths[f"{LAB}/app"] or {})["password"] == SECRET
    assert rt.pull_auths["app"] is None


def _pod(image: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "web", "default", "uid-0123456789"
    p.spec.containers.add(name="web", image=image)
    return p


def _syncer(rt: FakeRuntime, tmp_path: Path, mgr: RegistryManager | None = None) -> PodSyncer:
    ctx = render.RenderContext(
        node_name="n1", infra_image="atoll/pause:1.0", pod_network="bridge", pods_dir=tmp_path / "pods"
    )
    return PodSyncer(
        rt,
        PodStateStore(tmp_path / "pods"),
        ctx,
        host_ip=lambda: "10.0.0.1",
        recorder=RecordingRecorder(),
        registries=mgr.resolver if mgr is not None else None,
    )


async def test_the_container_runs_the_qualified_name_that_was_pulled(tmp_path: Path) -> None:
    rt = FakeRuntime(images=("atoll/pause:1.0",))
    rt.pullable.add(f"{LAB}/fedora/apache")
    mgr = RegistryManager(None)
    await mgr.apply(network_pb2.RegistriesSpec(search=[LAB], blocked=["docker.io"]))
    result = await _syncer(rt, tmp_path, mgr).sync(_pod("fedora/apache"))
    (app,) = [s for s in rt.specs.values() if s.labels[render.LABEL_CONTAINER] == "web"]
    assert app.image == f"{LAB}/fedora/apache"
    assert result.status.container_statuses[0].image == "fedora/apache"  # what the pod asked for
    assert result.status.container_statuses[0].state.HasField("running")


async def test_a_password_never_reaches_logs_events_or_pod_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    local = tmp_path / "registries.yaml"
    local.write_text(f"auths:\n  - registry: {LAB}\n    username: deploy\n    password: '{SECRET}'\n")
    local.chmod(0o644)  # readable by others: warned about, still without the password
    mgr = RegistryManager(None, local_file=local)
    await mgr.apply(
        network_pb2.RegistriesSpec(
            search=[LAB],
            auths=[network_pb2.RegistryAuth(registry="docker.io", username="hub", password=SECRET + "-hub")],
        )
    )
    rt = FakeRuntime(images=("atoll/pause:1.0",))
    # An engine that echoes the credentials back must not carry them any further.
    rt.pull_errors[f"{LAB}/private/app"] = f"unauthorized: bad credentials deploy:{SECRET}"
    rt.pull_errors["private/app"] = f"denied for hub:{SECRET}-hub"
    syncer = _syncer(rt, tmp_path, mgr)
    first = await syncer.sync(_pod("private/app"))
    waiting = first.status.container_statuses[0].state.waiting
    assert waiting.reason == "ErrImagePull" and "denied for hub:***" in waiting.message
    assert dict(rt.pull_auths[f"{LAB}/private/app"] or {})["password"] == SECRET
    syncer.clock = lambda: 10**10  # past the backoff
    second = await syncer.sync(_pod("private/app"))
    assert second.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
    recorder = syncer.recorder
    assert isinstance(recorder, RecordingRecorder)
    texts = [
        caplog.text,
        repr(mgr.settings),
        mgr.settings.summary(),
        *(str(e) for e in recorder.events),
        str(first.status),
        str(second.status),
        *(p.read_text() for p in (tmp_path / "pods").rglob("*.json")),
    ]
    for text in texts:
        assert SECRET not in text
    assert "readable by others" in caplog.text
