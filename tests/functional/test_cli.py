"""The `coordinator` CLI against an in-process cluster: tables, formats, manifests, errors."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest
import yaml

from coordinator.cli.main import main
from tests.functional.harness import Cluster, eventually

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


async def cli(cluster: Cluster, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, [*cluster.cli_args(), *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_create_get_describe_delete(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    await cluster.add_node("node-1", images=("fedora/apache",))
    code, out, _ = await cli(cluster, capsys, "create", "-f", str(EXAMPLES / "apache-pod.json"))
    assert code == 0 and out.strip() == "pod/apache created"

    async def running() -> str:
        _, text, _ = await cli(cluster, capsys, "get", "pods")
        return text if "Running" in text else ""

    table = await eventually(running, what="apache Running in get pods")
    header, row = table.strip().splitlines()
    assert header.split()[:4] == ["NAME", "IP", "CONTAINER(S)", "IMAGE(S)"]
    assert row.split()[0] == "apache" and "node-1/127.0.0.1" in row and "name=apache" in row

    code, out, _ = await cli(cluster, capsys, "get", "minions")
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "LABELS", "STATUS"]
    assert "Ready" in out.splitlines()[1]

    code, out, _ = await cli(cluster, capsys, "get", "po", "apache", "-o", "json")
    doc = json.loads(out)
    assert (
        doc["kind"] == "Pod" and doc["status"]["phase"] == "Running" and doc["spec"]["nodeName"] == "node-1"
    )
    code, out, _ = await cli(cluster, capsys, "get", "pods", "-o", "yaml", "-l", "name=apache")
    assert yaml.safe_load(out)["items"][0]["metadata"]["name"] == "apache"
    code, out, _ = await cli(cluster, capsys, "describe", "pod", "apache")
    assert "Restart Count: 0" in out and "Node:          node-1/127.0.0.1" in out

    code, out, _ = await cli(cluster, capsys, "apply", "-f", str(EXAMPLES / "apache-pod.json"))
    assert out.strip() == "pod/apache unchanged"
    code, out, _ = await cli(cluster, capsys, "delete", "pod", "apache")
    assert code == 0 and out.strip() == 'pod "apache" deleted'
    code, _, err = await cli(cluster, capsys, "get", "pod", "apache")
    assert code == 1 and 'pods "apache" not found' in err


async def test_broken_manifest_one_line_and_nothing_stored(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    good = json.loads((EXAMPLES / "apache-pod.json").read_text())
    bad = json.loads((EXAMPLES / "apache-pod.json").read_text())
    bad["id"] = bad["desiredState"]["manifest"]["id"] = "second"
    bad["desiredState"]["manifest"]["containers"][0]["ports"][0]["hostPort"] = "eighty"
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(good) + "---\n" + yaml.safe_dump(bad))
    code, _, err = await cli(cluster, capsys, "create", "-f", str(path))
    assert code == 1
    assert err.strip().count("\n") == 0
    assert "desiredState.manifest.containers[0].ports[0].hostPort" in err and "two.yaml" in err
    code, _, err = await cli(cluster, capsys, "get", "pods")
    assert "No resources found" in err


async def test_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(main, ["--server", "127.0.0.1:1", "get", "nodes"])
    _, err = capsys.readouterr()
    assert code == 1 and err.startswith("error: cannot reach the coordinator") and err.count("\n") == 1


def the_2015_apache(tmp_path: pathlib.Path) -> pathlib.Path:
    """The 2015 article's own apache pod: examples/apache-pod.json with its container named my-fedora-apache."""
    doc = json.loads((EXAMPLES / "apache-pod.json").read_text())
    doc["desiredState"]["manifest"]["containers"][0]["name"] = "my-fedora-apache"
    path = tmp_path / "apache-pod.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


async def test_errors_of_create_and_apply_name_the_file_and_the_object(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    example = str(EXAMPLES / "apache-pod.json")
    code, out, _ = await cli(cluster, capsys, "apply", "-f", example)
    assert code == 0 and out.strip() == "pod/apache created"
    # The user replaces it with the article's pod, under the same name: apply cannot turn one into the other.
    code, _, _ = await cli(cluster, capsys, "delete", "pod", "apache")
    assert code == 0
    code, out, _ = await cli(cluster, capsys, "create", "-f", str(the_2015_apache(tmp_path)))
    assert code == 0 and out.strip() == "pod/apache created"

    code, out, err = await cli(cluster, capsys, "apply", "-f", example)
    assert code == 1 and out == ""
    assert err == (
        f'Error from server (InvalidArgument): {example}: pod "apache": '
        "spec: pod updates may not change fields other than spec.containers[*].image\n"
    )
    code, out, err = await cli(cluster, capsys, "create", "-f", example)
    assert code == 1 and out == ""
    assert (
        err == f'Error from server (AlreadyExists): {example}: pod "apache": pods "apache" already exists\n'
    )

    # Invalid on the client: the file, the object, the field.
    bad = json.loads((EXAMPLES / "apache-pod.json").read_text())
    bad["desiredState"]["manifest"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, _, err = await cli(cluster, capsys, "apply", "-f", str(tmp_path / "bad.json"))
    assert code == 1
    assert err == (
        f'error: {tmp_path / "bad.json"}: pod "apache": '
        'desiredState.manifest.containers[0].ports[0].containerPort: expected an integer, got "eighty"\n'
    )

    # --skip-conflicts (make up): reported on one line, left as it is, the other files applied, exit 0.
    other = str(EXAMPLES / "apache-pod-v1.yaml")
    code, out, err = await cli(cluster, capsys, "apply", "--skip-conflicts", "-f", example, "-f", other)
    assert code == 0 and out == "pod/apache-v1 created\n"
    assert err == (
        f'warning: {example}: pod "apache" differs from the file where apply cannot update it '
        "(spec: pod updates may not change fields other than spec.containers[*].image); "
        "left as it is: delete it and apply again to replace it\n"
    )
    code, out, _ = await cli(cluster, capsys, "get", "pod", "apache", "-o", "json")
    assert [c["name"] for c in json.loads(out)["spec"]["containers"]] == ["my-fedora-apache"]


async def test_get_coordinators_shows_the_sole_leader(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await cli(cluster, capsys, "get", "coordinators")
    header, row = out.strip().splitlines()
    assert code == 0 and header.split() == ["NAME", "ADDRESS", "ROLE", "LEADING", "FOR", "AGE"]
    assert row.split()[2] == "leader"
    code, out, _ = await cli(cluster, capsys, "get", "coordinators", "-o", "json")
    (member,) = json.loads(out)["items"]
    assert member["leader"] and member["leaderSince"]
