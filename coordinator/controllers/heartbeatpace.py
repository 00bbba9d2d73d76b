"""How often agents heartbeat, paced to the fleet's size, and the grace period that goes with it.

Every heartbeat costs the coordinator one call (about 0.7 ms of its core under
a scheduling burst, gRPC's own work included), so a fixed interval makes
heartbeats the coordinator's largest cost as the fleet grows: 1,000 nodes at
3 s are 333 calls a second, 5,000 nodes 1,667. Nomad answers this with
`max_heartbeats_per_second`: the interval it gives clients stretches to
nodes / rate once the fleet is large enough. The coordinator does the same
(`--max-heartbeats-per-second`, 0 keeps the interval fixed) and stretches the
grace period by the same factor, so a node is judged after as many missed
heartbeats as in a small cluster.

The interval is told to agents in every Register and Heartbeat answer. When the
fleet shrinks, agents learn the shorter interval only at their next heartbeat,
so the grace period stays that of the longest interval told until every agent
told it has had a grace period to hear the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class HeartbeatPace:
    def __init__(
        self,
        interval: float,
        grace: float,
        max_rate: float,
        nodes: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`interval` and `grace` are the small cluster's (--heartbeat-interval,
        --node-grace-period); `max_rate` heartbeats a second across the fleet (0: no pacing);
        `nodes` counts the registered nodes (called on every answer: keep it O(1))."""
        self.base_interval = interval
        self.base_grace = grace
        self.max_rate = max_rate
        self._nodes = nodes
        self._clock = clock
        self._held = interval  # the longest interval told recently
        self._held_until = 0.0

    def interval(self) -> float:
        """The interval to tell an agent now. Safe from any thread: it reads one count."""
        if self.max_rate <= 0:
            return self.base_interval
        return max(self.base_interval, self._nodes() / self.max_rate)

    def interval_ms(self) -> int:
        return int(self.interval() * 1000)

    def _grace_for(self, interval: float) -> float:
        return self.base_grace * interval / self.base_interval

    def grace(self) -> float:
        """Silence after which a node is judged, for the longest interval agents may still hold.
        Called by the node lifecycle (one thread) on every check."""
        now = self._clock()
        current = self.interval()
        if current >= self._held or now >= self._held_until:
            self._held = current
            self._held_until = now + self._grace_for(current)
        return self._grace_for(self._held)
