"""A node certificate acts only as its own node: calls, watches and the events it reports."""

from __future__ import annotations

import asyncio

import pytest

from agent.statusstream import StreamSender
from atoll import errors, kinds, pki, rpc
from atoll.v1 import cluster_pb2, node_api_pb2, node_api_pb2_grpc, workloads_pb2
from coordinator.auth import tokens
from tests.functional.harness import Cluster, eventually
from tests.functional.test_security import POD, _join, call, cert_config, pod

EVENT = kinds.by_name("Event")
NODE = kinds.by_name("Node")
TOKEN = kinds.by_name("Token")


async def test_a_node_certificate_cannot_act_as_another_node(secure: Cluster) -> None:
    await secure.add_node("node-1")
    await secure.add_node("node-2")
    node1 = cert_config(secure, "node-1", "atoll:nodes")
    channel = rpc.open_channel(node1.server, credentials=node1.credentials(node1.server))
    stub = node_api_pb2_grpc.NodeServiceStub(channel)
    try:
        # Itself: fine.
        await rpc.unary(stub.GetAssignment(node_api_pb2.GetAssignmentRequest(node_name="node-1")))
        other = "node-2"
        attempts = [
            stub.Heartbeat(node_api_pb2.HeartbeatRequest(node_name=other)),
            stub.ReportPodStatus(node_api_pb2.ReportPodStatusRequest(node_name=other)),
            stub.AcquireLease(
                node_api_pb2.AcquireLeaseRequest(
                    node_name=other, public_ip="10.0.0.9", vtep_mac="02:00:00:00:00:09"
                )
            ),
            stub.GetAssignment(node_api_pb2.GetAssignmentRequest(node_name=other)),
            stub.ReportEvents(node_api_pb2.ReportEventsRequest(node_name=other)),
            stub.RenewCertificate(
                node_api_pb2.RenewCertificateRequest(node_name=other, csr=pki.build_csr(pki.new_key(), other))
            ),
        ]
        for attempt in attempts:
            with pytest.raises(
                errors.PermissionDenied, match="node node-1 may only act as itself, not as node node-2"
            ):
                await rpc.unary(attempt)
        # On its status stream, a report as another node ends the stream as the call is refused,
        # after one as itself was served.
        sender = StreamSender()
        await sender.send(stub, node_api_pb2.ReportPodStatusRequest(node_name="node-1"), 10)
        with pytest.raises(
            errors.PermissionDenied, match="node node-1 may only act as itself, not as node node-2"
        ):
            await sender.send(stub, node_api_pb2.ReportPodStatusRequest(node_name=other), 10)
        assert not sender.open
        registration = node_api_pb2.RegisterRequest()
        registration.node.metadata.name = other
        with pytest.raises(errors.PermissionDenied):
            await rpc.unary(stub.Register(registration))
        for watch in (
            stub.WatchAssignment(node_api_pb2.WatchAssignmentRequest(node_name=other)),
            stub.WatchNodeConfig(node_api_pb2.WatchNodeConfigRequest(node_name=other)),
        ):
            with pytest.raises(errors.PermissionDenied):
                async for _ in rpc.stream(watch):
                    break
        # Nor may it use the cluster API.
        with pytest.raises(errors.PermissionDenied):
            await call(channel, "ClusterService", "List", cluster_pb2.ListRequest(kind=POD.kind), "unary")
    finally:
        await channel.close()


@pytest.mark.parametrize("carrier", ["ReportEvents", "ReportPodStatus"])
async def test_a_node_reports_events_only_about_itself_and_its_own_pods(
    secure: Cluster, carrier: str
) -> None:
    """Events about another node's pod (or another node) are dropped, not recorded under a false host:
    on their own (ReportEvents) or carried with pod statuses (ReportPodStatus), the same rules."""
    await secure.add_node("node-1")
    await secure.add_node("node-2")
    assert secure.client is not None
    bound = {}
    for name, node in (("mine", "node-1"), ("theirs", "node-2")):
        p = pod(name)
        p.spec.node_name = node
        bound[name] = await secure.client.create(p)
    node1 = cert_config(secure, "node-1", "atoll:nodes")
    channel = rpc.open_channel(node1.server, credentials=node1.credentials(node1.server))
    stub = node_api_pb2_grpc.NodeServiceStub(channel)

    def about(kind: str, name: str, uid: str = "") -> workloads_pb2.Event:
        return workloads_pb2.Event(
            involved_object=workloads_pb2.ObjectReference(kind=kind, namespace="default", name=name, uid=uid),
            type="Warning",
            reason=f"Probe-{kind}-{name}-{bool(uid)}",
        )

    try:
        request: node_api_pb2.ReportEventsRequest | node_api_pb2.ReportPodStatusRequest = (
            node_api_pb2.ReportEventsRequest(node_name="node-1")
            if carrier == "ReportEvents"
            else node_api_pb2.ReportPodStatusRequest(node_name="node-1")
        )
        request.events.extend(
            [
                about("Pod", "mine", bound["mine"].metadata.uid),
                about("Pod", "theirs", bound["theirs"].metadata.uid),
                about("Pod", "mine", "not-its-uid"),
                about("Node", "node-2"),
                about("Node", "node-1"),
                about("Pod", "missing"),
            ]
        )
        if isinstance(request, node_api_pb2.ReportEventsRequest):
            await rpc.unary(stub.ReportEvents(request))
        else:
            await rpc.unary(stub.ReportPodStatus(request))
    finally:
        await channel.close()

    async def probes() -> set[str] | None:
        assert secure.client is not None
        items, _ = await secure.client.list(EVENT, "")
        found = {e.reason for e in items if e.reason.startswith("Probe")}  # type: ignore[attr-defined]
        return found if len(found) >= 2 else None

    assert await eventually(probes, what="the node's own events") == {
        "Probe-Pod-mine-True",
        "Probe-Node-node-1-False",
    }


async def test_a_nodes_events_are_filed_under_the_object_it_is_and_its_budget_holds(secure: Cluster) -> None:
    """A node cannot escape the spam filter (25 events per object at once) by claiming new uids
    or namespaces: its events are filed under the object as the coordinator knows it. Events of
    a type other than Normal or Warning, or with no reason or one over 128 characters, are dropped."""
    await secure.add_node("node-1")
    assert secure.client is not None
    node = await secure.client.get(NODE, "", "node-1")
    node1 = cert_config(secure, "node-1", "atoll:nodes")
    channel = rpc.open_channel(node1.server, credentials=node1.credentials(node1.server))
    stub = node_api_pb2_grpc.NodeServiceStub(channel)
    request = node_api_pb2.ReportEventsRequest(node_name="node-1")
    for i in range(40):
        request.events.add(
            involved_object=workloads_pb2.ObjectReference(
                kind="Node", namespace=f"ns{i}", name="node-1", uid=f"u{i}"
            ),
            type="Warning",
            reason=f"Flood{i}",
        )
    request.events.add(
        involved_object=workloads_pb2.ObjectReference(kind="Node", name="node-1"),
        type="Bogus",
        reason="BadType",
    )
    request.events.add(
        involved_object=workloads_pb2.ObjectReference(kind="Node", name="node-1"), reason="R" * 129
    )
    try:
        await rpc.unary(stub.ReportEvents(request))
    finally:
        await channel.close()

    async def flood() -> list[workloads_pb2.Event] | None:
        assert secure.client is not None
        items, _ = await secure.client.list(EVENT, "")
        found = [e for e in items if e.reason.startswith("Flood")]  # type: ignore[attr-defined]
        return found if len(found) >= 25 else None  # type: ignore[return-value]

    found = await eventually(flood, what="the node's first 25 events")
    assert len(found) == 25
    assert {(e.involved_object.uid, e.involved_object.namespace) for e in found} == {(node.metadata.uid, "")}  # type: ignore[attr-defined]
    items, _ = await secure.client.list(EVENT, "")
    assert not [e for e in items if e.reason in ("BadType", "R" * 129)]  # type: ignore[attr-defined]


async def test_a_fleet_joins_with_one_token_at_once(secure: Cluster) -> None:
    """Fifty hosts booted from one image spend the same token concurrently: every join succeeds once."""
    token_id, secret = tokens.generate()
    assert secure.client is not None
    await secure.client.create(tokens.new_token(token_id, secret, ttl=3600, uses=50))
    names = [f"host-{i}" for i in range(50)]
    answers = await asyncio.gather(*(_join(secure, f"{token_id}.{secret}", n) for n in names))
    assert all(a.certificate for a in answers)
    token = await secure.client.get(TOKEN, "", token_id)
    assert token.status.uses == 50  # type: ignore[attr-defined]
    assert sorted(token.status.joined_nodes) == sorted(names)  # type: ignore[attr-defined]
    with pytest.raises(errors.AtollError, match="used"):
        await _join(secure, f"{token_id}.{secret}", "host-50")
