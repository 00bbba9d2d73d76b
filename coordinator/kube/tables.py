"""Server-side `Table` output (meta.k8s.io/v1), so that `kubectl get` prints kubectl's columns.

Rows are made from the Kubernetes v1 form of each object (the manifest
encoding), the way kubectl's own printers read Kubernetes types: NAME, READY,
STATUS, RESTARTS, AGE for pods and so on, with priority 1 for the columns
`-o wide` adds. Every row carries the whole object, which kubectl needs for
`--show-labels`, `-L` and `--sort-by`.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Column = tuple[str, str, int, str]  # name, type, priority, description
RowFunc = Callable[[Obj, float], list[Any]]


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a meta.k8s.io Table first (kubectl get does)."""
    for part in accept.split(","):
        params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in part.split(";")[1:])}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
        if part.strip().split(";")[0] in ("application/json", "*/*"):
            return False
    return False


def human_duration(seconds: float) -> str:
    """kubectl's short ages: 45s, 5m10s, 3h, 2d5h, 400d."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _seconds(stamp: object) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _age(stamp: object, now: float) -> str:
    seconds = _seconds(stamp)
    return "<unknown>" if seconds is None else human_duration(now - seconds)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _created(obj: Obj, now: float) -> str:
    return _age(_meta(obj).get("creationTimestamp"), now)


def _selector_text(selector: object) -> str:
    if not isinstance(selector, dict) or not selector:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


# -- per kind -----------------------------------------------------------------------------------


def pod_status(pod: Obj) -> str:
    status = pod.get("status") or {}
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    phase = status.get("phase") or "Pending"
    reason = status.get("reason") or ""
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        terminated = (state.get("terminated") or {}).get("reason")
        if waiting and phase in ("Pending", "Running"):
            return str(waiting)
        if terminated and phase not in ("Running",):
            reason = reason or str(terminated)
    return str(reason or phase)


def _pod_row(pod: Obj, now: float) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    total = len(spec.get("containers") or [])
    return [
        _meta(pod).get("name", ""),
        f"{ready}/{total}",
        pod_status(pod),
        restarts,
        _created(pod, now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _node_row(node: Obj, now: float) -> list[Any]:
    status = node.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    text = "Ready" if conditions.get("Ready") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    info = status.get("nodeInfo") or {}
    labels = _meta(node).get("labels") or {}
    roles = sorted(k.rpartition("/")[2] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return [
        _meta(node).get("name", ""),
        text,
        ",".join(roles) or "<none>",
        _created(node, now),
        info.get("kubeletVersion") or info.get("agentVersion") or "<unknown>",
        addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>",
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def service_ports(svc: Obj) -> str:
    parts = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        text = str(p.get("port", ""))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        parts.append(f"{text}/{p.get('protocol') or 'TCP'}")
    return ",".join(parts) or "<none>"


def _service_row(svc: Obj, now: float) -> list[Any]:
    spec = svc.get("spec") or {}
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = [i.get("ip") or i.get("hostname") for i in ingress] + list(spec.get("externalIPs") or [])
    kind = spec.get("type") or "ClusterIP"
    return [
        _meta(svc).get("name", ""),
        kind,
        spec.get("clusterIP") or "<none>",
        ",".join(e for e in external if e) or ("<pending>" if kind == "LoadBalancer" else "<none>"),
        service_ports(svc),
        _created(svc, now),
        _selector_text(spec.get("selector")),
    ]


def _rc_row(rc: Obj, now: float) -> list[Any]:
    spec, status = rc.get("spec") or {}, rc.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [
        _meta(rc).get("name", ""),
        spec.get("replicas", 1),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _created(rc, now),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _selector_text(spec.get("selector")),
    ]


def _endpoints_row(ep: Obj, now: float) -> list[Any]:
    shown = []
    for subset in ep.get("subsets") or []:
        ports = [p.get("port") for p in subset.get("ports") or []] or [None]
        for address in subset.get("addresses") or []:
            for port in ports:
                shown.append(f"{address.get('ip')}:{port}" if port else str(address.get("ip")))
    text = ",".join(shown[:3]) + (f" + {len(shown) - 3} more..." if len(shown) > 3 else "")
    return [_meta(ep).get("name", ""), text or "<none>", _created(ep, now)]


def _namespace_row(ns: Obj, now: float) -> list[Any]:
    phase = (ns.get("status") or {}).get("phase") or "Active"
    return [_meta(ns).get("name", ""), phase, _created(ns, now)]


def _event_row(ev: Obj, now: float) -> list[Any]:
    involved = ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp")
    return [
        _age(last, now),
        ev.get("type") or "Normal",
        ev.get("reason") or "",
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        ev.get("message") or "",
        (ev.get("source") or {}).get("component") or "",
        _age(ev.get("firstTimestamp"), now),
        ev.get("count") or 1,
        _meta(ev).get("name", ""),
    ]


def _quota_row(rq: Obj, now: float) -> list[Any]:
    status = rq.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    request = ", ".join(f"{k}: {used.get(k, 0)}/{v}" for k, v in sorted(hard.items()))
    return [_meta(rq).get("name", ""), _created(rq, now), request]


_NAME = ("Name", "string", 0, "Name must be unique within a namespace.")
_AGE = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
)

COLUMNS: dict[str, tuple[list[Column], RowFunc]] = {
    "pods": (
        [
            _NAME,
            ("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            ("Status", "string", 0, "The aggregate status of the containers in this pod."),
            ("Restarts", "integer", 0, "The number of times the containers in this pod have been restarted."),
            _AGE,
            ("IP", "string", 1, "IP address allocated to the pod."),
            ("Node", "string", 1, "Name of the node this pod runs on."),
            ("Nominated Node", "string", 1, "Nominated node (never set by Atoll)."),
            ("Readiness Gates", "string", 1, "Readiness gates (none in Atoll)."),
        ],
        _pod_row,
    ),
    "nodes": (
        [
            _NAME,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            _AGE,
            ("Version", "string", 0, "The version of the node's agent"),
            ("Internal-IP", "string", 1, "List of internal IPs."),
            ("External-IP", "string", 1, "List of external IPs."),
            ("OS-Image", "string", 1, "OS image reported by the node."),
            ("Kernel-Version", "string", 1, "Kernel version reported by the node."),
            ("Container-Runtime", "string", 1, "Container runtime reported by the node."),
        ],
        _node_row,
    ),
    "services": (
        [
            _NAME,
            ("Type", "string", 0, "Type of the service."),
            ("Cluster-IP", "string", 0, "IP address of the service."),
            ("External-IP", "string", 0, "External IPs of the service."),
            ("Port(s)", "string", 0, "Ports the service serves on."),
            _AGE,
            ("Selector", "string", 1, "The pods the service routes traffic to."),
        ],
        _service_row,
    ),
    "replicationcontrollers": (
        [
            _NAME,
            ("Desired", "integer", 0, "Number of desired pods."),
            ("Current", "integer", 0, "Number of pods that exist."),
            ("Ready", "integer", 0, "Number of ready pods."),
            _AGE,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "Label selector of the pods it controls."),
        ],
        _rc_row,
    ),
    "endpoints": (
        [_NAME, ("Endpoints", "string", 0, "Endpoints of the service."), _AGE],
        _endpoints_row,
    ),
    "namespaces": ([_NAME, ("Status", "string", 0, "The status of the namespace"), _AGE], _namespace_row),
    "events": (
        [
            ("Last Seen", "string", 0, "When the event last happened."),
            ("Type", "string", 0, "Normal or Warning."),
            ("Reason", "string", 0, "Why the event happened."),
            ("Object", "string", 0, "The object the event is about."),
            ("Message", "string", 0, "What happened."),
            ("Source", "string", 1, "Who reported it."),
            ("First Seen", "string", 1, "When the event first happened."),
            ("Count", "integer", 1, "How often it happened."),
            ("Name", "string", 1, _NAME[3]),
        ],
        _event_row,
    ),
    "resourcequotas": (
        [_NAME, _AGE, ("Request", "string", 0, "Used and hard limits.")],
        _quota_row,
    ),
}


def column_definitions(plural: str) -> list[Obj]:
    columns, _ = COLUMNS[plural]
    return [
        {
            "name": name,
            "type": kind,
            "format": "name" if name == "Name" else "",
            "description": text,
            "priority": prio,
        }
        for name, kind, prio, text in columns
    ]


def row(plural: str, obj: Obj, now: float | None = None) -> Obj:
    _, make = COLUMNS[plural]
    return {"cells": make(obj, time.time() if now is None else now), "object": obj}


def table(
    plural: str,
    objects: list[Obj],
    *,
    resource_version: str = "",
    continue_token: str = "",
    with_columns: bool = True,
    now: float | None = None,
) -> Obj:
    metadata: Obj = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(plural) if with_columns else [],
        "rows": [row(plural, o, now) for o in objects],
    }
