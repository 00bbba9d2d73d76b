"""The desired nftables ruleset of the service proxy, rendered as plain data.

Layout (one table, `table ip atoll`, owned by Atoll alone)::

    map services      ip daddr . l4proto . dport : verdict   cluster/external IP:port -> goto svc-<port>
    map no-endpoints  ip daddr . l4proto . dport : verdict   ... of services without ready endpoints
                                                              -> goto reject-service

    chain nat-prerouting   nat    prerouting  -110  vmap @services      pods, other hosts
    chain nat-output       nat    output      -110  vmap @services      this host's own traffic
    chain nat-postrouting  nat    postrouting   90  masquerade what carries MASQ_MARK (and clear it)
    chain filter-prerouting filter prerouting -110  ct state new: vmap @no-endpoints
    chain filter-output    filter output      -110  ct state new: vmap @no-endpoints
    chain reject-service   tcp reset, else icmp port-unreachable (kube-proxy's REJECT)

    chain svc-<ns>/<name>/<proto>/<port>            one per service port
        fib saddr type local  -> set MASQ_MARK
        numgen random mod N vmap { 0 : goto ep-..., ..., N-1 : goto ep-... }   (equal odds)
    chain ep-<ns>/<name>/<proto>/<port>__<ip>/<port>  one per ready endpoint of that port
        ip saddr <endpoint>           -> set MASQ_MARK   (hairpin)
        ip daddr != <cluster IP>      -> set MASQ_MARK   (remote endpoints only: external-IP path)
        dnat to <endpoint>:<port>

A service port's keys are its cluster IP and those of its external IPs
(v1beta1 publicIPs) that this node owns; an external IP owned by another node
gets no entry here, the node that owns it answers for it. A NodePort (or
LoadBalancer) service's port also has a key for each of this node's own
addresses (all but loopback) on its node port: kube-proxy's nodeports, for
traffic from other hosts, from pods and from the node itself, going to the
same service chain. Traffic to a remote endpoint through a node port is
masqueraded (its destination is not the cluster IP), so that the answer comes
back through the node the client talked to. Everything a
service owns is its chains and its map elements, so adding, changing or
removing one service is one transaction that names only those (see
agent.proxy.diff); other services' chains keep their rules and handles.

Priorities: the NAT chains run at -110, before dockerd's iptables DNAT at
-100 (as KUBE-SERVICES was inserted first in PREROUTING); the first NAT
decision of a connection is final, so a service port wins over a host port
on the same address. Masquerading runs at 90, before dockerd's at 100, for
the same reason. Reject runs in prerouting, not in forward/input as
kube-proxy did, so it does not depend on a route to the cluster IP existing.

Which flows are masqueraded (MASQ_MARK set in the service chains,
postrouting masquerades marked packets, as KUBE-MARK-MASQ did):

* The host itself (source is one of its addresses, `fib saddr type local`):
  its source address was chosen for the cluster IP, not for the endpoint, and
  a remote endpoint's node would answer it directly over the underlay. All
  traffic through nat-output is the host's own, so this marks all of it;
  hostNetwork pods are host traffic too.
* Hairpin: the chosen endpoint is the client itself. Without SNAT the
  endpoint would answer itself, bypassing the conntrack entry that undoes
  the DNAT. With br_netfilter the DNATed packet is bridged straight back out
  of the port it came in on, so the pod's bridge port must be in hairpin
  mode (kubelet's --hairpin-mode=hairpin-veth; whoever plugs the pod in).
* External IPs whose chosen endpoint is on another node: that node's pod
  would answer the client directly, not through the node the client talked
  to. Recognised in the endpoint chain by the destination not being the
  cluster IP (the packet is not DNATed yet). Endpoints here (node_name is
  ours) keep the client's address. Endpoints without a node name count as
  remote, which is always safe.

Not masqueraded: a pod talking to a cluster IP, whichever node the endpoint
is on. The DNAT happens on the client's node, in prerouting of traffic from
the pod bridge, and the overlay routes the answer back through that node,
where conntrack undoes it; the endpoint sees the pod's real address. A local
endpoint on the same bridge answers through the bridge, which needs
`net.bridge.bridge-nf-call-iptables=1` (br_netfilter) for conntrack to see
the reply, exactly as kube-proxy required.

The mark is cleared before masquerading so that a packet encapsulated
afterwards (VXLAN keeps the skb mark) is not masqueraded a second time.

Every rule carries a comment with a fingerprint of its text. Reading the
table back (`nft -j list table ip atoll`) yields chains as fingerprint
lists, which compare exactly with what was rendered, whatever the nft
version's way of printing rules.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from agent.proxy.model import ServicePort

FAMILY = "ip"
TABLE = "atoll"
SERVICES_MAP = "services"
NO_ENDPOINTS_MAP = "no-endpoints"
REJECT_CHAIN = "reject-service"
#: kube-proxy's masquerade bit; nothing else on an Atoll node uses packet marks.
MASQ_MARK = 0x4000
MAP_TYPE = ("ipv4_addr", "inet_proto", "inet_service")
DISPATCH_KEY = "ip daddr . meta l4proto . th dport"
SVC_PREFIX = "svc-"
EP_PREFIX = "ep-"

#: (address, "tcp"/"udp"/"sctp", port): one dispatch map key.
Key = tuple[str, str, int]


@dataclass(frozen=True)
class Hook:
    """What makes a chain a base chain."""

    type: str  # "nat" or "filter"
    hook: str
    priority: int
    policy: str = "accept"

    def spec(self) -> str:
        return f"{{ type {self.type} hook {self.hook} priority {self.priority}; policy {self.policy}; }}"


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[str, ...]
    owner: str = ""  # "namespace/name" for a service's chains; "" for the fixed part
    hook: Hook | None = None

    @functools.cached_property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(fingerprint(rule) for rule in self.rules)


@dataclass(frozen=True)
class Element:
    target: str  # the chain the verdict goes to
    owner: str = ""  # stored as the element's comment, so a restart knows whose it is


@dataclass(frozen=True)
class Ruleset:
    chains: Mapping[str, Chain]
    maps: Mapping[str, Mapping[Key, Element]]  # SERVICES_MAP and NO_ENDPOINTS_MAP
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def owners(self) -> set[str]:
        found = {c.owner for c in self.chains.values()}
        found |= {e.owner for elements in self.maps.values() for e in elements.values()}
        found.discard("")
        return found


def fingerprint(rule: str) -> str:
    return hashlib.sha256(rule.encode()).hexdigest()[:16]


def key_text(key: Key) -> str:
    return f"{key[0]} . {key[1]} . {key[2]}"


def chain_owner(name: str) -> str:
    """The "namespace/name" a chain belongs to (from its name); "" for the fixed part."""
    for prefix in (SVC_PREFIX, EP_PREFIX):
        if name.startswith(prefix):
            parts = name[len(prefix) :].split("/")
            if len(parts) >= 2:
                return f"{parts[0]}/{parts[1]}"
    return ""


def svc_chain(port: ServicePort) -> str:
    return f"{SVC_PREFIX}{port.ident}"


def ep_chain(port: ServicePort, ip: str, target: int) -> str:
    return f"{EP_PREFIX}{port.ident}__{ip}/{target}"


def fixed_chains(mark: int = MASQ_MARK) -> list[Chain]:
    """The base chains and the reject chain: the same on every node, whatever the services."""
    nat_dispatch = (f"{DISPATCH_KEY} vmap @{SERVICES_MAP}",)
    reject_dispatch = (f"ct state new {DISPATCH_KEY} vmap @{NO_ENDPOINTS_MAP}",)
    return [
        Chain("nat-prerouting", nat_dispatch, hook=Hook("nat", "prerouting", -110)),
        Chain("nat-output", nat_dispatch, hook=Hook("nat", "output", -110)),
        Chain(
            "nat-postrouting",
            (
                f"meta mark & {mark:#x} == 0 return",
                # Cleared first: an encapsulated copy must not be masqueraded again.
                f"meta mark set meta mark ^ {mark:#x}",
                "masquerade fully-random",
            ),
            hook=Hook("nat", "postrouting", 90),
        ),
        Chain("filter-prerouting", reject_dispatch, hook=Hook("filter", "prerouting", -110)),
        Chain("filter-output", reject_dispatch, hook=Hook("filter", "output", -110)),
        Chain(
            REJECT_CHAIN,
            ("meta l4proto tcp reject with tcp reset", "reject with icmp type port-unreachable"),
        ),
    ]


def _service_chains(port: ServicePort, mark: int) -> list[Chain]:
    set_mark = f"meta mark set meta mark | {mark:#x}"
    endpoints: list[Chain] = []
    for ep in port.endpoints:
        rules = [f"ip saddr {ep.ip} {set_mark}"]
        if not ep.local:
            rules.append(f"ip daddr != {port.cluster_ip} {set_mark}")
        rules.append(f"meta l4proto {port.protocol} dnat to {ep.ip}:{ep.port}")
        endpoints.append(Chain(ep_chain(port, ep.ip, ep.port), tuple(rules), port.owner))
    if len(endpoints) == 1:
        pick = f"goto {endpoints[0].name}"
    else:
        choices = ", ".join(f"{i} : goto {c.name}" for i, c in enumerate(endpoints))
        pick = f"numgen random mod {len(endpoints)} vmap {{ {choices} }}"
    svc = Chain(svc_chain(port), (f"fib saddr type local {set_mark}", pick), port.owner)
    return [svc, *endpoints]


def render(
    ports: Sequence[ServicePort],
    *,
    mark: int = MASQ_MARK,
    cache: MutableMapping[tuple[ServicePort, int], list[Chain]] | None = None,
) -> Ruleset:
    """The whole desired table for these service ports (already resolved for this node).

    `cache` (kept by the caller between renders) maps a service port to its
    chains: an unchanged service is not rendered, nor fingerprinted, again.
    It is left holding only the ports of this render.
    """
    chains = {c.name: c for c in fixed_chains(mark)}
    previous = dict(cache) if cache is not None else {}
    if cache is not None:
        cache.clear()
    maps: dict[str, dict[Key, Element]] = {SERVICES_MAP: {}, NO_ENDPOINTS_MAP: {}}
    claimed: dict[Key, str] = {}
    warnings: list[str] = []
    for port in ports:
        keys: Iterable[Key] = dict.fromkeys(
            [
                *((ip, port.protocol, port.port) for ip in (port.cluster_ip, *port.external_ips)),
                *((ip, port.protocol, port.node_port) for ip in port.node_addresses),
            ]
        )
        if port.endpoints:
            made = previous.get((port, mark)) or _service_chains(port, mark)
            if cache is not None:
                cache[(port, mark)] = made
            chains.update((c.name, c) for c in made)
            target, table = made[0].name, maps[SERVICES_MAP]
        else:
            target, table = REJECT_CHAIN, maps[NO_ENDPOINTS_MAP]
        for key in keys:
            if key in claimed:
                # Two services on one address and port: the first (by name) keeps it, as
                # the kernel can hold only one; the API should not have allowed this.
                warnings.append(f"{port.owner}: {key_text(key)} is already served by {claimed[key]}")
                continue
            claimed[key] = port.owner
            table[key] = Element(target, port.owner)
    return Ruleset(chains, maps, tuple(warnings))
