"""ReplicationController manifests: v1, v1beta3 and 2014's v1beta1, both directions."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.v1 import meta_pb2, pod_pb2, workloads_pb2
from coordinator import manifests
from coordinator.manifests.errors import ManifestError

# The shape of Kubernetes' 2014-2015 examples (examples/guestbook, api/examples/controller.json).
APACHE_V1BETA1: dict[str, Any] = {
    "kind": "ReplicationController",
    "id": "apache-controller",
    "apiVersion": "v1beta1",
    "labels": {"name": "apache"},
    "desiredState": {
        "replicas": 3,
        "replicaSelector": {"name": "apache"},
        "podTemplate": {
            "desiredState": {
                "manifest": {
                    "version": "v1beta1",
                    "id": "apache",
                    "containers": [
                        {
                            "name": "apache",
                            "image": "fedora/apache",
                            "ports": [{"containerPort": 80, "hostPort": 80}],
                        }
                    ],
                }
            },
            "labels": {"name": "apache"},
        },
    },
}

APACHE_V1: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ReplicationController",
    "metadata": {"name": "apache-controller", "labels": {"name": "apache"}},
    "spec": {
        "replicas": 3,
        "selector": {"name": "apache"},
        "template": {
            "metadata": {"labels": {"name": "apache"}},
            "spec": {
                "containers": [
                    {
                        "name": "apache",
                        "image": "fedora/apache",
                        "ports": [{"containerPort": 80, "hostPort": 80}],
                    }
                ]
            },
        },
    },
}


def rc(data: Any, source: str = "rc.json") -> workloads_pb2.ReplicationController:
    (obj,) = manifests.load_text(json.dumps(data), source)
    assert isinstance(obj, workloads_pb2.ReplicationController)
    return obj


def error(data: Any, source: str = "bad.json") -> str:
    with pytest.raises(ManifestError) as info:
        manifests.load_text(json.dumps(data), source)
    return str(info.value)


def template_container(data: dict[str, Any]) -> dict[str, Any]:
    if "desiredState" in data:
        return data["desiredState"]["podTemplate"]["desiredState"]["manifest"]["containers"][0]  # type: ignore[no-any-return]
    return data["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ decoding


def test_v1_controller() -> None:
    got = rc(APACHE_V1)
    assert got.metadata.name == "apache-controller"
    assert got.spec.replicas == 3 and dict(got.spec.selector) == {"name": "apache"}
    assert dict(got.spec.template.metadata.labels) == {"name": "apache"}
    c = got.spec.template.spec.containers[0]
    assert (c.name, c.image, c.ports[0].host_port) == ("apache", "fedora/apache", 80)


def test_v1beta1_controller_is_the_same_object() -> None:
    assert rc(APACHE_V1BETA1) == rc(APACHE_V1)


def test_v1beta1_template_takes_node_selector_annotations_and_host() -> None:
    data = copy.deepcopy(APACHE_V1BETA1)
    template = data["desiredState"]["podTemplate"]
    template |= {"nodeSelector": {"disk": "ssd"}, "annotations": {"team": "web"}}
    template["desiredState"]["host"] = "minion-1"
    template["desiredState"]["manifest"]["restartPolicy"] = {"always": {}}
    t = rc(data).spec.template
    assert dict(t.spec.node_selector) == {"disk": "ssd"} and dict(t.metadata.annotations) == {"team": "web"}
    assert t.spec.node_name == "minion-1"
    assert t.spec.restart_policy == pod_pb2.RESTART_POLICY_ALWAYS


def test_a_2014_file_without_kind_or_api_version() -> None:
    # As in 2014 tutorials: no kind, and a manifest id that names nothing (pods get generated names).
    data = copy.deepcopy(APACHE_V1BETA1)
    del data["kind"], data["apiVersion"]
    data["desiredState"]["podTemplate"]["desiredState"]["manifest"]["id"] = "redisController"
    assert rc(data) == rc(APACHE_V1)


def test_v1beta3_reads_the_template_host_field() -> None:
    data = copy.deepcopy(APACHE_V1)
    data["apiVersion"] = "v1beta3"
    data["spec"]["template"]["spec"]["host"] = "minion-1"
    assert rc(data).spec.template.spec.node_name == "minion-1"


def test_replicas_zero_is_kept_and_absent_means_unset() -> None:
    data = copy.deepcopy(APACHE_V1)
    data["spec"]["replicas"] = 0
    assert rc(data).spec.HasField("replicas") and rc(data).spec.replicas == 0
    del data["spec"]["replicas"]
    assert not rc(data).spec.HasField("replicas")  # the server makes it 1


def test_selector_and_labels_may_come_from_the_template() -> None:
    data = copy.deepcopy(APACHE_V1)
    del data["spec"]["selector"], data["metadata"]["labels"]
    got = rc(data)
    assert not got.spec.selector  # as written; validation defaults a copy
    assert got.spec.template.metadata.labels["name"] == "apache"


# ------------------------------------------------------------------ errors


def test_selector_must_match_the_template_labels() -> None:
    data = copy.deepcopy(APACHE_V1)
    data["spec"]["selector"] = {"name": "web"}
    assert error(data) == (
        "bad.json: spec.template.metadata.labels: selector name=web does not match template labels name=apache"
    )
    data = copy.deepcopy(APACHE_V1BETA1)
    data["desiredState"]["replicaSelector"] = {"name": "web"}
    assert error(data) == (
        "bad.json: desiredState.podTemplate.labels: selector name=web does not match template labels name=apache"
    )


def test_template_errors_point_into_each_shape() -> None:
    for data, path in (
        (copy.deepcopy(APACHE_V1), "spec.template.spec.containers[0].image"),
        (copy.deepcopy(APACHE_V1BETA1), "desiredState.podTemplate.desiredState.manifest.containers[0].image"),
    ):
        template_container(data)["image"] = "Fedora/Apache"
        assert error(data) == f"bad.json: {path}: 'Fedora/Apache' is not a valid image reference"


def test_v1beta1_template_volume_errors_are_translated_in_the_message_too() -> None:
    data = copy.deepcopy(APACHE_V1BETA1)
    template_container(data)["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    prefix = "desiredState.podTemplate.desiredState.manifest"
    assert error(data) == (
        f"bad.json: {prefix}.containers[0].volumeMounts[0].name: volume 'data' is not declared in {prefix}.volumes"
    )


def test_template_pods_must_restart_always() -> None:
    data = copy.deepcopy(APACHE_V1)
    data["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    assert error(data) == (
        "bad.json: spec.template.spec.restartPolicy: must be Always for a replication controller's pods, "
        "got OnFailure"
    )
    data = copy.deepcopy(APACHE_V1BETA1)
    data["desiredState"]["podTemplate"]["desiredState"]["manifest"]["restartPolicy"] = {"never": {}}
    assert error(data).startswith("bad.json: desiredState.podTemplate.desiredState.manifest.restartPolicy: ")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["spec"].update(replicas=-1), "spec.replicas: must not be negative, got -1"),
        (lambda d: d["spec"].update(replicas="3"), 'spec.replicas: expected an integer, got "3"'),
        (lambda d: d["spec"].pop("template"), "spec.template: is required: it describes the pods to run"),
        (
            lambda d: d["spec"].pop("selector") and d["spec"]["template"]["metadata"].pop("labels"),
            "spec.selector: is required: set it, or give the template labels to select its pods by",
        ),
        (
            lambda d: d["spec"].update(selector={"matchLabels": {"name": "apache"}}),
            "spec.selector.matchLabels: a replication controller's selector is a plain map of labels "
            "(name: apache); matchLabels is for ReplicaSets and Deployments",
        ),
        (
            lambda d: d["spec"].update(templateRef={"name": "t"}),
            "spec.templateRef: Atoll does not support this Kubernetes field; write the template itself",
        ),
        (
            lambda d: d["spec"]["template"].update(metdata={}),
            'spec.template.metdata: unknown field; did you mean "metadata"?',
        ),
        (
            lambda d: d["spec"]["template"]["spec"].update(hostNetwork=True),
            "spec.template.spec.hostNetwork: Atoll does not support this Kubernetes field; "
            "publish container ports with hostPort instead",
        ),
        (
            lambda d: d["metadata"].update(name="Apache"),
            "metadata.name: 'Apache' must be a DNS-1123 subdomain",
        ),
    ],
)
def test_v1_errors(change: Any, expected: str) -> None:
    data = copy.deepcopy(APACHE_V1)
    change(data)
    assert error(data).startswith(f"bad.json: {expected}")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["desiredState"].update(replicas=-2),
            "desiredState.replicas: must not be negative, got -2",
        ),
        (
            lambda d: d["desiredState"].update(replicaSelectr={}),
            'desiredState.replicaSelectr: unknown field; did you mean "replicaSelector"?',
        ),
        (
            lambda d: d["desiredState"]["podTemplate"].update(serviceAccount="x"),
            "desiredState.podTemplate.serviceAccount: Atoll does not support this Kubernetes field",
        ),
        (
            lambda d: d["desiredState"]["podTemplate"]["labels"].update(tier="a b"),
            "desiredState.podTemplate.labels[tier]: invalid label value 'a b'",
        ),
        (
            lambda d: d["desiredState"]["podTemplate"]["desiredState"].update(host="Minion_1"),
            "desiredState.podTemplate.desiredState.host: 'Minion_1' must be a DNS-1123 subdomain",
        ),
        (lambda d: d.update(id="Apache"), "id: 'Apache' must be a DNS-1123 subdomain"),
        (
            lambda d: d["desiredState"]["podTemplate"]["desiredState"]["manifest"]["containers"][0].update(
                cpu="500m"
            ),
            "desiredState.podTemplate.desiredState.manifest.containers[0].cpu: expected an integer number "
            "of thousandths of a core",
        ),
    ],
)
def test_v1beta1_errors(change: Any, expected: str) -> None:
    data = copy.deepcopy(APACHE_V1BETA1)
    change(data)
    assert error(data).startswith(f"bad.json: {expected}")


def test_v1beta3_node_name_errors_name_host() -> None:
    data = copy.deepcopy(APACHE_V1)
    data["apiVersion"] = "v1beta3"
    data["spec"]["template"]["spec"]["host"] = "Minion_1"
    assert error(data).startswith(
        "bad.json: spec.template.spec.host: 'Minion_1' must be a DNS-1123 subdomain"
    )


# ------------------------------------------------------------------ encoding


def test_output_looks_like_kubectl() -> None:
    got = rc(APACHE_V1)
    got.metadata.namespace = "default"
    got.status.CopyFrom(workloads_pb2.ReplicationControllerStatus(replicas=2, ready_replicas=1))
    out = manifests.to_dict(got)
    assert out == {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "apache-controller", "namespace": "default", "labels": {"name": "apache"}},
        "spec": {
            "replicas": 3,
            "selector": {"name": "apache"},
            "template": {
                "metadata": {"labels": {"name": "apache"}},
                "spec": {
                    "containers": [
                        {
                            "name": "apache",
                            "image": "fedora/apache",
                            "ports": [{"containerPort": 80, "hostPort": 80}],
                        }
                    ]
                },
            },
        },
        "status": {"replicas": 2, "readyReplicas": 1},
    }
    expected = rc(APACHE_V1)
    expected.metadata.namespace = "default"
    assert manifests.load_data(out) == [expected]  # status is dropped on input


def test_v1beta1_input_prints_as_v1() -> None:
    assert manifests.to_dict(rc(APACHE_V1BETA1)) == manifests.to_dict(rc(APACHE_V1))


# ------------------------------------------------------------------ properties

TEXT = st.text(max_size=8)
MAPS = st.dictionaries(TEXT, TEXT, max_size=2)


@st.composite
def controllers(draw: st.DrawFn) -> workloads_pb2.ReplicationController:
    out = workloads_pb2.ReplicationController(
        metadata=meta_pb2.ObjectMeta(name=draw(TEXT), namespace=draw(TEXT), labels=draw(MAPS)),
        spec=workloads_pb2.ReplicationControllerSpec(selector=draw(MAPS)),
    )
    if draw(st.booleans()):
        out.spec.replicas = draw(st.integers(-(2**31), 2**31 - 1))
    if draw(st.booleans()):
        template = out.spec.template
        template.SetInParent()
        if draw(st.booleans()):
            template.metadata.CopyFrom(meta_pb2.ObjectMeta(labels=draw(MAPS), annotations=draw(MAPS)))
            template.metadata.SetInParent()
        if draw(st.booleans()):
            containers = draw(
                st.lists(
                    st.builds(pod_pb2.Container, name=TEXT, image=TEXT, args=st.lists(TEXT, max_size=2)),
                    max_size=2,
                )
            )
            template.spec.CopyFrom(pod_pb2.PodSpec(containers=containers, node_selector=draw(MAPS)))
            template.spec.SetInParent()
    return out


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(controllers())
def test_decode_of_encode_is_identity(controller: workloads_pb2.ReplicationController) -> None:
    data = manifests.to_dict(controller)
    assert manifests.load_data(data, validate=False) == [controller]
    assert manifests.load_data(json.loads(json.dumps(data)), validate=False) == [controller]
