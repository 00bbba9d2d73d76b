"""The pod security levels (coordinator/admission/podsecurity.py), by exact problem lists."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from atoll import errors
from atoll.v1 import meta_pb2, namespace_pb2, pod_pb2
from coordinator import config as coordinator_config
from coordinator import manifests
from coordinator.admission import podsecurity
from coordinator.admission.podsecurity import HostPathRule, PodSecurityConfig, Problem

DEFAULT = PodSecurityConfig()
DATA = PodSecurityConfig.from_config(["/srv/data:ro", "/srv/cache", "/var/log/pods:rw"], ["80", "8000-8999"])


def spec(*, host_path: str = "", host_port: int = 0, read_only: bool = False) -> pod_pb2.PodSpec:
    s = pod_pb2.PodSpec(containers=[pod_pb2.Container(name="c", image="busybox")])
    if host_path:
        s.volumes.add(name="host", host_path=pod_pb2.HostPathVolumeSource(path=host_path))
        s.containers[0].volume_mounts.add(name="host", mount_path="/host", read_only=read_only)
    if host_port:
        s.containers[0].ports.add(container_port=80, host_port=host_port)
    return s


def check(s: pod_pb2.PodSpec, level: str, config: PodSecurityConfig = DEFAULT) -> list[Problem]:
    return podsecurity.check_pod_spec(s, level, config)


@pytest.mark.parametrize("path", ["/", "/var/run/docker.sock", "/var/lib/atoll/pki", "/srv/data"])
def test_baseline_refuses_every_host_path_by_default(path: str) -> None:
    assert check(spec(host_path=path), "baseline") == [
        Problem("spec.volumes[0].hostPath.path", f'"{path}" is not allowed')
    ]


def test_directory_or_create_is_no_way_around() -> None:
    s = spec(host_path="/etc/cron.d")
    s.volumes[0].host_path.type = "DirectoryOrCreate"
    assert check(s, "baseline") == [Problem("spec.volumes[0].hostPath.path", '"/etc/cron.d" is not allowed')]


def test_the_allow_list_matches_whole_path_components_after_normalising() -> None:
    assert check(spec(host_path="/srv/cache"), "baseline", DATA) == []
    assert check(spec(host_path="/srv/cache/a/b"), "baseline", DATA) == []
    assert check(spec(host_path="/srv/cachet"), "baseline", DATA) == [
        Problem("spec.volumes[0].hostPath.path", '"/srv/cachet" is not allowed')
    ]
    assert check(spec(host_path="/srv/cache/../../etc"), "baseline", DATA) == [
        Problem("spec.volumes[0].hostPath.path", '"/srv/cache/../../etc" is not allowed')
    ]


def test_read_only_prefixes_need_read_only_mounts() -> None:
    assert check(spec(host_path="/srv/data/x", read_only=True), "baseline", DATA) == []
    assert check(spec(host_path="/srv/data/x"), "baseline", DATA) == [
        Problem(
            "spec.containers[0].volumeMounts[0].readOnly", 'hostPath "/srv/data/x" must be mounted read-only'
        )
    ]


def test_the_most_specific_prefix_wins() -> None:
    config = PodSecurityConfig.from_config(["/srv", "/srv/secret:ro"], [])
    assert check(spec(host_path="/srv/x"), "baseline", config) == []
    assert [p.field for p in check(spec(host_path="/srv/secret/k"), "baseline", config)] == [
        "spec.containers[0].volumeMounts[0].readOnly"
    ]


@pytest.mark.parametrize("port", [1, 22, 53, 79, 81, 442, 1023])
def test_baseline_refuses_low_host_ports_by_default(port: int) -> None:
    assert check(spec(host_port=port), "baseline") == [
        Problem("spec.containers[0].ports[0].hostPort", f"{port} is not allowed (allowed: 80,443,1024-65535)")
    ]


@pytest.mark.parametrize("port", [80, 443, 1024, 8080, 65535])
def test_baseline_allows_the_default_host_ports(port: int) -> None:
    assert check(spec(host_port=port), "baseline") == []


def test_the_admin_sets_the_host_ports() -> None:
    assert check(spec(host_port=8500), "baseline", DATA) == []
    assert check(spec(host_port=443), "baseline", DATA) == [
        Problem("spec.containers[0].ports[0].hostPort", "443 is not allowed (allowed: 80,8000-8999)")
    ]


def test_privileged_allows_everything() -> None:
    assert check(spec(host_path="/", host_port=22), "privileged") == []


def test_restricted_refuses_host_paths_and_ports_even_when_allowed_and_needs_non_root() -> None:
    assert check(spec(host_path="/srv/cache", host_port=8080), "restricted", DATA) == [
        Problem("spec.volumes[0].hostPath.path", '"/srv/cache" is not allowed'),
        Problem("spec.containers[0].ports[0].hostPort", "8080 is not allowed"),
        Problem(
            "spec.containers[0].securityContext.runAsNonRoot",
            "must be true (here or in the pod's securityContext)",
        ),
    ]


def test_restricted_run_as_non_root_at_pod_or_container_level() -> None:
    s = spec()
    s.security_context.run_as_non_root = True
    assert check(s, "restricted") == []
    s.containers[0].security_context.run_as_non_root = False
    assert check(s, "restricted") == [
        Problem("spec.containers[0].securityContext.runAsNonRoot", "false is not allowed")
    ]
    s = spec()
    s.containers[0].security_context.run_as_non_root = True
    s.containers[0].security_context.run_as_user = 0
    s.security_context.run_as_user = 0
    assert check(s, "restricted") == [
        Problem("spec.securityContext.runAsUser", "0 (root) is not allowed"),
        Problem("spec.containers[0].securityContext.runAsUser", "0 (root) is not allowed"),
    ]
    assert check(s, "baseline") == []


def test_templates_get_their_own_prefix() -> None:
    problems = podsecurity.check_pod_spec(spec(host_path="/"), "baseline", DEFAULT, "spec.template.spec")
    assert problems == [Problem("spec.template.spec.volumes[0].hostPath.path", '"/" is not allowed')]


def test_refuse_names_the_field_the_level_and_the_namespace() -> None:
    with pytest.raises(errors.PermissionDenied) as caught:
        podsecurity.refuse(check(spec(host_path="/", host_port=22), "baseline"), "baseline", "default")
    assert str(caught.value) == (
        'spec.volumes[0].hostPath.path: "/" is not allowed at pod security level "baseline" '
        'in namespace "default" (and 1 more)'
    )
    podsecurity.refuse([], "baseline", "default")  # nothing to refuse


def test_levels_come_from_the_label_and_default_to_baseline() -> None:
    assert podsecurity.level_of({}) == "baseline"
    assert podsecurity.level_of({podsecurity.LABEL: "restricted"}) == "restricted"
    ns = namespace_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name="a", labels={podsecurity.LABEL: "root"}))
    assert podsecurity.validate_namespace(ns).items == [
        (
            "metadata.labels[pod-security.atoll.io/enforce]",
            "'root' is not a pod security level (privileged, baseline, restricted)",
        )
    ]


def test_config_parsing() -> None:
    assert PodSecurityConfig.from_config(
        ["/srv/data/:ro", "/x:rw"], ["80", "1024-2048"]
    ) == PodSecurityConfig(
        (HostPathRule("/srv/data", True), HostPathRule("/x", False)), ((80, 80), (1024, 2048))
    )
    with pytest.raises(errors.InvalidArgument, match=r"allowed_host_paths\[0\]"):
        podsecurity.parse_host_paths(["srv"])
    for bad in ("0", "70000", "9-8", "http"):
        with pytest.raises(errors.InvalidArgument, match=r"allowed_host_ports\[0\]"):
            podsecurity.parse_host_ports([bad])


def _serve(tmp: pathlib.Path, argv: list[str], environ: dict[str, str]) -> coordinator_config.ServeConfig:
    (tmp / "empty.yaml").write_text("{}\n")
    parser = argparse.ArgumentParser()
    coordinator_config.add_serve_flags(parser)
    cfg = coordinator_config.load_serve(
        parser.parse_args(["--config", str(tmp / "empty.yaml"), *argv]), environ
    )
    cfg.validate()
    return cfg


def test_the_coordinators_options(tmp_path: pathlib.Path) -> None:
    defaults = coordinator_config.ServeConfig()
    assert (defaults.allowed_host_paths, defaults.allowed_host_ports) == ([], ["80", "443", "1024-65535"])
    cfg = _serve(
        tmp_path,
        ["--allowed-host-paths", "/srv/data:ro,/srv/cache"],
        {"ATOLL_COORDINATOR_ALLOWED_HOST_PORTS": "8080,9000-9100"},
    )
    assert PodSecurityConfig.from_config(cfg.allowed_host_paths, cfg.allowed_host_ports) == PodSecurityConfig(
        (HostPathRule("/srv/data", True), HostPathRule("/srv/cache", False)), ((8080, 8080), (9000, 9100))
    )
    with pytest.raises(errors.InvalidArgument, match=r"allowed_host_ports\[1\]"):
        _serve(tmp_path, ["--allowed-host-ports", "80,22-21"], {})


POD_YAML = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  securityContext: {runAsNonRoot: true, runAsGroup: 0}
  containers:
  - name: c
    image: busybox
    securityContext: {runAsUser: 1000, readOnlyRootFilesystem: false}
"""


def test_manifests_carry_security_contexts_and_namespaces() -> None:
    (pod,) = manifests.load_text(POD_YAML, "pod.yaml")
    assert manifests.to_dict(pod)["spec"] == {
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": False},
            }
        ],
        "securityContext": {"runAsGroup": 0, "runAsNonRoot": True},
    }
    ns_yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {pod-security.atoll.io/enforce: restricted}}\n"
    (ns,) = manifests.load_text(ns_yaml, "ns.yaml")
    assert manifests.to_dict(ns) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "a", "labels": {"pod-security.atoll.io/enforce": "restricted"}},
    }
    with pytest.raises(manifests.ManifestError, match=r"securityContext\.privileged: Atoll does not support"):
        manifests.load_text(POD_YAML.replace("readOnlyRootFilesystem: false", "privileged: true"), "pod.yaml")
    with pytest.raises(manifests.ManifestError, match=r"securityContext\.runAsUser"):
        manifests.load_text(POD_YAML.replace("runAsUser: 1000", "runAsUser: -1"), "pod.yaml")
