"""Which coordinator the agent talks to, and when it moves to another: one at a time, in turn.

The agent is given every coordinator (``--coordinator a:6443,b:6443,c:6443``)
and holds one link, one gRPC channel, to one of them. When that one stops
answering (connection refused, UNAVAILABLE, a deadline; a broken stream makes
the agent heartbeat at once to find out) the link moves to the next in the
list with the same node certificate: every coordinator serves with a
certificate of the one cluster CA and trusts the node's, and they all share
the store, so a dead coordinator costs the agent one reconnect, never a
re-join, and nothing the agent runs depends on which one it is on.

Timing: the hops of a first round wait a short random moment (a fleet whose
coordinator died must not land on the next one in the same millisecond);
once every coordinator has failed in a row, each further hop waits an
exponential backoff with jitter, so a fleet cut off from all of them does not
hammer the network. Any answer resets both.

Stickiness: the agent stays on a coordinator that answers; it never drifts
back to the first of the list (they all serve the same cluster). The last one
that answered is remembered (the agent keeps it in its state dir) so that a
restarted agent starts there and does not first wait on one that is gone.

Why one channel per target rather than gRPC's own multi-address target
(``ipv4:a,b,c`` with pick_first or round_robin): each coordinator serves its
own certificate for its own address, and a multi-address channel verifies
every backend against one server name; host names would need one DNS target
each anyway; round_robin would spread the agent's heartbeats and its watches
over different coordinators; and pick_first hides which coordinator the agent
is on. A channel per target verifies each coordinator under its own name,
keeps the watches where the heartbeats go, and says in the log (and the link
metric) where the agent is.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence

from atoll.backoff import Backoff

log = logging.getLogger(__name__)


class Targets:
    """The rotation over the coordinators' addresses; no I/O, the clock and randomness injected."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        start: str = "",
        first_round_spread: float = 0.5,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        unique = list(dict.fromkeys(a for a in addresses if a))
        if not unique:
            raise ValueError("no coordinator address")
        self.addresses = unique
        self._index = unique.index(start) if start in unique else 0
        self._spread = first_round_spread
        self._backoff = backoff or Backoff(initial=1.0, maximum=30.0, rng=rng)
        self._clock = clock
        self._rng = rng
        self._failures_in_row = 0
        self.last_good = ""
        self.down_since: float | None = None  # when the link was last lost, until an answer
        self.hops = 0

    @property
    def current(self) -> str:
        return self.addresses[self._index]

    @property
    def several(self) -> bool:
        return len(self.addresses) > 1

    def failed(self) -> float:
        """The current coordinator did not answer: move to the next (the same one when it is alone);
        returns how long to wait before calling it."""
        self._failures_in_row += 1
        if self.down_since is None:
            self.down_since = self._clock()
        if self.several:
            self._index = (self._index + 1) % len(self.addresses)
            self.hops += 1
        if self.several and self._failures_in_row < len(self.addresses):
            return self._spread * self._rng()  # the first round: each of the others at once, spread
        return self._backoff.next()  # every one failed in a row: back off

    def answered(self) -> float | None:
        """The current coordinator answered; returns how long the link was down (None: it was not)."""
        self._failures_in_row = 0
        self._backoff.reset()
        self.last_good = self.current
        if self.down_since is None:
            return None
        outage, self.down_since = self._clock() - self.down_since, None
        return outage
