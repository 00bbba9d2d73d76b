"""Security contexts rendered into container specs (agent/pods/render.py), and kubelet's runAsNonRoot check."""

from __future__ import annotations

import pathlib

import pytest

from agent.pods import render
from atoll.v1 import meta_pb2, pod_pb2

CTX = render.RenderContext(
    node_name="n1", infra_image="atoll/pause:1.0", pod_network="bridge", pods_dir=pathlib.Path("/tmp/x")
)


def pod(**container_sc: object) -> pod_pb2.Pod:
    p = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="web", namespace="default", uid="0123456789"))
    c = p.spec.containers.add(name="c", image="busybox")
    if container_sc:
        c.security_context.CopyFrom(pod_pb2.SecurityContext(**container_sc))  # type: ignore[arg-type]
    return p


def sec_of(p: pod_pb2.Pod) -> render.Security:
    return render.security(p, p.spec.containers[0])


def rendered(p: pod_pb2.Pod) -> tuple[str, bool]:
    spec = render.render_container(p, p.spec.containers[0], CTX, "sandbox", 0)
    return spec.user, spec.read_only_rootfs


def test_no_security_context_runs_as_the_image_says() -> None:
    assert rendered(pod()) == ("", False)


def test_run_as_user_group_and_read_only_root() -> None:
    assert rendered(pod(run_as_user=1000, run_as_group=2000, read_only_root_filesystem=True)) == (
        "1000:2000",
        True,
    )
    assert rendered(pod(run_as_user=0)) == ("0", False)


def test_the_containers_fields_win_over_the_pods() -> None:
    p = pod(run_as_user=1000)
    p.spec.security_context.run_as_user = 5
    p.spec.security_context.run_as_group = 6
    assert rendered(p) == ("1000:6", False)
    p.spec.containers[0].ClearField("security_context")
    assert rendered(p) == ("5:6", False)


def test_a_pod_security_context_changes_the_hash_only_when_set() -> None:
    p = pod()
    before = render.container_hash(p, p.spec.containers[0])
    p.spec.security_context.SetInParent()
    assert render.container_hash(p, p.spec.containers[0]) != before
    p.ClearField("spec")
    p.spec.containers.add(name="c", image="busybox")
    assert render.container_hash(p, p.spec.containers[0]) == before


@pytest.mark.parametrize(
    ("image_user", "problem"),
    [
        ("", "container has runAsNonRoot and image will run as root"),
        ("0", "container has runAsNonRoot and image will run as root"),
        ("0:1000", "container has runAsNonRoot and image will run as root"),
        (
            "root",
            "container has runAsNonRoot and image has non-numeric user (root), cannot verify user is non-root",
        ),
        ("1000", ""),
        ("1000:1000", ""),
    ],
)
def test_run_as_non_root_against_the_images_user(image_user: str, problem: str) -> None:
    sec = sec_of(pod(run_as_non_root=True))
    assert sec.needs_image_user
    assert render.security_problem(sec, image_user) == problem


def test_run_as_non_root_with_a_user() -> None:
    sec = sec_of(pod(run_as_non_root=True, run_as_user=0))
    assert not sec.needs_image_user
    assert render.security_problem(sec) == "container's runAsUser breaks non-root policy"
    p = pod(run_as_user=1000)
    p.spec.security_context.run_as_non_root = True
    sec = render.security(p, p.spec.containers[0])
    assert (sec.run_as_non_root, render.security_problem(sec)) == (True, "")


def test_a_group_needs_a_user() -> None:
    sec = sec_of(pod(run_as_group=5))
    assert render.security_problem(sec) == "runAsGroup is specified without a runAsUser"
