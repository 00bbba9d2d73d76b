"""The real kubectl v1.37 and the Python `kubernetes` client against a coordinator process and real
agents on the test bed (two workers with dockerd): one cluster for the whole module.

The coordinator serves --kube-listen inside the master's namespace; a port
forward brings it to the test's loopback, which its serving certificate
names. Pods really run, so `wait --for=condition=Ready` and `logs -f` see
what the containers do.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from atoll import kinds
from tests.integration.cluster import Cluster, start_cluster_on
from tests.integration.daemons import cli, eventually
from tests.integration.testbed import TestBed

pytestmark = pytest.mark.asyncio(loop_scope="module")

KUBECTL = shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent)) or "kubectl"
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
KUBE_PORT = 6445

COUNTER = """apiVersion: v1
kind: Pod
metadata:
  name: counter
  labels: {app: counter}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: count
    image: atoll/busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]
"""


class Kubectl:
    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}

    async def run(
        self, *args: str, stdin: str = "", check: bool = True, timeout: float = 90
    ) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL,
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
        code = proc.returncode or 0
        if check and code != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {code}: {err.decode()}")
        return code, out.decode(), err.decode()

    async def out(self, *args: str, stdin: str = "") -> str:
        return (await self.run(*args, stdin=stdin))[1]


class Fixture:
    def __init__(self, cluster: Cluster, admin: Kubectl, tmp: pathlib.Path, server: str) -> None:
        self.cluster = cluster
        self.admin = admin
        self.tmp = tmp
        self.server = server

    def kubeconfig(self, user: str, role: str) -> Kubectl:
        home = self.tmp / user
        home.mkdir(exist_ok=True)
        path = home / "kubeconfig"
        res = cli(
            self.cluster.coordinator.server,
            "config", "kubeconfig", "--user", user, "--role", role, "--server", self.server, "--file", str(path),
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        return Kubectl(path)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    with TestBed(2, keep_logs=tmp_path_factory.mktemp("kubectl-bed")) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kube(bed: TestBed, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fixture]:
    cluster = await start_cluster_on(bed, 2, coordinator_args=["--kube-listen", f"0.0.0.0:{KUBE_PORT}"])
    try:
        forward = cluster.master.forward(KUBE_PORT)
        server = f"https://127.0.0.1:{forward.port}"
        made = Fixture(
            cluster, Kubectl(pathlib.Path("/nonexistent")), tmp_path_factory.mktemp("kubectl"), server
        )
        made.admin = made.kubeconfig("kube-admin", "admin")
        yield made
    finally:
        await cluster.close()


async def test_nodes_of_real_agents_are_ready(kube: Fixture) -> None:
    async def both_ready() -> bool:
        out = await kube.admin.out("get", "nodes", "-o", "wide")
        return out.count(" Ready ") == 2

    await eventually(both_ready, timeout=60, what="two Ready nodes in kubectl get nodes")
    internal = await kube.admin.out("get", "nodes", "-o", "jsonpath={.items[*].status.addresses[0].address}")
    assert sorted(internal.split()) == sorted(h.ip for h in kube.cluster.workers)


async def test_apply_a_directory_wait_ready_and_see_it_everywhere(kube: Fixture) -> None:
    manifests = kube.tmp / "manifests"
    manifests.mkdir()
    for name in ("apache-v1.yaml", "guestbook-v1.yaml"):
        if (EXAMPLES / name).exists():
            shutil.copy(EXAMPLES / name, manifests / name)
    applied = await kube.admin.out("apply", "-f", str(manifests))
    assert "replicationcontroller/apache-v1 created" in applied
    await kube.admin.out("get", "pods", "-l", "app=apache-v1", "-o", "name")

    async def pods_named() -> list[str]:
        return (await kube.admin.out("get", "pods", "-l", "app=apache-v1", "-o", "name")).split()

    names = await eventually(pods_named, timeout=60, what="apache-v1 pods")
    await kube.admin.out("wait", "--for=condition=Ready", *names, "--timeout=120s")
    wide = await kube.admin.out("get", "nodes,pods,svc,rc", "-o", "wide", "-A")
    assert "replicationcontroller/apache-v1" in wide and "service/apache-v1" in wide
    # The same objects through the coordinator CLI (gRPC) and its gRPC client.
    res = cli(kube.cluster.coordinator.server, "get", "rc", "apache-v1", "-o", "json")
    assert res.returncode == 0 and json.loads(res.stdout)["metadata"]["name"] == "apache-v1"
    rc = await kube.cluster.client.get(kinds.by_name("ReplicationController"), "default", "apache-v1")
    via_kubectl = json.loads(await kube.admin.out("get", "rc", "apache-v1", "-o", "json"))
    assert rc.metadata.uid == via_kubectl["metadata"]["uid"]  # type: ignore[attr-defined]
    await kube.admin.out("scale", "rc", "apache-v1", "--replicas=1")

    async def one_left() -> bool:
        return len(await pods_named()) == 1

    await eventually(one_left, timeout=60, what="scaled down to one pod")
    await kube.admin.out("delete", "-f", str(manifests))


async def test_logs_follow_streams_what_the_container_prints(kube: Fixture) -> None:
    await kube.admin.out("create", "-f", "-", stdin=COUNTER)
    await kube.admin.out("wait", "--for=condition=Ready", "pod/counter", "--timeout=120s")
    tail = await kube.admin.out("logs", "counter", "--tail=1")
    assert tail.startswith("line ")
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "logs", "-f", "counter", "-c", "count", stdout=subprocess.PIPE, env=kube.admin.env
    )
    assert proc.stdout is not None
    try:
        first = int((await asyncio.wait_for(proc.stdout.readline(), 30)).split()[1])
        deadline = time.monotonic() + 30
        later = first
        while later < first + 3 and time.monotonic() < deadline:
            later = int((await asyncio.wait_for(proc.stdout.readline(), 30)).split()[1])
        assert later >= first + 3  # lines written after the request arrive while it is open
    finally:
        proc.terminate()
        await proc.wait()
    await kube.admin.out("delete", "pod", "counter")


async def test_a_viewer_is_refused_writes(kube: Fixture) -> None:
    viewer = kube.kubeconfig("kube-viewer", "viewer")
    code, _, _ = await viewer.run("get", "pods", "-A")
    assert code == 0
    code, _, err = await viewer.run("create", "-f", "-", stdin=COUNTER, check=False)
    assert code != 0 and "Forbidden" in err and "(viewer)" in err


async def test_the_python_client_lists_creates_and_watches(kube: Fixture) -> None:
    from kubernetes import client, config, watch

    api = client.CoreV1Api(config.new_client_from_config(str(kube.admin.kubeconfig)))

    def scenario() -> list[str]:
        body = client.V1Pod(
            metadata=client.V1ObjectMeta(name="py-made", labels={"app": "py"}),
            spec=client.V1PodSpec(
                containers=[client.V1Container(name="c", image="atoll/busybox", command=["sleep", "600"])]
            ),
        )
        created = api.create_namespaced_pod("default", body)
        assert created.metadata.uid
        listed = api.list_namespaced_pod("default", label_selector="app=py")
        assert [p.metadata.name for p in listed.items] == ["py-made"]
        seen: list[str] = []
        w = watch.Watch()
        for event in w.stream(
            api.list_namespaced_pod, "default", label_selector="app=py",
            resource_version=listed.metadata.resource_version, timeout_seconds=60,
        ):  # fmt: skip
            seen.append(event["type"])
            if (
                event["type"] == "MODIFIED"
                and event["object"].status.phase == "Running"
                and "DELETED" not in seen
            ):
                api.delete_namespaced_pod("py-made", "default")
            if event["type"] == "DELETED":
                w.stop()
        try:
            api.read_namespaced_pod("py-made", "default")
        except client.ApiException as exc:
            assert exc.status == 404
        return seen

    seen = await asyncio.to_thread(scenario)
    assert "MODIFIED" in seen and seen[-1] == "DELETED"
