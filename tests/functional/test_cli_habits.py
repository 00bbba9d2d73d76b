"""kubectl habits in the `coordinator` CLI (issue 15, point 5), through main() against an in-process
coordinator: delete -l/--all/--ignore-not-found, -f DIR [-R], get KIND,KIND, -A, --show-labels,
did-you-mean for a kind."""

from __future__ import annotations

import json
import pathlib

import pytest
import yaml

from tests.functional.harness import Cluster
from tests.functional.test_cli import cli


def pod(name: str, namespace: str = "default", **labels: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def service(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 80}]},
    }


def write(path: pathlib.Path, *docs: dict[str, object]) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))
    return path


async def test_apply_and_create_a_directory(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    top = tmp_path / "manifests"
    write(top / "b-pods.yaml", pod("b1"), pod("b2"))
    write(top / "a-web.yml", service("web"))
    (top / "c-pod.json").write_text(json.dumps(pod("c1")))
    (top / "README.md").write_text("not a manifest\n")
    write(top / "deeper" / "d.yaml", pod("d1"))

    code, out, err = await cli(cluster, capsys, "apply", "-f", str(top))
    # Sorted by file name, as kubectl reads a directory; a directory below only with -R.
    assert (code, err) == (0, "")
    assert out.splitlines() == ["service/web created", "pod/b1 created", "pod/b2 created", "pod/c1 created"]

    code, out, _ = await cli(cluster, capsys, "apply", "-R", "-f", str(top))
    assert code == 0 and out.splitlines()[-1] == "pod/d1 created" and "pod/b1 unchanged" in out

    code, out, _ = await cli(cluster, capsys, "create", "-f", str(top / "deeper"), "--dry-run")
    assert code == 0 and out.strip() == "pod/d1 created (dry run)"

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = await cli(cluster, capsys, "apply", "-f", str(empty))
    assert code == 2 and "no manifests" in err


async def test_get_several_kinds_all_namespaces_and_labels(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    manifest = write(
        tmp_path / "m.yaml",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
        pod("p1", app="web"),
        pod("p2", "team-a", app="db"),
        service("web"),
    )
    code, _, err = await cli(cluster, capsys, "create", "-f", str(manifest))
    assert code == 0, err

    code, out, _ = await cli(cluster, capsys, "get", "pods,svc")
    pods_block, services_block = out.strip().split("\n\n")
    assert pods_block.splitlines()[0].split()[0] == "NAME"
    assert [line.split()[0] for line in pods_block.splitlines()[1:]] == ["pod/p1"]
    assert [line.split()[0] for line in services_block.splitlines()[1:]] == ["service/web"]

    code, out, _ = await cli(cluster, capsys, "get", "pods", "-A", "--show-labels")
    header, *rows = out.strip().splitlines()
    assert header.split()[0] == "NAMESPACE" and header.count("LABELS") == 1  # pods' table has it already
    assert sorted((r.split()[0], r.split()[1]) for r in rows) == [("default", "p1"), ("team-a", "p2")]

    code, out, _ = await cli(cluster, capsys, "get", "namespaces", "--show-labels")
    header, *rows = out.strip().splitlines()
    assert header.split()[-1] == "LABELS" and any(r.startswith("team-a ") for r in rows)

    code, out, _ = await cli(cluster, capsys, "get", "pods,services", "-o", "name")
    assert out.splitlines() == ["pod/p1", "service/web"]
    code, out, _ = await cli(cluster, capsys, "get", "po,svc", "-A", "-o", "json")
    doc = json.loads(out)
    assert doc["kind"] == "List"
    assert sorted((i["kind"], i["metadata"]["name"]) for i in doc["items"]) == [
        ("Pod", "p1"),
        ("Pod", "p2"),
        ("Service", "web"),
    ]

    code, _, err = await cli(cluster, capsys, "get", "podz")
    assert code == 1
    assert err.strip() == 'error: the server doesn\'t have a resource type "podz"; did you mean "pods"?'


async def test_delete_by_selector_all_and_ignore_not_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    manifest = write(
        tmp_path / "m.yaml", pod("a1", app="a"), pod("a2", app="a"), pod("b1", app="b"), service("web")
    )
    assert (await cli(cluster, capsys, "create", "-f", str(manifest)))[0] == 0

    code, out, _ = await cli(cluster, capsys, "delete", "pods", "-l", "app=a")
    assert code == 0 and out.splitlines() == ['pod "a1" deleted', 'pod "a2" deleted']

    code, out, err = await cli(cluster, capsys, "delete", "pods", "-l", "app=a")
    assert (code, out) == (0, "") and "No resources found" in err

    # A missing name is reported, the others are deleted, and the command fails at the end.
    code, out, err = await cli(cluster, capsys, "delete", "pod", "gone", "b1")
    assert code == 1 and out.strip() == 'pod "b1" deleted'
    assert err.strip() == 'Error from server (NotFound): pods "gone" not found'

    code, out, err = await cli(cluster, capsys, "delete", "pod", "gone", "--ignore-not-found")
    assert (code, out, err) == (0, "", "")

    code, _, err = await cli(cluster, capsys, "delete", "pods", "x", "--all")
    assert code == 2 and "names cannot be given with -l or --all" in err

    code, _, err = await cli(cluster, capsys, "delete", "pods")
    assert code == 2 and "--all" in err

    assert (await cli(cluster, capsys, "create", "-f", str(write(tmp_path / "n.yaml", pod("n1")))))[0] == 0
    code, out, _ = await cli(cluster, capsys, "delete", "pods,svc", "--all")
    assert code == 0 and out.splitlines() == ['pod "n1" deleted', 'service "web" deleted']
