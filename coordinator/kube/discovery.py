"""Discovery: what kubectl asks before anything else (/version, /api, /api/v1, /apis).

Current kubectl asks /api and /apis for the aggregated form
(`apidiscovery.k8s.io/v2` APIGroupDiscoveryList, one answer for every
resource of a group) and falls back to the legacy documents (APIVersions,
APIGroupList, APIResourceList) when the server answers with plain JSON. Both
are served. There is only the core group: /apis lists no groups.
"""

from __future__ import annotations

import platform
from typing import Any

from coordinator.kube import resources

# What the Accept header names for aggregated discovery, and the content type to answer with.
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

# The Kubernetes release whose API this facade follows, for /version (kubectl warns on big skews).
KUBE_MAJOR, KUBE_MINOR = "1", "37"


def version(atoll_version: str) -> dict[str, Any]:
    return {
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0-atoll.{atoll_version}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "python",
        "platform": f"linux/{platform.machine()}",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}


def api_resource_list() -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for r in resources.SERVED:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
            "shortNames": list(r.short_names),
        }
        if r.categories:
            entry["categories"] = list(r.categories)
        out.append(entry)
        for sub in r.subresources:
            out.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": resources.subresource_kind(r, sub),
                    "verbs": _sub_verbs(sub),
                }
            )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": out}


def _sub_verbs(sub: str) -> list[str]:
    if sub in ("scale", "status"):
        return ["get", "patch", "update"]
    if sub == "log":
        return ["get"]
    return ["create", "get"]


def aggregated_core(api_version: str = "v2") -> dict[str, Any]:
    """/api in the aggregated form: the core group with every served resource."""
    items: list[dict[str, Any]] = []
    for r in resources.SERVED:
        entry: dict[str, Any] = {
            "resource": r.plural,
            "responseKind": {"group": "", "version": "v1", "kind": r.kind},
            "scope": "Namespaced" if r.namespaced else "Cluster",
            "singularResource": r.singular,
            "verbs": r.verbs,
            "shortNames": list(r.short_names),
        }
        if r.categories:
            entry["categories"] = list(r.categories)
        if r.subresources:
            entry["subresources"] = [
                {
                    "subresource": sub,
                    "responseKind": {
                        "group": "",
                        "version": "v1",
                        "kind": resources.subresource_kind(r, sub),
                    },
                    "verbs": _sub_verbs(sub),
                }
                for sub in r.subresources
            ]
        items.append(entry)
    group = {
        "metadata": {"creationTimestamp": None},
        "versions": [{"version": "v1", "resources": items, "freshness": "Current"}],
    }
    return _discovery_list([group], api_version)


def aggregated_groups(api_version: str = "v2") -> dict[str, Any]:
    """/apis in the aggregated form: no groups beside the core one."""
    return _discovery_list([], api_version)


def _discovery_list(groups: list[dict[str, Any]], api_version: str) -> dict[str, Any]:
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{api_version}",
        "metadata": {},
        "items": groups,
    }


def wants_aggregated(accept: str) -> str:
    """The aggregated discovery version the Accept header asks for first ("" for the legacy form)."""
    for part in accept.split(","):
        params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in part.split(";")[1:])}
        if (
            params.get("g") == "apidiscovery.k8s.io"
            and params.get("as") == "APIGroupDiscoveryList"
            and params.get("v") in ("v2", "v2beta1")
        ):
            return params["v"]
    return ""
