"""Every node's verdict on one pod shape, in a tree that answers a search in O(log n).

Kubernetes' search (percentageOfNodesToScore) examines nodes in round-robin
order from where the previous search stopped, until it has found `want` that
fit, and takes the best of those (the first of equals). Done node by node
that is 420 verdicts per pod at 1,000 nodes, even when all of them are
remembered: most of the scheduler's time in a burst of pods of one shape.

Between two pods of one shape only the nodes that changed (the one the last
pod was assumed on, a node whose status came in) have a different verdict. So
per shape a segment tree over the scheduler's nodes keeps, for every range, how
many nodes fit and which fits best (the first of equals). A search is then a
descent to the position of the `want`-th fitting node from the start and a
best-of over the range up to it; a changed node is one leaf and its path to the
root. The answer, the nodes it counts as examined and the tie-break are the
node-by-node search's (tests/unit/test_scheduler_memo.py pins that on random
clusters).

The verdict of a leaf is what the node-by-node search reads for a pod of this
shape without a node selector: None when the node is not Ready, is cordoned or
turns the pod away (plugins.NODE_STATE_FILTERS), else the weighted score. Those
change only through NodeInfo.add, remove and set_node, which tell the
scheduler (NodeInfo.changed), which marks the leaf stale here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from coordinator.scheduler.nodeinfo import NodeInfo

NEG_INF = -math.inf


class ScoreIndex:
    """One pod shape's verdicts on every node, by position in the scheduler's node order."""

    def __init__(self, infos: Sequence[NodeInfo], verdict: Callable[[NodeInfo], float | None]) -> None:
        self._infos = infos
        self._verdict = verdict
        self.stale: set[int] = set()
        n = len(infos)
        size = 1
        while size < n:
            size *= 2
        self._size = size
        # count: fitting nodes in the range; best: the best score in it (-inf if none fits);
        # at: the position of the first node with that score.
        self._count = [0] * (2 * size)
        self._best = [NEG_INF] * (2 * size)
        self._at = [-1] * (2 * size)
        for i, info in enumerate(infos):
            self._set_leaf(i, verdict(info))
        for node in range(size - 1, 0, -1):
            self._pull(node)

    def _set_leaf(self, i: int, score: float | None) -> None:
        leaf = self._size + i
        if score is None:
            self._count[leaf], self._best[leaf], self._at[leaf] = 0, NEG_INF, -1
        else:
            self._count[leaf], self._best[leaf], self._at[leaf] = 1, score, i

    def _pull(self, node: int) -> None:
        left, right = 2 * node, 2 * node + 1
        count, best = self._count, self._best
        count[node] = count[left] + count[right]
        if best[right] > best[left]:  # equals: the left one, first in order
            best[node], self._at[node] = best[right], self._at[right]
        else:
            best[node], self._at[node] = best[left], self._at[left]

    def refresh(self) -> None:
        """Judge the nodes marked stale afresh."""
        stale, infos, verdict = self.stale, self._infos, self._verdict
        while stale:
            i = stale.pop()
            self._set_leaf(i, verdict(infos[i]))
            node = (self._size + i) // 2
            while node:
                self._pull(node)
                node //= 2

    @property
    def fitting(self) -> int:
        return self._count[1]

    def _fitting_before(self, end: int) -> int:
        """How many nodes fit at positions [0, end)."""
        total, lo, hi = 0, self._size, self._size + end
        count = self._count
        while lo < hi:
            if lo & 1:
                total += count[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                total += count[hi]
            lo //= 2
            hi //= 2
        return total

    def _kth(self, k: int) -> int:
        """The position of the k-th fitting node (1-based) from position 0."""
        node, count = 1, self._count
        while node < self._size:
            node *= 2
            if count[node] < k:
                k -= count[node]
                node += 1
        return node - self._size

    def _best_in(self, first: int, last: int, score: float, at: int) -> tuple[float, int]:
        """The best of (score, at) and positions [first, last], the first of equals in that order."""
        lo, hi = first + self._size, last + self._size + 1
        best, where = self._best, self._at
        right: list[int] = []
        while lo < hi:
            if lo & 1:
                if best[lo] > score:
                    score, at = best[lo], where[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                right.append(hi)
            lo //= 2
            hi //= 2
        for node in reversed(right):
            if best[node] > score:
                score, at = best[node], where[node]
        return score, at

    def search(self, start: int, want: int) -> tuple[int, int]:
        """From position `start` on, round robin: the position of the best of the first `want`
        fitting nodes (-1 if none fits) and how many positions that examined."""
        self.refresh()
        n = len(self._infos)
        fitting = self._count[1]
        if fitting == 0:
            return -1, n
        if fitting < want:  # every node is examined
            score, at = self._best_in(start, n - 1, NEG_INF, -1)
            if start:
                score, at = self._best_in(0, start - 1, score, at)
            return at, n
        before = self._fitting_before(start)
        after = fitting - before  # at positions [start, n)
        if after >= want:
            last = self._kth(before + want)
            return self._best_in(start, last, NEG_INF, -1)[1], last - start + 1
        last = self._kth(want - after)  # the search wraps round to position 0
        score, at = self._best_in(start, n - 1, NEG_INF, -1)
        return self._best_in(0, last, score, at)[1], n - start + last + 1
