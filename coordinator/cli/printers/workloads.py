"""Replication controllers, services, endpoints and events: table rows and `describe` text.

The columns are kubectl's of 2015 (``CONTROLLER  CONTAINER(S)  IMAGE(S)
SELECTOR  REPLICAS``, ``NAME  LABELS  SELECTOR  IP  PORT(S)``), which is what
Atoll's operators know, plus an AGE column.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from atoll import labels
from atoll.v1 import pod_pb2, quota_pb2, workloads_pb2
from coordinator.cli.printers.common import (
    age,
    duration,
    fields,
    labels_text,
    list_text,
    protocol,
    table,
    timestamp,
)

# kubectl shows this many endpoints, then "+ N more...".
MAX_ENDPOINTS = 3
# Messages are cut in tables (describe shows them whole).
MAX_MESSAGE = 80


# -- replication controllers


def desired_replicas(rc: workloads_pb2.ReplicationController) -> int:
    return rc.spec.replicas if rc.spec.HasField("replicas") else 1


def rc_row(rc: workloads_pb2.ReplicationController, wide: bool) -> list[str]:
    containers = rc.spec.template.spec.containers
    row = [
        rc.metadata.name,
        ",".join(c.name for c in containers),
        ",".join(c.image for c in containers),
        labels_text(rc.spec.selector),
        str(desired_replicas(rc)),
        str(rc.status.replicas),
        age(rc.metadata.creation_timestamp),
    ]
    if wide:
        row.append(str(rc.status.ready_replicas))
    return row


RC_HEADERS = ["CONTROLLER", "CONTAINER(S)", "IMAGE(S)", "SELECTOR", "REPLICAS", "CURRENT", "AGE"]
RC_WIDE = ["READY"]


def describe_replication_controller(
    rc: workloads_pb2.ReplicationController,
    pods: Sequence[pod_pb2.Pod] | None = None,
    events: Sequence[workloads_pb2.Event] | None = None,
) -> str:
    """``pods``: the namespace's pods (those the selector matches are counted by phase)."""
    m, spec = rc.metadata, rc.spec
    pairs = [
        ("Name", m.name),
        ("Namespace", m.namespace),
        ("Image(s)", ",".join(c.image for c in spec.template.spec.containers) or "<none>"),
        ("Selector", labels_text(spec.selector)),
        ("Labels", labels_text(m.labels)),
        ("Replicas", f"{rc.status.replicas} current / {desired_replicas(rc)} desired"),
    ]
    if pods is not None:
        pairs.append(("Pods Status", _pods_status(rc, pods)))
    pairs.append(("Created", timestamp(m.creation_timestamp)))
    lines = fields(pairs)
    if events is not None:
        lines.append(describe_events(events))
    return "\n".join(lines)


def _pods_status(rc: workloads_pb2.ReplicationController, pods: Iterable[pod_pb2.Pod]) -> str:
    selector = labels.Selector.from_map(rc.spec.selector)
    counts = {"Running": 0, "Waiting": 0, "Succeeded": 0, "Failed": 0}
    phase_names = {
        pod_pb2.POD_PHASE_RUNNING: "Running",
        pod_pb2.POD_PHASE_SUCCEEDED: "Succeeded",
        pod_pb2.POD_PHASE_FAILED: "Failed",
    }
    for pod in pods:
        # An empty selector would match every pod; the controller owns none then.
        mine = rc.spec.selector and pod.metadata.namespace == rc.metadata.namespace
        if mine and selector.matches(pod.metadata.labels):
            counts[phase_names.get(pod.status.phase, "Waiting")] += 1
    return " / ".join(f"{n} {state}" for state, n in counts.items())


# -- services


SERVICE_TYPES = {
    workloads_pb2.SERVICE_TYPE_NODE_PORT: "NodePort",
    workloads_pb2.SERVICE_TYPE_LOAD_BALANCER: "LoadBalancer",
}


def service_type(svc: workloads_pb2.Service) -> str:
    return SERVICE_TYPES.get(svc.spec.type, "ClusterIP")


def service_ports(svc: workloads_pb2.Service) -> str:
    """kubectl's PORT(S): 80/TCP, or 80:30080/TCP with a node port."""
    return (
        ",".join(
            f"{p.port}{f':{p.node_port}' if p.node_port else ''}/{protocol(p.protocol)}"
            for p in svc.spec.ports
        )
        or "<none>"
    )


def service_row(svc: workloads_pb2.Service, wide: bool) -> list[str]:
    row = [
        svc.metadata.name,
        service_type(svc),
        labels_text(svc.metadata.labels),
        labels_text(svc.spec.selector),
        svc.spec.cluster_ip or "<pending>",
        service_ports(svc),
        age(svc.metadata.creation_timestamp),
    ]
    if wide:
        row += [list_text(svc.spec.external_ips), svc.spec.session_affinity or "None"]
    return row


SERVICE_HEADERS = ["NAME", "TYPE", "LABELS", "SELECTOR", "IP", "PORT(S)", "AGE"]
SERVICE_WIDE = ["EXTERNAL IP(S)", "SESSION AFFINITY"]


def describe_service(
    svc: workloads_pb2.Service,
    endpoints: workloads_pb2.Endpoints | None = None,
    events: Sequence[workloads_pb2.Event] | None = None,
) -> str:
    m, spec = svc.metadata, svc.spec
    pairs = [
        ("Name", m.name),
        ("Namespace", m.namespace),
        ("Labels", labels_text(m.labels)),
        ("Selector", labels_text(spec.selector)),
        ("Type", service_type(svc)),
        ("IP", spec.cluster_ip or "<pending>"),
    ]
    if spec.external_ips:
        pairs.append(("External IPs", ",".join(spec.external_ips)))
    for port in spec.ports:
        target = port.target_port_name or str(port.target_port or port.port)
        pairs += [
            ("Port", f"{port.name or '<unnamed>'}  {port.port}/{protocol(port.protocol)}"),
            ("TargetPort", f"{target}/{protocol(port.protocol)}"),
        ]
        if port.node_port:
            pairs.append(
                ("NodePort", f"{port.name or '<unnamed>'}  {port.node_port}/{protocol(port.protocol)}")
            )
        if endpoints is not None:
            pairs.append(("Endpoints", endpoints_text(endpoints, port.name, limit=None)))
    pairs.append(("Session Affinity", spec.session_affinity or "None"))
    lines = fields(pairs)
    if events is not None:
        lines.append(describe_events(events))
    return "\n".join(lines)


# -- endpoints


def endpoints_text(
    ep: workloads_pb2.Endpoints, port_name: str | None = None, *, limit: int | None = MAX_ENDPOINTS
) -> str:
    """``ip:port`` for every ready address and port (of the one named ``port_name``, if given),
    the first ``limit`` of them followed by "+ N more..." as kubectl shows them."""
    shown: list[str] = []
    total = 0
    for subset in ep.subsets:
        ports = [p for p in subset.ports if port_name is None or p.name == port_name]
        pairs = (
            [f"{a.ip}:{p.port}" for p in ports for a in subset.addresses]
            if subset.ports
            else [a.ip for a in subset.addresses]
        )
        for pair in pairs:
            total += 1
            if limit is None or len(shown) < limit:
                shown.append(pair)
    text = ",".join(shown) or "<none>"
    if total > len(shown):
        text += f" + {total - len(shown)} more..."
    return text


def endpoints_row(ep: workloads_pb2.Endpoints, wide: bool) -> list[str]:
    row = [ep.metadata.name, endpoints_text(ep), age(ep.metadata.creation_timestamp)]
    if wide:
        row.append(str(sum(len(s.not_ready_addresses) for s in ep.subsets)))
    return row


ENDPOINTS_HEADERS = ["NAME", "ENDPOINTS", "AGE"]
ENDPOINTS_WIDE = ["NOT READY"]


# -- events


def event_object(ev: workloads_pb2.Event) -> str:
    return f"{ev.involved_object.kind.lower()}/{ev.involved_object.name}"


def event_source(ev: workloads_pb2.Event) -> str:
    return ", ".join(part for part in (ev.source_component, ev.source_host) if part) or "<unknown>"


def _short(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())  # one line: multi-line messages would break the table
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_row(ev: workloads_pb2.Event, wide: bool) -> list[str]:
    row = [
        age(ev.last_timestamp),
        str(ev.count or 1),
        ev.type or "Normal",
        ev.reason,
        event_object(ev),
        _short(ev.message),
    ]
    if wide:
        row += [age(ev.first_timestamp), event_source(ev)]
    return row


EVENT_HEADERS = ["LAST SEEN", "COUNT", "TYPE", "REASON", "OBJECT", "MESSAGE"]
EVENT_WIDE = ["FIRST SEEN", "SOURCE"]


def describe_events(events: Sequence[workloads_pb2.Event], now: float | None = None) -> str:
    """The "Events:" section kubectl appends to descriptions, oldest first.

    Age is the last occurrence; a repeated event says how often and since
    when, as kubectl does: ``3m (x5 over 10m)``.
    """
    if not events:
        return "Events:  <none>"
    now = now or time.time()
    rows = []
    for ev in sorted(events, key=lambda e: (e.last_timestamp.ToNanoseconds(), e.metadata.name)):
        when = age(ev.last_timestamp, now)
        if ev.count > 1 and ev.first_timestamp.seconds:
            when += f" (x{ev.count} over {duration(max(0, int(now - ev.first_timestamp.seconds)))})"
        rows.append([ev.type or "Normal", ev.reason, when, event_source(ev), " ".join(ev.message.split())])
    headers = ["Type", "Reason", "Age", "From", "Message"]
    rules = ["-" * len(h) for h in headers]
    body = _indent_table(headers, [rules, *rows])
    return "Events:\n" + body


def _indent_table(headers: list[str], rows: list[list[str]]) -> str:
    return "\n".join("  " + line for line in table(headers, rows).split("\n"))


def resource_quota_row(rq: quota_pb2.ResourceQuota, wide: bool) -> list[str]:
    """kubectl's REQUEST column: used/hard per key, from the status the coordinator computes."""
    hard = rq.status.hard or rq.spec.hard
    request = ", ".join(f"{k}: {rq.status.used.get(k, '0')}/{v}" for k, v in sorted(hard.items()))
    return [rq.metadata.name, age(rq.metadata.creation_timestamp), request or "<none>"]


RESOURCE_QUOTA_HEADERS = ["NAME", "AGE", "REQUEST"]
RESOURCE_QUOTA_WIDE: list[str] = []
