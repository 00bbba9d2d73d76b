"""The Registries kind: where nodes pull images from. One object, named "default".

    apiVersion: v1
    kind: Registries
    metadata: {name: default}
    spec:
      search: [registry.example.com]           # tried in order for unqualified names
      insecure: [registry.example.com:5000]   # plain HTTP or unverified TLS
      blocked: [docker.io]
      mirrors: [https://mirror.example.com]
      auths: [{registry: registry.example.com, username: deploy, password: s3cret}]

Passwords are write-only: output never carries one, only ``passwordSet:
true``, which reads back as "keep the stored password" (the server's rule).
"""

from __future__ import annotations

from typing import Any

from atoll import validation
from atoll.v1 import network_pb2
from coordinator.manifests import meta
from coordinator.manifests.reader import Schema, Value
from coordinator.manifests.registry import Codec, Shape

REGISTRIES = Schema.of(known=("apiVersion", "kind", "metadata", "spec"))
REGISTRIES_SPEC = Schema.of(known=("search", "insecure", "blocked", "mirrors", "auths"))
AUTH = Schema.of(
    known=("registry", "username", "password", "passwordSet"),
    unsupported={
        "auth": "give username and password",
        "email": "",
        "identitytoken": "",
        "registrytoken": "",
    },
    origin="Docker",
)


def decode_v1(root: Value) -> network_pb2.Registries:
    f = root.fields(REGISTRIES)
    reg = network_pb2.Registries(metadata=meta.decode(f.get("metadata")), spec=network_pb2.RegistriesSpec())
    sf = f.child_fields("spec", REGISTRIES_SPEC)
    spec = reg.spec
    for key, out in (
        ("search", spec.search),
        ("insecure", spec.insecure),
        ("blocked", spec.blocked),
        ("mirrors", spec.mirrors),
    ):
        if v := sf.get(key):
            out.extend(v.strings())
    for item in v.elements() if (v := sf.get("auths")) else []:
        af = item.fields(AUTH)
        auth = spec.auths.add()
        if x := af.get("registry"):
            auth.registry = x.string()
        if x := af.get("username"):
            auth.username = x.string()
        if x := af.get("password"):
            auth.password = x.string()
        if x := af.get("passwordSet"):
            auth.password_set = x.boolean()
    return reg


def encode(reg: network_pb2.Registries) -> dict[str, Any]:
    s = reg.spec
    spec: dict[str, Any] = {
        key: list(values)
        for key, values in (
            ("search", s.search),
            ("insecure", s.insecure),
            ("blocked", s.blocked),
            ("mirrors", s.mirrors),
        )
        if values
    }
    if s.auths:
        # Never the password, even when the message carries one (a client-side object).
        spec["auths"] = [
            {"registry": a.registry, "username": a.username}
            | ({"passwordSet": True} if a.password or a.password_set else {})
            for a in s.auths
        ]
    return {"apiVersion": "v1", "kind": "Registries", "metadata": meta.encode(reg.metadata), "spec": spec}


CODEC = Codec(
    kind="Registries",
    message=network_pb2.Registries,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=validation.validate_registries,
)
