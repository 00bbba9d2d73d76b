"""The CLI's client on several coordinators: which calls it makes again, and the config that lists them."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from atoll import errors, kinds
from atoll.v1 import cluster_pb2, pod_pb2
from coordinator import config as serveconfig
from coordinator.client import api
from coordinator.client import config as clientconfig

POD = kinds.by_name("Pod")
SEVERAL = "127.0.0.1:6443,127.0.0.2:6443,127.0.0.3:6443"


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="connection refused"
    )


class FlakyStub:
    """Every method fails with UNAVAILABLE `failures` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def __getattr__(self, method: str) -> Any:
        def call(request: Any, timeout: float | None = None) -> Any:
            self.calls.append(method)

            async def answer() -> Any:
                if self.failures:
                    self.failures -= 1
                    raise unavailable()
                pod = pod_pb2.Pod()
                pod.metadata.name = "p"
                obj = kinds.wrap(pod)
                if method == "List":
                    return cluster_pb2.ListResponse(items=[obj])
                if method == "SignUserCertificate":
                    return cluster_pb2.SignUserCertificateResponse()
                return type("Resp", (), {"object": obj})()

            return answer()

        return call


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "RETRY_PAUSE", 0.0)


async def client(server: str, failures: int) -> tuple[api.Client, FlakyStub]:
    c = api.Client(server)
    stub = FlakyStub(failures)
    c.stub = stub  # type: ignore[assignment]
    return c, stub


async def test_reads_and_writes_that_cannot_double_apply_are_made_again() -> None:
    c, stub = await client(SEVERAL, failures=2)
    items, _ = await c.list(POD, "default")
    assert len(items) == 1 and stub.calls == ["List"] * 3
    for name, call in [
        ("Get", lambda: c.get(POD, "default", "p")),
        ("Create", lambda: c.create(pod_pb2.Pod())),
        ("Update", lambda: c.update(pod_pb2.Pod())),
        ("Delete", lambda: c.delete(POD, "default", "p")),
    ]:
        stub.calls, stub.failures = [], 1
        await call()
        assert stub.calls == [name, name]
    await c.close()


async def test_at_most_once_per_server() -> None:
    c, stub = await client(SEVERAL, failures=5)
    with pytest.raises(errors.Unavailable):
        await c.get(POD, "default", "p")
    assert len(stub.calls) == 3
    await c.close()


async def test_signing_is_never_repeated_and_one_server_is_tried_once() -> None:
    c, stub = await client(SEVERAL, failures=1)
    with pytest.raises(errors.Unavailable):
        await c.sign_user_certificate("u", "viewer", b"csr")
    assert stub.calls == ["SignUserCertificate"]
    await c.close()
    one, stub = await client("127.0.0.1:6443", failures=1)
    with pytest.raises(errors.Unavailable):
        await one.get(POD, "default", "p")
    assert stub.calls == ["Get"]
    await one.close()


def test_a_config_lists_servers_as_a_list_or_a_comma_list() -> None:
    listed = clientconfig.parse("servers:\n  - a:6443\n  - b:6443\n", "admin.conf")
    assert listed.server == "a:6443,b:6443" and listed.servers == ["a:6443", "b:6443"]
    assert clientconfig.parse("server: a:6443,b:6443\n", "admin.conf").servers == ["a:6443", "b:6443"]
    again = clientconfig.parse(listed.dump(), "dumped")
    assert again == listed and "servers:" in listed.dump()
    assert "server: a:6443\n" in clientconfig.ClientConfig(server="a:6443").dump()
    with pytest.raises(errors.InvalidArgument, match="not both"):
        clientconfig.parse("server: a:6443\nservers: [b:6443]\n", "admin.conf")
    with pytest.raises(errors.InvalidArgument, match="list of HOST:PORT"):
        clientconfig.parse("servers: a:6443\n", "admin.conf")


def test_server_flag_takes_several_with_default_ports() -> None:
    assert serveconfig.server_address("a,b:7000", {}) == "a:6443,b:7000"
    assert serveconfig.server_address(None, {"ATOLL_SERVER": "a:1, b:2"}) == "a:1,b:2"
    with pytest.raises(errors.InvalidArgument):
        serveconfig.server_address(",", {})
