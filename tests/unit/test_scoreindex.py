"""The scheduler's score tree (scoreindex) against the node-by-node search it stands for."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from coordinator.scheduler.nodeinfo import NodeInfo
from coordinator.scheduler.scoreindex import ScoreIndex
from tests.unit.test_scheduler import node


def node_by_node(scores: list[float | None], start: int, want: int) -> tuple[int, int]:
    """Scheduler.decide's search written out: round robin from `start`, stop at the `want`-th
    node that fits, the first of the best; (-1 if none fits, nodes examined)."""
    n = len(scores)
    best, best_score, examined, found = -1, -math.inf, 0, 0
    for k in range(n):
        i = (start + k) % n
        examined += 1
        score = scores[i]
        if score is None:
            continue
        if score > best_score:
            best, best_score = i, score
        found += 1
        if found == want:
            break
    return best, examined


def reading(infos: list[NodeInfo], scores: list[float | None]) -> Callable[[NodeInfo], float | None]:
    slots = {id(info): i for i, info in enumerate(infos)}
    return lambda info: scores[slots[id(info)]]


def test_searches_as_node_by_node_on_random_verdicts() -> None:
    rng = random.Random(11)
    for n in (1, 2, 3, 7, 16, 33, 100, 257):
        infos = [NodeInfo(node(f"n{i}")) for i in range(n)]
        scores: list[float | None] = [
            None if rng.random() < 0.3 else float(rng.choice((10, 20, 30, 30.5))) for _ in range(n)
        ]
        index = ScoreIndex(infos, reading(infos, scores))
        for _ in range(300):
            if rng.random() < 0.3:  # a node changes: its leaf is judged afresh on the next search
                i = rng.randrange(n)
                scores[i] = None if rng.random() < 0.3 else float(rng.choice((10, 20, 30, 30.5)))
                index.stale.add(i)
            start, want = rng.randrange(n), rng.randint(1, n + 1)
            assert index.search(start, want) == node_by_node(scores, start, want), (n, start, want)
            assert index.fitting == sum(s is not None for s in scores)


def test_ties_go_to_the_first_from_the_start_across_the_wrap() -> None:
    infos = [NodeInfo(node(f"n{i}")) for i in range(5)]
    index = ScoreIndex(infos, lambda info: 50.0)
    assert index.search(3, 5) == (3, 5)  # all alike: the start itself
    assert index.search(3, 4) == (3, 4)  # stops at position 1 after the wrap
    assert index.search(4, 2) == (4, 2)


def test_nothing_fits() -> None:
    infos = [NodeInfo(node(f"n{i}")) for i in range(4)]
    assert ScoreIndex(infos, lambda info: None).search(2, 3) == (-1, 4)
    assert ScoreIndex([], lambda info: 1.0).search(0, 1) == (-1, 0)
