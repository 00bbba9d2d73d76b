"""How often agents heartbeat, paced to the fleet's size, and the grace period that goes with it.

Every heartbeat costs the coordinator one call (about 0.7 ms of its core under
a scheduling burst, gRPC's own work included), so a fixed interval makes
heartbeats a large cost as the fleet grows: 1,000 nodes at 3 s are 333 calls a
second, 5,000 nodes 1,667. Nomad answers this with `max_heartbeats_per_second`:
the interval it gives clients stretches to nodes / rate once the fleet is large
enough. The coordinator does the same (`--max-heartbeats-per-second`, 0 keeps
the interval fixed), up to `--max-heartbeat-interval`, and stretches the grace
period by the same factor, so a node is judged after as many missed heartbeats
as in a small cluster.

The interval is told to agents in every Register and Heartbeat answer, by every
coordinator, and each node is judged by the interval it may be sleeping on: the
one it was told last, or the one before when longer, since an agent sleeps out
its current wait before it takes a new interval (NodeHealth.judged_interval).
Several coordinators share it through the node leases, as Kubernetes' Lease
carries its duration. A node this coordinator knows no interval for (an older
coordinator's lease, a restart) is judged by the longest interval told lately,
or the one the fleet's size gives now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from atoll.backoff import JITTER  # an agent sleeps up to 1 + JITTER intervals between heartbeats


class HeartbeatPace:
    def __init__(
        self,
        interval: float,
        grace: float,
        max_rate: float,
        nodes: Callable[[], int],
        *,
        judged: Mapping[str, float] | None = None,
        max_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`interval` and `grace` are the small cluster's (--heartbeat-interval,
        --node-grace-period); `max_rate` heartbeats a second across the fleet (0: no pacing);
        `max_interval` the longest interval ever told; `nodes` counts the registered nodes
        (called on every answer: keep it O(1)); `judged` is the interval each node may be
        sleeping on (NodeHealth.judged_interval)."""
        self.base_interval = interval
        self.base_grace = grace
        self.max_rate = max_rate
        self.max_interval = max(interval, max_interval)
        self._nodes = nodes
        self._judged = judged if judged is not None else {}
        self._clock = clock
        self._told = interval  # the longest interval told recently, by this coordinator
        self._told_until = 0.0

    def interval(self) -> float:
        """The interval to tell an agent now, noted as told. Called from the main loop and the
        heartbeat lane's thread: a lost race between them leaves a shorter hold, by at most
        one answer's worth, inside the grace period's margin."""
        value = self.base_interval
        if self.max_rate > 0:
            value = min(self.max_interval, max(value, self._nodes() / self.max_rate))
        now = self._clock()
        if value >= self._told or now >= self._told_until:
            self._told, self._told_until = value, now + self._hold(value)
        return value

    def interval_ms(self) -> int:
        return int(self.interval() * 1000)

    def _grace_for(self, interval: float) -> float:
        return self.base_grace * interval / self.base_interval

    def _hold(self, interval: float) -> float:
        """How long agents told `interval` may still sleep on it: one more jittered interval
        (they adopt a new one at their next answer), then its grace period."""
        return (1 + JITTER) * interval + self._grace_for(interval)

    def grace(self) -> float:
        """Silence after which a node nothing is known of is judged: the longest interval told
        lately, or the one the fleet's size gives now."""
        self.interval()  # expires an old hold
        return self._grace_for(self._told)

    def grace_of(self, node: str) -> float:
        """Silence after which `node` is judged: by the interval it may be sleeping on."""
        interval = self._judged.get(node)
        return self.grace() if interval is None else self._grace_for(max(interval, self.base_interval))
