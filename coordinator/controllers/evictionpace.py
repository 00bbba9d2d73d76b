"""How fast silent nodes may lose their pods, zone by zone (Kubernetes' node lifecycle rules).

Declaring a node's pods lost moves its work elsewhere, and that work loads the
coordinator and the other nodes. Without a pace, a burst that delays
heartbeats (a scale-up of 10,000 pods under bench/hollow.py turned 473 of
1,000 healthy nodes silent) evicts hundreds of nodes at once; their
replacements are another burst, and the fleet churns for minutes. Kubernetes'
node controller guards against this, and we follow its rules and defaults:

* Evictions go through a token bucket per zone (`--node-eviction-rate`, 0.1
  nodes/s, burst 1): one node at once, then one every ten seconds.
* A zone where at least `--unhealthy-zone-threshold` (55 %) of the nodes, and
  more than two, are silent is partially disrupted: it evicts at
  `--secondary-node-eviction-rate` (0.01/s) when it has more than
  `--large-cluster-size-threshold` (50) nodes, and not at all when smaller.
* A zone where every node is silent is fully disrupted. If every zone is, the
  coordinator is more likely cut off than the whole fleet dead: nothing is
  evicted until some node is heard again.

A zone is a node's `topology.kubernetes.io/zone` label; nodes without one share
the zone "".
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

ZONE_LABEL = "topology.kubernetes.io/zone"


class ZoneState(enum.Enum):
    NORMAL = "Normal"
    PARTIAL_DISRUPTION = "PartialDisruption"
    FULL_DISRUPTION = "FullDisruption"


@dataclass(frozen=True)
class EvictionPolicy:
    rate: float = 0.1  # nodes per second in a healthy zone
    secondary_rate: float = 0.01  # in a partially disrupted large zone
    unhealthy_threshold: float = 0.55  # share of silent nodes that makes a zone partially disrupted
    large_zone: int = 50  # a partially disrupted zone this size or smaller stops evicting


def zone_state(nodes: int, silent: int, threshold: float) -> ZoneState:
    if nodes > 0 and silent == nodes:
        return ZoneState.FULL_DISRUPTION
    if silent > 2 and silent / nodes >= threshold:
        return ZoneState.PARTIAL_DISRUPTION
    return ZoneState.NORMAL


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = now

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = rate

    def take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


class EvictionPacer:
    """Decides, at each node-lifecycle round, whether a node due for eviction may go now."""

    def __init__(self, policy: EvictionPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self.states: dict[str, ZoneState] = {}
        self.all_disrupted = False

    def observe(self, nodes: Iterable[tuple[str, bool]]) -> None:
        """This round's nodes as (zone, silent): sets each zone's state and eviction rate."""
        totals: dict[str, list[int]] = {}
        for zone, silent in nodes:
            counts = totals.setdefault(zone, [0, 0])
            counts[0] += 1
            counts[1] += silent
        now = self._clock()
        states = {z: zone_state(n, s, self.policy.unhealthy_threshold) for z, (n, s) in totals.items()}
        all_disrupted = bool(states) and all(s is ZoneState.FULL_DISRUPTION for s in states.values())
        if all_disrupted != self.all_disrupted:
            if all_disrupted:
                log.warning(
                    "every node is silent: this coordinator is more likely cut off than the fleet "
                    "down; evictions stop until a node is heard again"
                )
            else:
                log.info("nodes are heard again: evictions resume")
        self.all_disrupted = all_disrupted
        for zone, state in states.items():
            if self.states.get(zone) != state:
                n, s = totals[zone]
                log.warning(
                    "zone %r is %s: %d of %d nodes silent, evictions at %.3g nodes/s",
                    zone,
                    state.value,
                    s,
                    n,
                    self._rate(state, n),
                    extra={"zone": zone},
                )
            bucket = self._buckets.get(zone)
            rate = self._rate(state, totals[zone][0])
            if bucket is None:
                self._buckets[zone] = TokenBucket(rate, 1.0, now)
            elif bucket.rate != rate:
                bucket.set_rate(rate, now)
        for zone in set(self._buckets) - set(states):
            del self._buckets[zone]
        self.states = states

    def _rate(self, state: ZoneState, nodes: int) -> float:
        if state is ZoneState.PARTIAL_DISRUPTION:
            return self.policy.secondary_rate if nodes > self.policy.large_zone else 0.0
        return self.policy.rate

    def admit(self, zone: str) -> bool:
        """May one more node of `zone` lose its pods now? Spends the zone's token if so."""
        if self.all_disrupted:
            return False
        bucket = self._buckets.get(zone)
        return bucket is not None and bucket.rate > 0 and bucket.take(self._clock())
