"""The connection front's bookkeeping (the sockets are in tests/functional/test_exposure.py),
and the descriptor limit the daemons raise at start."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from atoll import connlimit, rlimits
from atoll.connlimit import ConnectionGate, ConnLimits


def gate(per_source: int = 2, total: int = 3) -> ConnectionGate:
    return ConnectionGate("127.0.0.1:0", 1, ConnLimits(per_source=per_source, total=total))


def test_caps_per_source_then_in_total_and_releases() -> None:
    g = gate()
    assert [g.admit("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert g.stats.refused_per_source == 1
    assert g.admit("10.0.0.2")
    assert not g.admit("10.0.0.3")  # 3 open in all
    assert g.stats.refused_total == 1 and g.stats.accepted == 3
    g.release("10.0.0.1")
    assert g.admit("10.0.0.3")
    for source in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        g.release(source)
    assert g.total == 0 and g.open == {}


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_a_source_is_an_ipv4_address_or_an_ipv6_slash_64(address: str, source: str) -> None:
    assert connlimit.source_of(address) == source


def test_original_peer_maps_the_fronts_loopback_connections_back() -> None:
    g = gate()
    g.peers[40001] = "ipv4:198.51.100.9:5555"
    assert g.original_peer("ipv4:127.0.0.1:40001") == "ipv4:198.51.100.9:5555"
    assert g.original_peer("ipv4:127.0.0.1:40002") is None
    assert g.original_peer("ipv4:198.51.100.9:40001") is None
    assert connlimit.grpc_peer("::1", 7) == "ipv6:[::1]:7"


@pytest.fixture
def lowered_nofile() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, hard, 256)
    if lowered == hard:
        pytest.fail(f"the hard descriptor limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_raise_nofile_lifts_the_soft_limit_to_the_hard_one(lowered_nofile: int) -> None:
    assert rlimits.raise_nofile() == (256, lowered_nofile)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (lowered_nofile, lowered_nofile)
    assert rlimits.raise_nofile() == (lowered_nofile, lowered_nofile)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False


def test_bytes_that_come_before_the_backend_are_kept_and_sent_first() -> None:
    # Some Pythons read before connection_made's pause takes effect: a ClientHello must not be lost.
    client = connlimit._Client(gate(), "10.0.0.1", "ipv4:10.0.0.1:5000")
    client.transport = FakeTransport()  # type: ignore[assignment]
    client.data_received(b"client")
    client.data_received(b"hello")
    backend = FakeTransport()
    client.attach(backend, connlimit._Backend())  # type: ignore[arg-type]
    client.data_received(b"more")
    assert backend.written == [b"clienthello", b"more"]
    assert client.transport.paused is False  # type: ignore[union-attr]
