"""Registries manifests: reading them, and never printing a password."""

from __future__ import annotations

import json

import pytest
import yaml

from atoll.v1 import meta_pb2, network_pb2
from coordinator import manifests
from coordinator.manifests.errors import ManifestError

TEXT = """\
apiVersion: v1
kind: Registries
metadata: {name: default}
spec:
  search: [registry.example.com, docker.io]
  insecure: ["registry.example.com:5000", 10.0.0.0/8]
  blocked: [evil.example.org]
  mirrors: ["https://mirror.example.com"]
  auths:
    - {registry: registry.example.com, username: deploy, password: s3cret}
"""


def load(text: str) -> network_pb2.Registries:
    (obj,) = manifests.load_text(text, "reg.yaml")
    assert isinstance(obj, network_pb2.Registries)
    return obj


def error(text: str) -> str:
    with pytest.raises(ManifestError) as info:
        load(text)
    return str(info.value)


def test_decode() -> None:
    assert load(TEXT) == network_pb2.Registries(
        metadata=meta_pb2.ObjectMeta(name="default"),
        spec=network_pb2.RegistriesSpec(
            search=["registry.example.com", "docker.io"],
            insecure=["registry.example.com:5000", "10.0.0.0/8"],
            blocked=["evil.example.org"],
            mirrors=["https://mirror.example.com"],
            auths=[
                network_pb2.RegistryAuth(
                    registry="registry.example.com", username="deploy", password="s3cret"
                )
            ],
        ),
    )


def test_output_never_carries_a_password() -> None:
    reg = load(TEXT)
    out = manifests.to_dict(reg)
    assert out["spec"]["auths"] == [
        {"registry": "registry.example.com", "username": "deploy", "passwordSet": True}
    ]
    for fmt in ("json", "yaml"):
        assert "s3cret" not in manifests.dumps(out, fmt)  # type: ignore[arg-type]
    # Fed back, it says "keep the stored password" (the server's rule), and prints the same.
    (again,) = manifests.load_data(out)
    assert isinstance(again, network_pb2.Registries)
    assert (again.spec.auths[0].password, again.spec.auths[0].password_set) == ("", True)
    assert manifests.to_dict(again) == out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("name: default", "name: mine"),
            'metadata.name: must be "default": the cluster has one Registries object',
        ),
        (
            ("search: [registry.example.com", "search: [https://registry.example.com/library/"),
            "spec.search[0]: 'https://registry.example.com/library/' must be a registry host[:port] like "
            "registry.example.com:5000, without a path",
        ),
        (
            ("search: [registry.example.com", "search: [registry.example.com/library"),
            "spec.search[0]: 'registry.example.com/library' must be a registry host[:port] like "
            "registry.example.com:5000, without a path",
        ),
        (
            ("search: [registry.example.com", "search: [evil.example.org"),
            "spec.search[0]: evil.example.org is also blocked: nothing could be pulled from it",
        ),
        (
            ("blocked: [evil.example.org]", "blocked: [evil_host]"),
            "spec.blocked[0]: 'evil_host' is not a registry host",
        ),
        (
            ('"registry.example.com:5000"', '"registry.example.com:99999"'),
            "spec.insecure[0]: port 99999 must be between 1 and 65535",
        ),
        (
            ('"https://mirror.example.com"', '"mirror.example.com"'),
            "spec.mirrors[0]: 'mirror.example.com' must be an http:// or https:// URL",
        ),
        (
            ('"https://mirror.example.com"', '"https://user:pw@mirror.example.com"'),
            "spec.mirrors[0]: must not carry credentials: put them in auths",
        ),
        (("username: deploy, ", ""), "spec.auths[0].username: is required"),
        (("password: s3cret}", "password: ''}"), "spec.auths[0].password: is required"),
        (("blocked: [evil.example.org]", "blocked: [all, '*']"), "spec.blocked[1]: * is listed twice"),
        (
            ("password: s3cret}", "password: s3cret, email: a@b.c}"),
            "spec.auths[0].email: Atoll does not support this Docker field",
        ),
        (("docker.io]", "docker.io, docker.io]"), "spec.search[2]: docker.io is listed twice"),
    ],
)
def test_errors(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in TEXT
    assert error(TEXT.replace(old, new)).startswith(f"reg.yaml: {expected}")


def test_docker_hub_as_docker_writes_it() -> None:
    text = TEXT.replace(
        "registry: registry.example.com, username", 'registry: "https://index.docker.io/v1/", username'
    )
    assert load(text).spec.auths[0].registry == "https://index.docker.io/v1/"


def test_two_auths_for_one_registry() -> None:
    data = yaml.safe_load(TEXT)
    data["spec"]["auths"].append({"registry": "registry.example.com", "username": "other"})
    with pytest.raises(ManifestError) as info:
        manifests.load_text(json.dumps(data), "reg.json")
    assert str(info.value) == "reg.json: spec.auths[1].registry: registry.example.com has two auths; keep one"
