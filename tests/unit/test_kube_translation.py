"""The Kubernetes API's translation pieces: selectors, patches, tables, Status, discovery, kubeconfig."""

from __future__ import annotations

import base64

import pytest
import yaml

from atoll import errors
from atoll.v1 import pod_pb2
from coordinator.kube import discovery, kubeconfig, openapi, patch, selectors, status, tables
from coordinator.kube.handlers import parse_path


def _pod(name: str = "web", node: str = "", phase: int = pod_pb2.POD_PHASE_RUNNING) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, "default"
    p.spec.node_name = node
    p.status.phase = phase
    return p


def test_field_selectors_match_name_node_and_phase() -> None:
    sel = selectors.parse("metadata.name=web,spec.nodeName=node-1")
    assert sel.matches(_pod("web", "node-1"))
    assert not sel.matches(_pod("web", "node-2"))
    assert sel.name() == "web"
    assert selectors.parse("status.phase!=Running").matches(_pod(phase=pod_pb2.POD_PHASE_PENDING))
    assert not selectors.parse("status.phase==Running").matches(_pod(phase=pod_pb2.POD_PHASE_FAILED))
    assert selectors.parse("").empty


@pytest.mark.parametrize("text", ["spec.image=x", "metadata.name", "status.phase>Running"])
def test_field_selectors_refuse_what_they_do_not_know(text: str) -> None:
    with pytest.raises(errors.InvalidArgument) as err:
        selectors.parse(text)
    assert err.value.field == "fieldSelector"


def test_merge_patch_merges_maps_deletes_nulls_and_replaces_lists() -> None:
    current = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"ports": [{"port": 80}], "x": 1}}
    patched = patch.merge_patch(
        current, {"metadata": {"labels": {"b": None, "c": "3"}}, "spec": {"ports": []}}
    )
    assert patched == {"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"ports": [], "x": 1}}
    assert current["metadata"]["labels"] == {"a": "1", "b": "2"}  # the input is left alone


def test_strategic_merge_patch_merges_lists_by_their_keys() -> None:
    current = {
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1",
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"}],
                },
                {"name": "side", "image": "busybox"},
            ]
        }
    }
    body = {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
        "spec": {
            "containers": [
                {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]},
                {"name": "side", "$patch": "delete"},
            ]
        },
    }
    patched = patch.strategic_merge_patch(current, body)
    assert patched["spec"]["containers"] == [
        {
            "name": "web",
            "image": "nginx:2",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        }
    ]


def test_strategic_merge_patch_replaces_atomic_lists_and_honours_replace() -> None:
    current = {"spec": {"args": ["a", "b"], "selector": {"x": "1", "y": "2"}}}
    patched = patch.strategic_merge_patch(
        current, {"spec": {"args": ["c"], "selector": {"$patch": "replace", "z": "3"}}}
    )
    assert patched == {"spec": {"args": ["c"], "selector": {"z": "3"}}}


def test_patch_refuses_other_types() -> None:
    with pytest.raises(errors.Unimplemented):
        patch.apply("application/json-patch+json", {}, [])


def test_pod_table_rows_read_like_kubectl() -> None:
    obj = {
        "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "podIP": "10.1.2.3",
            "containerStatuses": [
                {"ready": True, "restartCount": 2, "state": {"running": {}}},
                {"ready": False, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            ],
        },
    }
    now = 1767225600 + 300  # five minutes after creation
    row = tables.row("pods", obj, now)
    assert row["cells"] == [
        "web",
        "1/2",
        "CrashLoopBackOff",
        3,
        "5m",
        "10.1.2.3",
        "node-1",
        "<none>",
        "<none>",
    ]
    table = tables.table("pods", [obj], resource_version="7", now=now)
    assert [c["priority"] for c in table["columnDefinitions"]] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert table["metadata"] == {"resourceVersion": "7"}


def test_service_and_rc_rows() -> None:
    svc = {
        "metadata": {"name": "web"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.254.0.9",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
            "selector": {"app": "web"},
        },
    }
    assert tables.row("services", svc, 0)["cells"][:5] == [
        "web",
        "NodePort",
        "10.254.0.9",
        "<none>",
        "80:30080/TCP",
    ]
    rc = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"app": "web"}},
        "status": {"replicas": 2},
    }
    assert tables.row("replicationcontrollers", rc, 0)["cells"][:4] == ["web", 3, 2, 0]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (119, "119s"), (150, "2m30s"), (3600, "60m"), (4 * 3600, "4h"), (3 * 86400, "3d")],
)
def test_human_durations(seconds: int, text: str) -> None:
    assert tables.human_duration(seconds) == text


def test_wants_table_only_when_asked_first() -> None:
    assert tables.wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert not tables.wants_table("application/json")
    assert not tables.wants_table("application/json, application/json;as=Table;v=v1;g=meta.k8s.io")


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (errors.NotFound('pods "x" not found'), 404, "NotFound"),
        (errors.AlreadyExists('pods "x" already exists'), 409, "AlreadyExists"),
        (errors.Conflict("modified"), 409, "Conflict"),
        (errors.PermissionDenied("no"), 403, "Forbidden"),
        (errors.Unauthenticated("who"), 401, "Unauthorized"),
        (errors.Gone("too old"), 410, "Expired"),
        (errors.Internal("oops"), 500, "InternalError"),
    ],
)
def test_errors_map_to_status_codes_and_reasons(error: errors.AtollError, code: int, reason: str) -> None:
    body = status.from_error(error, kind="pods", name="x")
    assert (body["kind"], body["status"], body["code"], body["reason"]) == ("Status", "Failure", code, reason)
    assert body["details"] == {"name": "x", "kind": "pods"}


def test_invalid_names_the_kind_object_and_field() -> None:
    body = status.from_error(
        errors.InvalidArgument("must be set", field="spec.containers[0].image"), kind="pods", name="web"
    )
    assert body["code"] == 422 and body["reason"] == "Invalid"
    assert body["message"] == 'Pod "web" is invalid: spec.containers[0].image: must be set'
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": "must be set", "field": "spec.containers[0].image"}
    ]


def test_paths_name_resource_namespace_name_and_subresource() -> None:
    t = parse_path("namespaces/prod/pods/web/log")
    assert (t.resource.plural, t.namespace, t.name, t.sub) == ("pods", "prod", "web", "log")
    t = parse_path("namespaces/prod")
    assert (t.resource.plural, t.namespace, t.name) == ("namespaces", "", "prod")
    t = parse_path("pods")
    assert (t.resource.plural, t.namespace, t.name) == ("pods", "", "")
    for bad in ("widgets", "namespaces/prod/nodes", "pods/web/frobnicate"):
        with pytest.raises(errors.NotFound):
            parse_path(bad)


def test_discovery_documents() -> None:
    assert (
        discovery.wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )
        == "v2"
    )
    assert discovery.wants_aggregated("application/json") == ""
    core = discovery.aggregated_core()
    rc = next(
        r for r in core["items"][0]["versions"][0]["resources"] if r["resource"] == "replicationcontrollers"
    )
    assert {s["subresource"] for s in rc["subresources"]} == {"scale", "status"}
    # kubectl leaves validation to the server when PATCH takes fieldValidation.
    patch_op = openapi.DOCUMENT["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch_op["x-kubernetes-group-version-kind"]["kind"] == "Pod"
    assert "fieldValidation" in [p["name"] for p in patch_op["parameters"]]


def test_kubeconfig_carries_the_ca_and_credentials() -> None:
    doc = yaml.safe_load(
        kubeconfig.dump(kubeconfig.build("https://10.0.0.1:6445", "ann", ca=b"CA", cert=b"C", key=b"K"))
    )
    assert doc["clusters"][0]["cluster"] == {
        "server": "https://10.0.0.1:6445",
        "certificate-authority-data": base64.b64encode(b"CA").decode(),
    }
    assert doc["users"][0]["user"]["client-certificate-data"] == base64.b64encode(b"C").decode()
    assert doc["current-context"] == "ann@atoll"
    assert kubeconfig.server_url("10.0.0.1") == "https://10.0.0.1:6445"
    assert kubeconfig.server_url("10.0.0.1:7000", secure=False) == "http://10.0.0.1:7000"
    assert kubeconfig.server_url("::1") == "https://[::1]:6445"


def test_the_encode_cache_reuses_an_object_version_but_never_a_node() -> None:
    from atoll.v1 import node_pb2
    from coordinator.kube.convert import EncodeCache

    cache = EncodeCache(size=4)
    p = _pod()
    p.metadata.resource_version = 7
    first = cache.to_json(p)
    assert cache.to_json(p) is first
    p.metadata.resource_version = 8
    p.metadata.labels["x"] = "y"
    assert cache.to_json(p)["metadata"]["labels"] == {"x": "y"}
    node = node_pb2.Node()
    node.metadata.name, node.metadata.resource_version = "n", 3
    assert cache.to_json(node) is not cache.to_json(node)
    for i in range(10):  # stays within its size
        p.metadata.resource_version = 100 + i
        cache.to_json(p)
    assert len(cache._entries) <= 4
