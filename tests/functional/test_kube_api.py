"""The Kubernetes REST API in process: real HTTPS on port 0, the real SQLite store, aiohttp as the client.

Each request is what kubectl or a client library sends; the answers are
checked as they read them (objects, lists, Tables, Status), and objects
written over REST are checked through the gRPC client too.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from atoll import kinds, pki
from atoll.v1 import pod_pb2
from coordinator.auth import tokens
from tests.functional.harness import Cluster, eventually

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


def pod(name: str, labels: dict[str, str] | None = None, image: str = "nginx") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]},
    }


class Kube:
    """An HTTPS client of the facade with one user's credentials."""

    def __init__(self, base: str, context: ssl.SSLContext, token: str = "") -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base = base
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), headers=headers)

    async def call(
        self, method: str, path: str, body: Any = None, *, accept: str = "application/json", **headers: str
    ) -> tuple[int, Any]:
        data = json.dumps(body) if body is not None else None
        hdrs = {"Accept": accept, "Content-Type": "application/json", **headers}
        async with self.session.request(method, self.base + path, data=data, headers=hdrs) as r:
            text = await r.text()
            return r.status, json.loads(text) if text.startswith("{") else text

    async def close(self) -> None:
        await self.session.close()


def _context(
    tmp: pathlib.Path, ca: bytes, cert: bytes = b"", key: bytes = b"", name: str = "u"
) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.decode())
    if cert:
        (tmp / f"{name}.crt").write_bytes(cert)
        (tmp / f"{name}.key").write_bytes(key)
        context.load_cert_chain(tmp / f"{name}.crt", tmp / f"{name}.key")
    return context


@pytest.fixture
async def kube(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Cluster, Kube]]:
    c = await Cluster(tmp_path, kube_listen="127.0.0.1:0", audit_log=str(tmp_path / "audit.jsonl")).start()
    assert c.admin is not None and c.coordinator.kube is not None
    admin = Kube(
        f"https://127.0.0.1:{c.coordinator.kube.port}",
        _context(tmp_path, c.admin.ca, c.admin.cert, c.admin.key),
    )
    try:
        yield c, admin
    finally:
        await admin.close()
        await c.stop()


async def test_discovery_answers_what_kubectl_asks_first(kube: tuple[Cluster, Kube]) -> None:
    _, k = kube
    code, version = await k.call("GET", "/version")
    assert code == 200 and version["major"] == "1"
    code, aggregated = await k.call("GET", "/api", accept=AGGREGATED)
    assert aggregated["kind"] == "APIGroupDiscoveryList"
    resources = {r["resource"]: r for r in aggregated["items"][0]["versions"][0]["resources"]}
    assert {
        "pods",
        "nodes",
        "services",
        "replicationcontrollers",
        "endpoints",
        "events",
        "namespaces",
    } <= set(resources)
    assert resources["pods"]["scope"] == "Namespaced" and "po" in resources["pods"]["shortNames"]
    code, legacy = await k.call("GET", "/api")
    assert legacy["kind"] == "APIVersions" and legacy["versions"] == ["v1"]
    code, groups = await k.call("GET", "/apis")
    assert groups["kind"] == "APIGroupList"
    code, v1 = await k.call("GET", "/api/v1")
    names = {r["name"] for r in v1["resources"]}
    assert {"pods", "pods/log", "replicationcontrollers/scale"} <= names
    code, root = await k.call("GET", "/openapi/v3")
    assert code == 200 and "api/v1" in root["paths"]


async def test_create_get_list_delete_and_the_same_object_over_grpc(kube: tuple[Cluster, Kube]) -> None:
    c, k = kube
    code, created = await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
    assert code == 201, created
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert c.client is not None
    same = await c.client.get(kinds.by_name("Pod"), "default", "web-1")
    assert isinstance(same, pod_pb2.Pod) and same.metadata.uid == created["metadata"]["uid"]
    code, got = await k.call("GET", "/api/v1/namespaces/default/pods/web-1")
    assert code == 200 and got["spec"]["containers"][0]["image"] == "nginx"
    await k.call("POST", "/api/v1/namespaces/default/pods", pod("db-1", {"app": "db"}))
    code, listed = await k.call("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
    assert listed["kind"] == "PodList" and [i["metadata"]["name"] for i in listed["items"]] == ["web-1"]
    code, by_name = await k.call("GET", "/api/v1/pods?fieldSelector=metadata.name%3Ddb-1")
    assert [i["metadata"]["name"] for i in by_name["items"]] == ["db-1"]
    code, page = await k.call("GET", "/api/v1/namespaces/default/pods?limit=1")
    assert len(page["items"]) == 1 and page["metadata"]["continue"]
    code, rest = await k.call(
        "GET", f"/api/v1/namespaces/default/pods?limit=1&continue={page['metadata']['continue']}"
    )
    assert [i["metadata"]["name"] for i in page["items"] + rest["items"]] == ["db-1", "web-1"]
    code, deleted = await k.call(
        "DELETE", "/api/v1/namespaces/default/pods/web-1", {"propagationPolicy": "Background"}
    )
    assert code == 200 and deleted["metadata"]["name"] == "web-1"
    code, gone = await k.call("GET", "/api/v1/namespaces/default/pods/web-1")
    assert code == 404 and gone["reason"] == "NotFound" and gone["details"]["name"] == "web-1"


async def test_errors_are_status_objects_with_reason_code_and_causes(kube: tuple[Cluster, Kube]) -> None:
    _, k = kube
    await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
    code, again = await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
    assert (code, again["kind"], again["reason"], again["code"]) == (409, "Status", "AlreadyExists", 409)
    bad = pod("bad")
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = 99999
    code, invalid = await k.call("POST", "/api/v1/namespaces/default/pods", bad)
    assert code == 422 and invalid["reason"] == "Invalid"
    assert invalid["details"]["causes"][0]["field"] == "spec.containers[0].ports[0].containerPort"
    assert invalid["message"].startswith('Pod "bad" is invalid: ')
    code, stale = await k.call("GET", "/api/v1/namespaces/default/pods/web-1")
    stale["metadata"]["resourceVersion"] = "1"
    code, conflict = await k.call("PUT", "/api/v1/namespaces/default/pods/web-1", stale)
    assert code == 409 and conflict["reason"] == "Conflict"
    code, streaming = await k.call("POST", "/api/v1/namespaces/default/pods/web-1/exec")
    assert code == 405 and streaming["reason"] == "MethodNotAllowed"
    code, unknown = await k.call("GET", "/api/v1/widgets")
    assert code == 404 and unknown["kind"] == "Status"
    anonymous = Kube(k.base, ssl.create_default_context(cadata=_ca(kube).decode()))
    try:
        code, refused = await anonymous.call("GET", "/api/v1/pods")
    finally:
        await anonymous.close()
    assert code == 401 and refused["reason"] == "Unauthorized"


def _ca(kube: tuple[Cluster, Kube]) -> bytes:
    assert kube[0].admin is not None
    return kube[0].admin.ca


async def test_a_viewer_reads_but_is_refused_writes_and_the_audit_log_says_so(
    kube: tuple[Cluster, Kube], tmp_path: pathlib.Path
) -> None:
    c, k = kube
    assert c.client is not None
    key = pki.new_key()
    signed = await c.client.sign_user_certificate("vera", "viewer", pki.build_csr(key, "vera"), 0.0)
    viewer = Kube(
        k.base, _context(tmp_path, signed.ca_certificate, signed.certificate, pki.key_pem(key), "vera")
    )
    token_id, secret = tokens.generate()
    await c.client.create(
        tokens.new_token(token_id, secret, ttl=600, usages=(tokens.USAGE_AUTH,), user="otto", role="operator")
    )
    operator = Kube(
        k.base, ssl.create_default_context(cadata=_ca(kube).decode()), token=f"{token_id}.{secret}"
    )
    try:
        code, _ = await viewer.call("GET", "/api/v1/pods")
        assert code == 200
        code, refused = await viewer.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
        assert code == 403 and refused["reason"] == "Forbidden" and "vera (viewer)" in refused["message"]
        code, made = await operator.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
        assert code == 201, made
        code, refused = await operator.call("DELETE", "/api/v1/nodes/some-node")
        assert code == 403
    finally:
        await viewer.close()
        await operator.close()
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(e["user"] == "vera" and e["result"] == "PERMISSION_DENIED" for e in audit)
    assert any(e["user"] == "otto" and e["method"].endswith("/Create") and e["result"] == "OK" for e in audit)


async def test_tables_have_kubectl_columns(kube: tuple[Cluster, Kube]) -> None:
    _, k = kube
    await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
    _code, table = await k.call("GET", "/api/v1/namespaces/default/pods", accept=TABLE)
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert table["rows"][0]["cells"][:2] == ["web-1", "0/1"]
    assert table["rows"][0]["object"]["metadata"]["name"] == "web-1"


async def test_patch_scale_and_update(kube: tuple[Cluster, Kube]) -> None:
    _c, k = kube
    rc = {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"app": "web"},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod("x")["spec"]},
        },
    }
    code, _ = await k.call("POST", "/api/v1/namespaces/default/replicationcontrollers", rc)
    assert code == 201
    path = "/api/v1/namespaces/default/replicationcontrollers/web"
    merge = {"Content-Type": "application/merge-patch+json"}
    code, patched = await k.call("PATCH", path, {"metadata": {"labels": {"tier": "front"}}}, **merge)
    assert code == 200 and patched["metadata"]["labels"]["tier"] == "front"
    strategic = {"Content-Type": "application/strategic-merge-patch+json"}
    body = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}}
    code, patched = await k.call("PATCH", path, body, **strategic)
    container = patched["spec"]["template"]["spec"]["containers"][0]
    assert code == 200 and container["image"] == "nginx:2" and container["ports"][0]["containerPort"] == 80
    code, scaled = await k.call("PATCH", f"{path}/scale", {"spec": {"replicas": 3}}, **merge)
    assert code == 200, scaled
    assert scaled["kind"] == "Scale" and scaled["spec"]["replicas"] == 3
    code, scale = await k.call("GET", f"{path}/scale")
    assert scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "app=web"
    code, _refused = await k.call(
        "PATCH", path, [{"op": "add"}], **{"Content-Type": "application/json-patch+json"}
    )
    assert code == 415
    code, current = await k.call("GET", path)
    current["spec"]["replicas"] = 0
    del current["metadata"]["resourceVersion"]  # unconditional: the controller writes its status meanwhile
    code, updated = await k.call("PUT", path, current)
    assert code == 200 and updated["spec"]["replicas"] == 0
    code, _ = await k.call("DELETE", path, {"propagationPolicy": "Orphan"})
    assert code == 200


async def test_watch_streams_events_after_a_revision(kube: tuple[Cluster, Kube]) -> None:
    _, k = kube
    code, created = await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
    revision = created["metadata"]["resourceVersion"]
    url = (
        f"{k.base}/api/v1/namespaces/default/pods?watch=1&resourceVersion={revision}&allowWatchBookmarks=true"
    )
    events: list[dict[str, Any]] = []

    async def follow() -> None:
        async with k.session.get(url) as response:
            async for line in response.content:
                events.append(json.loads(line))

    task = asyncio.create_task(follow())
    try:
        await asyncio.sleep(0)
        await k.call(
            "PATCH",
            "/api/v1/namespaces/default/pods/web-1",
            {"metadata": {"labels": {"x": "y"}}},
            **{"Content-Type": "application/merge-patch+json"},
        )
        await k.call("DELETE", "/api/v1/namespaces/default/pods/web-1")

        async def both() -> bool:
            types = [e["type"] for e in events if e["type"] != "BOOKMARK"]
            return "MODIFIED" in types and types[-1:] == ["DELETED"]

        await eventually(both, what="MODIFIED and DELETED")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    code, _gone = await k.call("GET", "/api/v1/namespaces/default/pods?watch=1&resourceVersion=x")
    assert code == 422


async def _watch_lines(k: Kube, query: str, until: str) -> list[dict[str, Any]]:
    """The events of a watch of default's pods, up to the first of type `until`."""
    events: list[dict[str, Any]] = []
    async with k.session.get(f"{k.base}/api/v1/namespaces/default/pods?watch=1&{query}") as response:
        assert response.status == 200
        async for line in response.content:
            events.append(json.loads(line))
            if events[-1]["type"] == until:
                break
    return events


async def test_watch_bookmarks_initial_events_and_gone(kube: tuple[Cluster, Kube]) -> None:
    c, k = kube
    assert c.coordinator.kube is not None and c.coordinator.store is not None
    c.coordinator.kube.api.streams.bookmark_interval = 0.1
    code, created = await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
    revision = int(created["metadata"]["resourceVersion"])
    quiet = await asyncio.wait_for(
        _watch_lines(k, f"resourceVersion={revision}&allowWatchBookmarks=true", "BOOKMARK"), 10
    )
    assert int(quiet[-1]["object"]["metadata"]["resourceVersion"]) >= revision
    assert {e["type"] for e in quiet[:-1]} <= {"MODIFIED"}  # the scheduler's writes, if any
    initial = await asyncio.wait_for(
        _watch_lines(
            k, "sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan", "BOOKMARK"
        ),
        10,
    )
    assert [e["type"] for e in initial] == ["ADDED", "BOOKMARK"]
    assert initial[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-2"))
    await c.coordinator.store.compact(c.coordinator.store.revision)
    code, gone = await k.call("GET", f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={revision}")
    assert code == 410 and gone["reason"] == "Expired"


async def test_tables_in_a_watch_name_their_columns_once(kube: tuple[Cluster, Kube]) -> None:
    c, k = kube
    assert c.coordinator.store is not None
    await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-1"))
    await k.call("POST", "/api/v1/namespaces/default/pods", pod("web-2"))
    events: list[dict[str, Any]] = []
    url = f"{k.base}/api/v1/namespaces/default/pods?watch=1"
    async with k.session.get(url, headers={"Accept": TABLE}) as response:
        async for line in response.content:
            events.append(json.loads(line))
            if len(events) == 2:
                break
    assert [e["object"]["kind"] for e in events] == ["Table", "Table"]
    assert events[0]["object"]["columnDefinitions"] and not events[1]["object"]["columnDefinitions"]
    assert {e["object"]["rows"][0]["cells"][0] for e in events} == {"web-1", "web-2"}


async def test_rest_and_grpc_calls_share_the_per_client_rate_limit(tmp_path: pathlib.Path) -> None:
    c = await Cluster(tmp_path, kube_listen="127.0.0.1:0", api_rate=0.001, api_burst=6).start()
    try:
        assert c.admin is not None and c.coordinator.kube is not None and c.client is not None
        admin = Kube(
            f"https://127.0.0.1:{c.coordinator.kube.port}",
            _context(tmp_path, c.admin.ca, c.admin.cert, c.admin.key),
        )
        try:
            codes = [(await admin.call("GET", "/api/v1/pods"))[0] for _ in range(6)]
            _, refused = await admin.call("GET", "/api/v1/pods")
        finally:
            await admin.close()
        # The harness's own gRPC call (a join token) took one of the burst of 6.
        assert codes[:5] == [200] * 5 and codes[5] == 429
        assert refused["reason"] == "TooManyRequests" and "rate limit" in refused["message"]
    finally:
        await c.stop()


async def test_a_watch_by_field_sees_an_object_leave_the_selection_as_deleted(
    kube: tuple[Cluster, Kube],
) -> None:
    c, k = kube
    node = await c.add_node("node-1", images=("nginx",))
    job = pod("job")
    job["spec"]["restartPolicy"] = "Never"
    job["spec"]["containers"][0]["name"] = "main"
    await k.call("POST", "/api/v1/namespaces/default/pods", job)
    events: list[dict[str, Any]] = []

    async def follow() -> None:
        url = f"{k.base}/api/v1/namespaces/default/pods?watch=1&fieldSelector=status.phase%3DRunning"
        async with k.session.get(url) as response:
            async for line in response.content:
                events.append(json.loads(line))

    task = asyncio.create_task(follow())
    try:

        async def running() -> bool:
            return any(e["object"]["status"].get("phase") == "Running" for e in events)

        await eventually(running, what="the job Running")
        container = next(
            ct.id
            for ct in node.runtime.containers.values()
            if ct.labels.get("io.atoll.pod.name") == "job"
            and ct.labels.get("io.atoll.container.name") == "main"
        )
        node.runtime.exit(container, 0)

        async def left() -> bool:
            return bool(events) and events[-1]["type"] == "DELETED"

        await eventually(left, what="DELETED once the job stops Running")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert events[-1]["object"]["status"]["phase"] == "Succeeded"
    code, still = await k.call("GET", "/api/v1/namespaces/default/pods/job")
    assert code == 200 and still["status"]["phase"] == "Succeeded"
