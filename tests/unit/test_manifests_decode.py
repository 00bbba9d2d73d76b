"""Documents -> atoll.v1 objects: the v1 and v1beta1 shapes, and the errors for what is wrong in them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from atoll import kinds
from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from coordinator import manifests
from coordinator.manifests import catalog
from coordinator.manifests.errors import ManifestError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FULL_V1 = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: frontend}
  annotations: {owner: "ops team"}
spec:
  nodeName: host-1
  nodeSelector: {disk: ssd}
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 10
  hostname: web-0
  volumes:
    - name: cache
      emptyDir: {medium: Memory, sizeLimit: 64Mi}
    - name: logs
      hostPath: {path: /var/log/web, type: DirectoryOrCreate}
    - name: scratch
  containers:
    - name: web
      image: registry.example.com:5000/shop/web:1.2
      command: [/usr/sbin/httpd]
      args: [-DFOREGROUND]
      workingDir: /srv
      imagePullPolicy: Always
      env:
        - {name: MODE, value: production}
        - {name: EMPTY}
      ports:
        - {name: http, containerPort: 80, hostPort: 8080, protocol: TCP, hostIP: 10.0.0.5}
        - {containerPort: 53, protocol: UDP}
      resources:
        requests: {cpu: 250m, memory: 64Mi, ephemeral-storage: 1G}
        limits: {cpu: "1", memory: 134217728, ephemeral-storage: 2Gi}
      volumeMounts:
        - {name: cache, mountPath: /cache}
        - {name: logs, mountPath: /var/log/httpd, readOnly: true}
"""


def load(text: str, source: str = "t.yaml") -> list[Message]:
    return manifests.load_text(text, source)


def pod(text: str, source: str = "t.yaml") -> pod_pb2.Pod:
    (obj,) = load(text, source)
    assert isinstance(obj, pod_pb2.Pod)
    return obj


def error(data: Any, source: str = "bad.json") -> str:
    with pytest.raises(ManifestError) as info:
        manifests.load_text(json.dumps(data) if not isinstance(data, str) else data, source)
    message = str(info.value)
    assert "\n" not in message
    return message


def v1_pod(**container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "apache"},
        "spec": {"containers": [{"name": "apache", "image": "fedora/apache", **container}]},
    }


def legacy_pod(**container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1beta1",
        "kind": "Pod",
        "id": "apache",
        "labels": {"name": "apache"},
        "desiredState": {
            "manifest": {
                "version": "v1beta1",
                "id": "apache",
                "containers": [{"name": "apache", "image": "fedora/apache", **container}],
            }
        },
    }


# ------------------------------------------------------------------ v1


def test_v1_pod_every_field() -> None:
    p = pod(FULL_V1)
    assert p.metadata.name == "web" and p.metadata.namespace == "shop"
    assert dict(p.metadata.labels) == {"app": "web", "tier": "frontend"}
    assert dict(p.metadata.annotations) == {"owner": "ops team"}
    s = p.spec
    assert (s.node_name, dict(s.node_selector), s.hostname) == ("host-1", {"disk": "ssd"}, "web-0")
    assert s.restart_policy == pod_pb2.RESTART_POLICY_ON_FAILURE
    assert s.termination_grace_period_seconds == 10
    assert s.volumes[0].empty_dir == pod_pb2.EmptyDirVolumeSource(medium="Memory", size_limit_bytes=64 << 20)
    assert s.volumes[1].host_path == pod_pb2.HostPathVolumeSource(
        path="/var/log/web", type="DirectoryOrCreate"
    )
    assert s.volumes[2].WhichOneof("source") == "empty_dir"  # no source: emptyDir, as in Kubernetes
    c = s.containers[0]
    assert (list(c.command), list(c.args), c.working_dir) == (["/usr/sbin/httpd"], ["-DFOREGROUND"], "/srv")
    assert c.image_pull_policy == pod_pb2.PULL_POLICY_ALWAYS
    assert [(e.name, e.value) for e in c.env] == [("MODE", "production"), ("EMPTY", "")]
    assert c.ports[0] == pod_pb2.ContainerPort(
        name="http", container_port=80, host_port=8080, protocol=meta_pb2.PROTOCOL_TCP, host_ip="10.0.0.5"
    )
    assert c.ports[1].protocol == meta_pb2.PROTOCOL_UDP
    assert c.resources.requests == meta_pb2.ResourceList(
        cpu_millis=250, memory_bytes=64 << 20, ephemeral_storage_bytes=10**9
    )
    assert c.resources.limits == meta_pb2.ResourceList(
        cpu_millis=1000, memory_bytes=128 << 20, ephemeral_storage_bytes=2 << 30
    )
    assert [(m.name, m.mount_path, m.read_only) for m in c.volume_mounts] == [
        ("cache", "/cache", False),
        ("logs", "/var/log/httpd", True),
    ]


def test_objects_come_back_as_written_not_defaulted() -> None:
    # Defaults are the server's business; a namespace left out stays open to --namespace.
    p = pod(json.dumps(v1_pod()), "p.json")
    assert p.metadata.namespace == ""
    assert p.spec.restart_policy == pod_pb2.RESTART_POLICY_UNSPECIFIED
    assert not p.spec.HasField("termination_grace_period_seconds")


@pytest.mark.parametrize(
    ("written", "millis"),
    [("500m", 500), ("0.5", 500), ("2", 2000), (2, 2000), (0.25, 250), ("1e3", 1_000_000), ("0.0001", 1)],
)
def test_cpu_quantities(written: object, millis: int) -> None:
    p = pod(json.dumps(v1_pod(resources={"limits": {"cpu": written}})), "p.json")
    assert p.spec.containers[0].resources.limits.cpu_millis == millis


@pytest.mark.parametrize(
    ("written", "size"),
    [("128Mi", 128 << 20), ("1G", 10**9), ("1e3", 1000), (1000, 1000), ("1.5Gi", 3 << 29), ("1k", 1000)],
)
def test_memory_quantities(written: object, size: int) -> None:
    p = pod(json.dumps(v1_pod(resources={"limits": {"memory": written}})), "p.json")
    assert p.spec.containers[0].resources.limits.memory_bytes == size


def test_v1beta3_is_read_like_v1_with_its_host_field() -> None:
    data = v1_pod()
    data["apiVersion"] = "v1beta3"
    data["spec"]["host"] = "host-1"
    assert pod(json.dumps(data), "p.json").spec.node_name == "host-1"


def test_status_and_read_only_metadata_are_accepted_for_get_output() -> None:
    data = v1_pod()
    data["metadata"] |= {
        "uid": "0b7c",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2015-03-01T12:00:00Z",
        "selfLink": "/api/v1/namespaces/default/pods/apache",
    }
    data["status"] = {"phase": "Running", "podIP": "10.244.1.5"}
    p = pod(json.dumps(data), "p.json")
    assert (p.metadata.uid, p.metadata.resource_version, p.metadata.generation) == ("0b7c", 42, 3)
    assert p.metadata.creation_timestamp.seconds == 1425211200
    assert p.status == pod_pb2.PodStatus()


def test_unquoted_yaml_timestamps_are_understood() -> None:
    text = FULL_V1.replace("  name: web\n", "  name: web\n  creationTimestamp: 2015-03-01T12:00:00Z\n")
    assert pod(text).metadata.creation_timestamp.seconds == 1425211200


# ------------------------------------------------------------------ v1beta1


def test_the_apache_example() -> None:
    (p,) = manifests.load_file(EXAMPLES / "apache-pod.json")
    assert p == pod_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name="apache", labels={"name": "apache"}),
        spec=pod_pb2.PodSpec(
            containers=[
                pod_pb2.Container(
                    name="apache",
                    image="fedora/apache",
                    ports=[pod_pb2.ContainerPort(container_port=80, host_port=80)],
                )
            ]
        ),
    )


def test_the_v1_apache_example_can_run_beside_it() -> None:
    (old,) = manifests.load_file(EXAMPLES / "apache-pod.json")
    (new,) = manifests.load_file(EXAMPLES / "apache-pod-v1.yaml")
    assert isinstance(old, pod_pb2.Pod) and isinstance(new, pod_pb2.Pod)
    assert new.metadata.name == "apache-v1" and new.spec.containers[0].ports[0].host_port == 8080
    renamed = copy.deepcopy(new)
    renamed.metadata.name = "apache"
    renamed.spec.containers[0].ports[0].host_port = 80
    assert renamed == old


def test_v1beta1_mapping_follows_kubernetes_conversion() -> None:
    data = legacy_pod(
        entrypoint=["/usr/sbin/httpd"],
        command="-D FOREGROUND",
        cpu=500,
        memory=134217728,
        workingDir="/srv",
        imagePullPolicy="PullIfNotPresent",
        env=[{"key": "MODE", "value": "prod"}],
        ports=[{"containerPort": 80, "hostPort": 80, "protocol": "TCP"}],
        volumeMounts=[{"name": "data", "path": "/data", "readOnly": True, "mountType": "LOCAL"}],
    )
    manifest = data["desiredState"]["manifest"]
    manifest["restartPolicy"] = {"never": {}}
    manifest["volumes"] = [
        {"name": "data", "source": {"hostDir": {"path": "/srv/data"}}},
        {"name": "tmp", "source": {"emptyDir": {}}},
        {"name": "implied", "source": None},
    ]
    data["desiredState"]["host"] = "minion-1"
    data["nodeSelector"] = {"disk": "ssd"}
    p = pod(json.dumps(data), "old.json")
    c = p.spec.containers[0]
    assert (list(c.command), list(c.args)) == (["/usr/sbin/httpd"], ["-D", "FOREGROUND"])
    assert (c.resources.limits.cpu_millis, c.resources.limits.memory_bytes) == (500, 128 << 20)
    assert c.image_pull_policy == pod_pb2.PULL_POLICY_IF_NOT_PRESENT
    assert (c.env[0].name, c.env[0].value) == ("MODE", "prod")
    assert (c.volume_mounts[0].mount_path, c.volume_mounts[0].read_only) == ("/data", True)
    assert p.spec.restart_policy == pod_pb2.RESTART_POLICY_NEVER
    assert [v.WhichOneof("source") for v in p.spec.volumes] == ["host_path", "empty_dir", "empty_dir"]
    assert p.spec.volumes[0].host_path.path == "/srv/data"
    assert (p.spec.node_name, dict(p.spec.node_selector)) == ("minion-1", {"disk": "ssd"})


def test_2014_examples_without_kind_or_api_version() -> None:
    # Kubernetes' api/examples/pod.json, mid-2014: no kind, no apiVersion, no container name.
    data: dict[str, Any] = {
        "id": "php",
        "desiredState": {
            "manifest": {
                "containers": [
                    {"image": "dockerfile/nginx", "ports": [{"containerPort": 80, "hostPort": 8080}]}
                ]
            }
        },
        "labels": {"name": "foo"},
    }
    assert error(data) == "bad.json: desiredState.manifest.containers[0].name: is required"
    data["desiredState"]["manifest"]["containers"][0]["name"] = "php"
    assert pod(json.dumps(data), "php.json").metadata.name == "php"


def test_manifest_id_fills_in_a_missing_pod_id() -> None:
    data = legacy_pod()
    del data["id"]
    assert pod(json.dumps(data), "p.json").metadata.name == "apache"


def test_minion_and_node() -> None:
    minion = {"kind": "Minion", "apiVersion": "v1beta1", "id": "10.0.0.5", "labels": {"zone": "a"}}
    minion |= {"hostIP": "10.0.0.5", "resources": {"capacity": {"cpu": 1000}}, "externalID": "i-42"}
    (node,) = load(json.dumps(minion), "minion.json")
    assert node == node_pb2.Node(
        metadata=meta_pb2.ObjectMeta(name="10.0.0.5", labels={"zone": "a"}),
        spec=node_pb2.NodeSpec(provider_id="i-42"),
    )
    v1 = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {unschedulable: true, podCIDR: 10.244.1.0/24}\n"
    (node,) = load(v1)
    assert node.spec == node_pb2.NodeSpec(unschedulable=True, pod_cidr="10.244.1.0/24")  # type: ignore[attr-defined]


# ------------------------------------------------------------------ lists


def test_kind_list_and_typed_lists() -> None:
    items = [v1_pod(), legacy_pod()]
    items[1]["id"] = items[1]["desiredState"]["manifest"]["id"] = "apache2"
    pods = load(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), "l.json")
    assert [p.metadata.name for p in pods] == ["apache", "apache2"]  # type: ignore[attr-defined]
    bare = [{"metadata": {"name": "a"}, "spec": v1_pod()["spec"]}]
    pods = load(json.dumps({"apiVersion": "v1", "kind": "PodList", "items": bare}), "l.json")
    assert [p.metadata.name for p in pods] == ["a"]  # type: ignore[attr-defined]


def test_list_item_errors_name_the_item() -> None:
    items = [v1_pod(), v1_pod(ports=[{"containerPort": 0}])]
    assert error({"apiVersion": "v1", "kind": "List", "items": items}) == (
        "bad.json: items[1].spec.containers[0].ports[0].containerPort: must be between 1 and 65535, got 0"
    )


def test_multi_document_errors_name_the_document_line() -> None:
    doc = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a, image: nginx}]}\n"
    text = doc + "---\n" + doc.replace("image: nginx", "image: NGINX")
    assert (
        error(text, "two.yaml")
        == "two.yaml:6: spec.containers[0].image: 'NGINX' is not a valid image reference"
    )


# ------------------------------------------------------------------ errors


def test_wrong_types_say_what_was_expected_and_found() -> None:
    assert error(v1_pod(ports=[{"containerPort": "eighty"}])) == (
        'bad.json: spec.containers[0].ports[0].containerPort: expected an integer, got "eighty"'
    )
    assert error(v1_pod(command="httpd -DFOREGROUND")) == (
        'bad.json: spec.containers[0].command: expected a list, got "httpd -DFOREGROUND"'
    )
    assert error(v1_pod(ports=[{"containerPort": True}])) == (
        "bad.json: spec.containers[0].ports[0].containerPort: expected an integer, got true"
    )
    assert error(v1_pod(ports=[{"containerPort": 2**40}])) == (
        "bad.json: spec.containers[0].ports[0].containerPort: "
        "expected an integer between -2147483648 and 2147483647, got 1099511627776"
    )


def test_unquoted_yaml_scalars_that_are_not_strings() -> None:
    text = FULL_V1.replace("tier: frontend", "tier: frontend, enabled: yes, version: 2")
    assert error(text, "t.yaml") == (
        "t.yaml: metadata.labels[enabled]: expected a string, got true; "
        "YAML reads unquoted yes/no/on/off/true/false as booleans, so quote the value"
    )


def test_unknown_fields_suggest_the_known_name() -> None:
    assert error(v1_pod(imagePullPolcy="Always")) == (
        'bad.json: spec.containers[0].imagePullPolcy: unknown field; did you mean "imagePullPolicy"?'
    )
    assert (
        error(v1_pod(Ports=[])) == 'bad.json: spec.containers[0].Ports: unknown field; did you mean "ports"?'
    )
    assert error(v1_pod(flavour="vanilla")) == "bad.json: spec.containers[0].flavour: unknown field"
    data = legacy_pod(imge="x")
    assert (
        error(data)
        == 'bad.json: desiredState.manifest.containers[0].imge: unknown field; did you mean "image"?'
    )


def test_kubernetes_fields_atoll_lacks_are_named_as_such() -> None:
    assert error(v1_pod(livenessProbe={"httpGet": {"port": 80}})) == (
        "bad.json: spec.containers[0].livenessProbe: Atoll does not support this Kubernetes field"
    )
    data = v1_pod()
    data["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}}]
    assert error(data) == (
        "bad.json: spec.volumes[0].configMap: Atoll does not support this Kubernetes field; "
        "Atoll volumes are emptyDir or hostPath"
    )
    assert error(v1_pod(resources={"limits": {"gpu": 1}})) == (
        "bad.json: spec.containers[0].resources.limits[gpu]: "
        "unknown resource; Atoll knows cpu, memory, ephemeral-storage and DOMAIN/NAME extended resources"
    )


def test_extended_resources_are_whole_units_by_domain_name() -> None:
    (pod,) = manifests.load_data(v1_pod(resources={"requests": {"atoll.io/sriov_ens1f0": "2"}}), "ok.json")
    assert dict(pod.spec.containers[0].resources.requests.extended) == {"atoll.io/sriov_ens1f0": 2}  # type: ignore[attr-defined]
    assert manifests.to_dict(pod)["spec"]["containers"][0]["resources"]["requests"] == {
        "atoll.io/sriov_ens1f0": "2"
    }
    assert error(v1_pod(resources={"limits": {"example.com/vf": "1.5"}})) == (
        "bad.json: spec.containers[0].resources.limits[example.com/vf]: expected a whole number of units (0..1024), "
        'got "1.5"'
    )


def test_enum_words_are_case_sensitive_with_a_hint() -> None:
    assert error(v1_pod(ports=[{"containerPort": 80, "protocol": "tcp"}])) == (
        'bad.json: spec.containers[0].ports[0].protocol: expected one of SCTP, TCP, UDP, got "tcp" '
        '(did you mean "TCP"?)'
    )


def test_bad_quantities() -> None:
    assert error(v1_pod(resources={"limits": {"cpu": "half"}})) == (
        'bad.json: spec.containers[0].resources.limits.cpu: expected a quantity like "500m", "0.5" or "2", '
        'got "half"'
    )
    assert error(v1_pod(resources={"requests": {"memory": "128MB"}})) == (
        'bad.json: spec.containers[0].resources.requests.memory: expected a quantity like "128Mi", "1G" '
        'or 1073741824, got "128MB"'
    )
    assert error(v1_pod(resources={"limits": {"memory": "9Ei"}})) == (
        'bad.json: spec.containers[0].resources.limits.memory: quantity "9Ei" is too large'
    )


def test_unknown_kind_and_api_version() -> None:
    data = v1_pod()
    data["kind"] = "Deployment"
    kinds = "Endpoints, Event, Machine, Namespace, Network, Node, Pod, Registries, ReplicationController, ResourceQuota, Service, SriovNetwork, Subnet, Token, List"
    assert error(data) == (
        f'bad.json: kind: expected one of {kinds}, got "Deployment" '
        "(Atoll keeps replicas running with a ReplicationController)"
    )
    data["kind"] = "pod"
    assert error(data) == f'bad.json: kind: expected one of {kinds}, got "pod" (did you mean "Pod"?)'
    data = v1_pod()
    data["apiVersion"] = "apps/v1"
    assert error(data) == (
        'bad.json: apiVersion: expected v1 (or the older v1beta1, v1beta2, v1beta3) for kind Pod, got "apps/v1"'
    )
    del data["apiVersion"]
    assert error(data) == "bad.json: apiVersion: is required (for example, apiVersion: v1)"
    assert error("[1, 2]") == "bad.json: expected an object with apiVersion and kind, got a list"


def test_validation_problems_use_the_v1_path_for_v1() -> None:
    assert error(v1_pod(image="Fedora/Apache")) == (
        "bad.json: spec.containers[0].image: 'Fedora/Apache' is not a valid image reference"
    )
    data = v1_pod(volumeMounts=[{"name": "data", "mountPath": "/data"}])
    assert error(data) == (
        "bad.json: spec.containers[0].volumeMounts[0].name: volume 'data' is not declared in spec.volumes"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d.update(id="Apache") or d["desiredState"]["manifest"].pop("id"),
            "id: 'Apache' must be a DNS-1123 subdomain",
        ),
        (lambda d: d["labels"].update(name="a b"), "labels[name]: invalid label value 'a b'"),
        (lambda d: d.update(namespace="A"), "namespace: 'A' must be a DNS-1123 label"),
        (lambda d: d["desiredState"].update(host="Host_1"), "desiredState.host: 'Host_1' must be a DNS-1123"),
        (
            lambda d: d["desiredState"]["manifest"]["containers"][0].update(entrypoint=[], cpu=-1),
            "desiredState.manifest.containers[0].cpu: must not be negative",
        ),
        (
            lambda d: d["desiredState"]["manifest"]["containers"][0]["ports"].append(
                {"containerPort": 70000}
            ),
            "desiredState.manifest.containers[0].ports[1].containerPort: must be between 1 and 65535, got 70000",
        ),
        (
            lambda d: d["desiredState"]["manifest"].update(
                volumes=[{"name": "d", "source": {"hostDir": {"path": "data"}}}]
            ),
            "desiredState.manifest.volumes[0].source.hostDir.path: must be an absolute path, got 'data'",
        ),
        (
            lambda d: d["desiredState"]["manifest"]["containers"][0].update(
                volumeMounts=[{"name": "d", "mountPath": "/d"}]
            ),
            "desiredState.manifest.containers[0].volumeMounts[0].name: "
            "volume 'd' is not declared in desiredState.manifest.volumes",
        ),
        (
            lambda d: d["desiredState"]["manifest"].update(terminationGracePeriodSeconds=-1),
            "desiredState.manifest.terminationGracePeriodSeconds: must not be negative",
        ),
        (
            lambda d: d["desiredState"]["manifest"]["containers"][0].update(name=""),
            "desiredState.manifest.containers[0].name: is required",
        ),
    ],
)
def test_validation_problems_point_into_the_v1beta1_shape(change: Any, expected: str) -> None:
    data = legacy_pod(ports=[{"containerPort": 80, "hostPort": 80}])
    change(data)
    assert error(data, "apache.json").startswith(f"apache.json: {expected}")


def test_v1beta1_specific_errors() -> None:
    assert error(legacy_pod(cpu="500m")) == (
        "bad.json: desiredState.manifest.containers[0].cpu: expected an integer number of thousandths of a core "
        '(v1beta1 has no quantity strings), got "500m"'
    )
    assert error(legacy_pod(command="httpd 'unbalanced")) == (
        "bad.json: desiredState.manifest.containers[0].command: "
        "cannot split the command into words: No closing quotation"
    )
    data = legacy_pod()
    data["desiredState"]["manifest"]["id"] = "other"
    assert error(data) == 'bad.json: desiredState.manifest.id: must match the pod\'s id "apache", got "other"'
    data = legacy_pod()
    data["desiredState"]["manifest"]["restartPolicy"] = {"always": {}, "never": {}}
    assert (
        error(data)
        == "bad.json: desiredState.manifest.restartPolicy: expected one restart policy, got always and never"
    )
    data = legacy_pod()
    data["desiredState"]["manifest"]["version"] = "v2"
    assert error(data) == 'bad.json: desiredState.manifest.version: expected "v1beta1", got "v2"'


def test_node_validation() -> None:
    text = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, namespace: default}\n"
    assert error(text, "n.yaml") == "n.yaml: metadata.namespace: must be empty: this kind is not namespaced"
    text = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.1.0/33}\n"
    assert error(text, "n.yaml") == "n.yaml: spec.podCIDR: '10.244.1.0/33' is not a CIDR like 10.244.1.0/24"
    minion = {"kind": "Minion", "id": "n1", "externalID": ""}
    assert len(load(json.dumps(minion), "m.json")) == 1
    minion = {"kind": "Minion", "id": "Node_1"}
    assert error(minion).startswith("bad.json: id: 'Node_1' must be a DNS-1123 subdomain")


def test_every_api_kind_has_a_manifest_codec() -> None:
    assert {k.message for k in kinds.KINDS} <= set(catalog.BY_MESSAGE)
    assert {k.name for k in kinds.KINDS} <= set(catalog.BY_KIND)
