"""Issue 15, point 3: the gRPC API holds no surprises for clients in other languages.

Validation errors carry standard google.rpc.BadRequest details, a list without
a limit never exceeds the 4 MiB other clients accept, GetVersion answers, and
grpc.health.v1.Health/List answers without a traceback in the log. (The Node.js
client's own test is tests/functional/test_node_client.py.)
"""

from __future__ import annotations

import asyncio
import logging
import pathlib

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from atoll import errors, kinds, rpc
from atoll.v1 import cluster_pb2, cluster_pb2_grpc, pod_pb2
from coordinator.api import paging
from coordinator.cli.main import main
from tests.functional.harness import Cluster

POD = kinds.by_name("Pod")
FOUR_MIB = 4 * 1024 * 1024


def pod(name: str, *, image: str = "busybox", pad: int = 0) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    c = p.spec.containers.add(name="main", image=image)
    if pad:
        c.env.add(name="PAD", value="x" * pad)
    return p


async def test_a_validation_error_carries_standard_field_violations(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, insecure=True).start()
    try:
        async with rpc.open_channel(f"127.0.0.1:{cluster.coordinator.port}") as channel:
            stub = cluster_pb2_grpc.ClusterServiceStub(channel)
            bad = pod("bad", image="")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Create(cluster_pb2.CreateRequest(object=kinds.wrap(bad)))
        err = caught.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        # What any grpcio-status user does; it also checks code and message match the status.
        status = rpc_status.from_call(err)
        assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        violations = []
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            assert detail.Unpack(bad_request)
            violations += [(v.field, v.description) for v in bad_request.field_violations]
        assert len(violations) == 1
        field, description = violations[0]
        assert field.startswith("spec.containers[0]") and description
        assert err.details() == f"{field}: {description}"

        # Our own client reads the same field path back from the standard details.
        assert cluster.client is not None
        with pytest.raises(errors.InvalidArgument) as ours:
            await cluster.client.create(bad)
        assert ours.value.field == field and ours.value.message == description
    finally:
        await cluster.stop()


def test_the_older_trailer_is_still_read() -> None:
    # A coordinator from before the standard details sent only atoll-field-bin.
    assert errors.field_of_trailers([(errors.FIELD_METADATA_KEY, b"metadata.labels[a b]")]) == (
        "metadata.labels[a b]"
    )
    # Standard details win; garbage in them falls back to the older trailer.
    err = errors.InvalidArgument("must be set", field="spec.replicas")
    trailers = errors.field_trailers(err)
    assert errors.field_of_trailers(trailers) == "spec.replicas"
    assert errors.field_of_trailers([(errors.STATUS_DETAILS_KEY, b"\xff\xff"), trailers[-1]]) == (
        "spec.replicas"
    )
    assert errors.field_trailers(errors.InvalidArgument("no field")) == ()


async def test_a_list_without_limit_stays_under_four_mebibytes(tmp_path: pathlib.Path) -> None:
    # 12 pods of 600 KiB: 7 MiB in all, which Go, Java and Node clients would refuse in one message.
    cluster = await Cluster(tmp_path, insecure=True).start()
    try:
        c = cluster.client
        assert c is not None
        for i in range(12):
            await c.create(pod(f"big-{i:02}", pad=600 * 1024))
        first = await c.list_page(POD, "default")  # no limit
        assert first.continue_token and 0 < len(first.items) < 12
        assert first.ByteSize() < FOUR_MIB and paging.PAGE_BYTES < FOUR_MIB
        # A limit larger than fits is cut the same way.
        assert (await c.list_page(POD, "default", limit=1000)).ByteSize() < FOUR_MIB
        items, _ = await c.list(POD, "default", chunk_size=0)
        assert [o.metadata.name for o in items] == [f"big-{i:02}" for i in range(12)]  # type: ignore[attr-defined]
    finally:
        await cluster.stop()


async def test_get_version_and_the_cli_shows_the_server_version(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = await Cluster(tmp_path).start()  # mutual TLS: a viewer may ask too, as any caller
    try:
        assert cluster.client is not None
        info = await cluster.client.version()
        assert info.server_version and info.api_version == "atoll.v1"
        assert {"list-paging", "status-details-bad-request"} <= set(info.features)
        code = await asyncio.to_thread(main, [*cluster.cli_args(), "version"])
        out, _ = capsys.readouterr()
        assert code == 0
        assert f"Server Version: {info.server_version}" in out and "Client Version: " in out
        assert "API Version: atoll.v1" in out
        assert await asyncio.to_thread(main, ["version", "--client"]) == 0
        out, _ = capsys.readouterr()
        assert out.startswith("Client Version: ") and "Server" not in out
    finally:
        await cluster.stop()


async def test_health_list_answers_without_a_traceback(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cluster = await Cluster(tmp_path, insecure=True).start()
    try:
        async with rpc.open_channel(f"127.0.0.1:{cluster.coordinator.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            listed = await stub.List(health_pb2.HealthListRequest(), timeout=10)
            check = await stub.Check(health_pb2.HealthCheckRequest(service="atoll.v1.ClusterService"))
        serving = health_pb2.HealthCheckResponse.SERVING
        assert listed.statuses["atoll.v1.ClusterService"].status == serving == check.status
        assert listed.statuses[""].status == serving
    finally:
        await cluster.stop()
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
