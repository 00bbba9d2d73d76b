"""The agent's overlay network: flannel-compatible VXLAN, rendered, diffed and applied.

Wiring, in the agent::

    overlay = Overlay(PyrouteNetlink(), IptablesFirewall(AsyncioRunner()), runtime,
                      subnet_env_path="/run/flannel/subnet.env")
    vtep = await overlay.prepare(network, coordinator_ip=host)     # before AcquireLease
    lease = AcquireLease(node, public_ip=vtep.public_ip, vtep_mac=vtep.vtep_mac)
    report = await overlay.apply(network, lease, node_config.leases)  # every push, and periodically

Pods join the engine network `overlay.pod_network_name`. See
agent.network.overlay for the design (static kernel entries, like flannel).
"""

from agent.network.fake import FakeFirewall, FakeNetlink
from agent.network.firewall import Firewall, FirewallFailure, IptablesFirewall
from agent.network.model import Lease, OverlayConfig, OverlayError, Underlay, VtepInfo
from agent.network.netlink import NetlinkDriver, NetlinkFailure, PyrouteNetlink
from agent.network.overlay import DEFAULT_SUBNET_ENV, ApplyReport, Overlay, render_subnet_env
from agent.network.plan import OverlayPlan, diff, render, vtep_mac

__all__ = [
    "DEFAULT_SUBNET_ENV",
    "ApplyReport",
    "FakeFirewall",
    "FakeNetlink",
    "Firewall",
    "FirewallFailure",
    "IptablesFirewall",
    "Lease",
    "NetlinkDriver",
    "NetlinkFailure",
    "Overlay",
    "OverlayConfig",
    "OverlayError",
    "OverlayPlan",
    "PyrouteNetlink",
    "Underlay",
    "VtepInfo",
    "diff",
    "render",
    "render_subnet_env",
    "vtep_mac",
]
