"""Shared data and builders of the overlay unit tests (test_overlay_plan.py, test_overlay.py)."""

from __future__ import annotations

import ipaddress
import pathlib

from agent.network import plan
from agent.network.fake import FakeFirewall, FakeNetlink
from agent.network.model import Lease, LinkState, OverlayConfig, Underlay
from agent.network.overlay import Overlay
from agent.runtime.fake import FakeRuntime

NET = ipaddress.IPv4Network("10.100.0.0/16")
CONFIG = OverlayConfig(network=NET)
UNDERLAY = Underlay(iface="eth0", local_ip="198.51.100.10", public_ip="198.51.100.10", mtu=1500)
DEVICE = plan.render_device(CONFIG, UNDERLAY, plan.vtep_mac("198.51.100.10", 1))


def lease(i: int, *, mac: str | None = None, ip: str | None = None, node: str | None = None) -> Lease:
    """Node i's lease: 10.100.i.0/24 from 198.51.100.(10+i), MAC 0a:00:00:00:00:i."""
    return Lease(
        subnet=ipaddress.IPv4Network(f"10.100.{i}.0/24"),
        public_ip=f"198.51.100.{10 + i}" if ip is None else ip,
        vtep_mac=f"0a:00:00:00:00:{i:02x}" if mac is None else mac,
        node_name=node or f"node{i}",
    )


#: Our own lease (node 0), with the MAC our device gets.
OWN = lease(0, mac=DEVICE.mac, ip="198.51.100.10")


def link_state(**changes: object) -> LinkState:
    """flannel.1 as the kernel would report it for DEVICE, with `changes`."""
    base: dict[str, object] = {
        "name": "flannel.1",
        "index": 7,
        "kind": "vxlan",
        "mtu": 1450,
        "mac": DEVICE.mac,
        "up": True,
        "vni": 1,
        "port": 8472,
        "local": "198.51.100.10",
        "underlay": "eth0",
        "learning": False,
    }
    base.update(changes)
    return LinkState(**base)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_overlay(
    tmp_path: pathlib.Path,
    nl: FakeNetlink | None = None,
    firewall: FakeFirewall | None = None,
    runtime: FakeRuntime | None = None,
    **kwargs: object,
) -> tuple[Overlay, FakeNetlink, FakeFirewall, FakeRuntime]:
    nl = nl or FakeNetlink()
    firewall = firewall or FakeFirewall()
    runtime = runtime or FakeRuntime()
    overlay = Overlay(nl, firewall, runtime, subnet_env_path=tmp_path / "run/flannel/subnet.env", **kwargs)  # type: ignore[arg-type]
    return overlay, nl, firewall, runtime
