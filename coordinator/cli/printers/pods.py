"""Pods and nodes: their table rows and `describe` text."""

from __future__ import annotations

from collections.abc import Sequence

from atoll.v1 import meta_pb2, node_pb2, pod_pb2, workloads_pb2
from coordinator.cli.printers.common import age, labels_text, protocol, timestamp
from coordinator.cli.printers.workloads import describe_events

PHASES: dict[int, str] = {
    pod_pb2.POD_PHASE_PENDING: "Pending",
    pod_pb2.POD_PHASE_RUNNING: "Running",
    pod_pb2.POD_PHASE_SUCCEEDED: "Succeeded",
    pod_pb2.POD_PHASE_FAILED: "Failed",
    pod_pb2.POD_PHASE_UNKNOWN: "Unknown",
    pod_pb2.POD_PHASE_UNSPECIFIED: "Pending",
}
CONDITION: dict[int, str] = {
    meta_pb2.CONDITION_STATUS_TRUE: "True",
    meta_pb2.CONDITION_STATUS_FALSE: "False",
    meta_pb2.CONDITION_STATUS_UNKNOWN: "Unknown",
    meta_pb2.CONDITION_STATUS_UNSPECIFIED: "Unknown",
}


# -- nodes --------------------------------------------------------------------------------------


def node_status_text(node: node_pb2.Node) -> str:
    ready = next((c for c in node.status.conditions if c.type == "Ready"), None)
    text = "Ready" if ready is not None and ready.status == meta_pb2.CONDITION_STATUS_TRUE else "NotReady"
    if node.spec.unschedulable:
        text += ",SchedulingDisabled"
    return text


def node_address(node: node_pb2.Node) -> str:
    return next((a.address for a in node.status.addresses if a.type == "InternalIP"), "<none>")


def node_row(node: node_pb2.Node, wide: bool) -> list[str]:
    row = [node.metadata.name, labels_text(node.metadata.labels), node_status_text(node)]
    if wide:
        alloc = node.status.allocatable
        row += [
            node_address(node),
            f"{alloc.cpu_millis // 1000}" if alloc.cpu_millis % 1000 == 0 else f"{alloc.cpu_millis}m",
            f"{alloc.memory_bytes // (1 << 20)}Mi",
            node.spec.pod_cidr or "<none>",
            node.status.node_info.agent_version or "<unknown>",
            age(node.metadata.creation_timestamp),
        ]
    return row


NODE_HEADERS = ["NAME", "LABELS", "STATUS"]
NODE_WIDE = ["ADDRESS", "CPU", "MEMORY", "POD CIDR", "VERSION", "AGE"]


# -- pods ---------------------------------------------------------------------------------------


def pod_status_text(pod: pod_pb2.Pod) -> str:
    """The phase, or what holds the pod back (ErrImagePull, CrashLoopBackOff), as kubectl shows it."""
    if pod.status.phase in (
        pod_pb2.POD_PHASE_PENDING,
        pod_pb2.POD_PHASE_RUNNING,
        pod_pb2.POD_PHASE_UNSPECIFIED,
    ):
        for cs in pod.status.container_statuses:
            if cs.state.WhichOneof("state") == "waiting" and cs.state.waiting.reason:
                return cs.state.waiting.reason
    if pod.status.reason and pod.status.phase != pod_pb2.POD_PHASE_RUNNING:
        return pod.status.reason
    return PHASES.get(pod.status.phase, "Unknown")


def restarts(pod: pod_pb2.Pod) -> int:
    return sum(cs.restart_count for cs in pod.status.container_statuses)


def pod_host(pod: pod_pb2.Pod) -> str:
    if not pod.spec.node_name:
        return "<unassigned>"
    return f"{pod.spec.node_name}/{pod.status.host_ip}" if pod.status.host_ip else pod.spec.node_name


def pod_row(pod: pod_pb2.Pod, wide: bool) -> list[str]:
    ready = sum(1 for cs in pod.status.container_statuses if cs.ready)
    row = [
        pod.metadata.name,
        pod.status.pod_ip or "<none>",
        ",".join(c.name for c in pod.spec.containers),
        ",".join(c.image for c in pod.spec.containers),
        pod_host(pod),
        labels_text(pod.metadata.labels),
        pod_status_text(pod),
        str(restarts(pod)),
        age(pod.metadata.creation_timestamp),
    ]
    if wide:
        row += [f"{ready}/{len(pod.spec.containers)}", pod.metadata.namespace, pod.status.message or ""]
    return row


POD_HEADERS = ["NAME", "IP", "CONTAINER(S)", "IMAGE(S)", "HOST", "LABELS", "STATUS", "RESTARTS", "AGE"]
POD_WIDE = ["READY", "NAMESPACE", "MESSAGE"]

# -- describe -----------------------------------------------------------------------------------


def describe_pod(pod: pod_pb2.Pod, events: Sequence[workloads_pb2.Event] | None = None) -> str:
    m, s = pod.metadata, pod.status
    lines = [
        f"Name:          {m.name}",
        f"Namespace:     {m.namespace}",
        f"UID:           {m.uid}",
        f"Node:          {pod_host(pod)}",
        f"Start Time:    {timestamp(s.start_time)}",
        f"Labels:        {labels_text(m.labels)}",
        f"Status:        {PHASES.get(s.phase, 'Unknown')}",
    ]
    if s.reason:
        lines.append(f"Reason:        {s.reason}")
    if s.message:
        lines.append(f"Message:       {s.message}")
    lines += [
        f"IP:            {s.pod_ip or '<none>'}",
    ]
    for n in s.networks:
        ips = ",".join(n.ips) or "<none>"
        lines.append(f"Network:       {n.name} as {n.interface} ({ips}) on VF {n.device_pci}")
    lines += [
        f"Restart Policy: {_restart_policy(pod.spec.restart_policy)}",
        "Containers:",
    ]
    statuses = {cs.name: cs for cs in s.container_statuses}
    for c in pod.spec.containers:
        cs = statuses.get(c.name)
        lines.append(f"  {c.name}:")
        lines.append(f"    Image:         {c.image}")
        if cs is not None and cs.container_id:
            lines.append(f"    Container ID:  {cs.container_id}")
        for p in c.ports:
            host = f" (host {p.host_port})" if p.host_port else ""
            lines.append(f"    Port:          {p.container_port}/{protocol(p.protocol)}{host}")
        if c.command:
            lines.append(f"    Command:       {' '.join(c.command)}")
        if c.args:
            lines.append(f"    Args:          {' '.join(c.args)}")
        if cs is not None:
            lines.append(f"    State:         {_state(cs.state)}")
            if cs.last_state.WhichOneof("state"):
                lines.append(f"    Last State:    {_state(cs.last_state)}")
            lines.append(f"    Ready:         {cs.ready}")
            lines.append(f"    Restart Count: {cs.restart_count}")
        for e in c.env:
            lines.append(f"    Env:           {e.name}={e.value}")
        for vm in c.volume_mounts:
            lines.append(
                f"    Mount:         {vm.mount_path} from {vm.name}{' (ro)' if vm.read_only else ''}"
            )
    if pod.spec.volumes:
        lines.append("Volumes:")
        for v in pod.spec.volumes:
            kind = "HostPath " + v.host_path.path if v.WhichOneof("source") == "host_path" else "EmptyDir"
            lines.append(f"  {v.name}: {kind}")
    if s.conditions:
        lines.append("Conditions:")
        for cond in s.conditions:
            reason = f" ({cond.reason})" if cond.reason else ""
            lines.append(f"  {cond.type:<16}{CONDITION.get(cond.status, 'Unknown')}{reason}")
    if events is not None:
        lines.append(describe_events(events))
    return "\n".join(lines)


def describe_node(
    node: node_pb2.Node,
    pods: Sequence[pod_pb2.Pod] = (),
    events: Sequence[workloads_pb2.Event] | None = None,
) -> str:
    m, s = node.metadata, node.status
    lines = [
        f"Name:               {m.name}",
        f"Labels:             {labels_text(m.labels)}",
        f"Created:            {timestamp(m.creation_timestamp)}",
        f"Unschedulable:      {node.spec.unschedulable}",
        f"Last Heartbeat:     {timestamp(s.last_heartbeat_time)}",
        "Addresses:",
        *(f"  {a.type}: {a.address}" for a in s.addresses),
        "Conditions:",
        *(
            f"  {c.type:<16}{CONDITION.get(c.status, 'Unknown'):<9}{c.reason}: {c.message}"
            for c in s.conditions
        ),
        "Capacity:",
        f"  cpu: {s.capacity.cpu_millis}m  memory: {s.capacity.memory_bytes // (1 << 20)}Mi  pods: {s.capacity.pods}",
        "Allocatable:",
        f"  cpu: {s.allocatable.cpu_millis}m  memory: {s.allocatable.memory_bytes // (1 << 20)}Mi  pods: {s.allocatable.pods}",
        "Usage:",
        f"  cpu: {s.usage.cpu_millis}m  memory: {s.usage.memory_bytes // (1 << 20)}Mi"
        f"  load: {' '.join(f'{x:.2f}' for x in s.load_average)}",
        "System Info:",
        f"  Kernel: {s.node_info.kernel_version}  OS: {s.node_info.os_image}  Arch: {s.node_info.architecture}",
        f"  Runtime: {s.node_info.container_runtime_version}  Agent: {s.node_info.agent_version}",
        f"  Agent port: {s.agent_port}",
    ]
    if pods:
        lines.append(f"Pods ({len(pods)}):")
        lines += [f"  {p.metadata.namespace}/{p.metadata.name}  {pod_status_text(p)}" for p in pods]
    if events is not None:
        lines.append(describe_events(events))
    return "\n".join(lines)


def _restart_policy(value: int) -> str:
    names: dict[int, str] = {
        pod_pb2.RESTART_POLICY_ON_FAILURE: "OnFailure",
        pod_pb2.RESTART_POLICY_NEVER: "Never",
    }
    return names.get(value, "Always")


def _state(state: pod_pb2.ContainerState) -> str:
    which = state.WhichOneof("state")
    if which == "running":
        return f"Running (since {timestamp(state.running.started_at)})"
    if which == "waiting":
        msg = f": {state.waiting.message}" if state.waiting.message else ""
        return f"Waiting ({state.waiting.reason}){msg}"
    if which == "terminated":
        t = state.terminated
        return f"Terminated ({t.reason}, exit code {t.exit_code}, finished {timestamp(t.finished_at)})"
    return "<unknown>"
