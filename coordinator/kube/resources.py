"""The Kubernetes core/v1 resources served, and the Atoll kinds behind them.

Only kinds whose manifests are the Kubernetes v1 shape are served under
/api/v1; Atoll's own kinds (networks, subnets, machines, tokens, ...) stay on
the gRPC API and the `coordinator` CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

from atoll import kinds
from atoll.kinds import KindInfo

READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "update", "patch", "delete")


@dataclass(frozen=True)
class Resource:
    info: KindInfo
    short_names: tuple[str, ...]
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def plural(self) -> str:
        return self.info.plural

    @property
    def kind(self) -> str:
        return self.info.name

    @property
    def singular(self) -> str:
        return self.info.name.lower()

    @property
    def namespaced(self) -> bool:
        return self.info.namespaced

    @property
    def verbs(self) -> list[str]:
        return [*READ_VERBS, *WRITE_VERBS]


SERVED: tuple[Resource, ...] = (
    Resource(kinds.by_name("Namespace"), ("ns",)),
    Resource(kinds.by_name("Node"), ("no",)),
    Resource(kinds.by_name("Pod"), ("po",), ("all",), ("log", "status", "exec", "attach", "portforward")),
    Resource(kinds.by_name("Service"), ("svc",), ("all",), ("status", "proxy")),
    Resource(kinds.by_name("Endpoints"), ("ep",)),
    Resource(kinds.by_name("ReplicationController"), ("rc",), ("all",), ("scale", "status")),
    Resource(kinds.by_name("Event"), ("ev",)),
    Resource(kinds.by_name("ResourceQuota"), ("quota",)),
)

BY_PLURAL: dict[str, Resource] = {r.plural: r for r in SERVED}

# Subresources that need a stream upgrade (SPDY or WebSocket): answered 405 with a Status.
STREAMING = frozenset({"exec", "attach", "portforward", "proxy"})


def subresource_kind(resource: Resource, sub: str) -> str:
    """The kind a subresource answers with, as discovery lists it."""
    if sub == "scale":
        return "Scale"
    if sub in ("exec", "attach", "portforward"):
        return f"Pod{sub.capitalize()}Options" if sub != "portforward" else "PodPortForwardOptions"
    if sub == "proxy":
        return "ServiceProxyOptions"
    return resource.kind
