"""The service proxy (kube-proxy's job): cluster and external IPs DNATed to ready endpoints with nftables.

See agent.proxy.ruleset for the table's layout and which flows are
masqueraded, agent.proxy.diff for how a change becomes one minimal nft
transaction, and agent.proxy.proxy for the ServiceProxy the agent drives.
"""

from agent.proxy.diff import Plan, TableState, diff
from agent.proxy.fake import FakeNetfilter
from agent.proxy.model import Endpoint, ServicePort, resolve
from agent.proxy.netfilter import Netfilter, NetfilterError, NftNetfilter
from agent.proxy.proxy import ProxyReport, ServiceProxy
from agent.proxy.ruleset import MASQ_MARK, TABLE, Ruleset, render

__all__ = [
    "MASQ_MARK",
    "TABLE",
    "Endpoint",
    "FakeNetfilter",
    "Netfilter",
    "NetfilterError",
    "NftNetfilter",
    "Plan",
    "ProxyReport",
    "Ruleset",
    "ServicePort",
    "ServiceProxy",
    "TableState",
    "diff",
    "render",
    "resolve",
]
