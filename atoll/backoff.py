"""Jittered intervals and exponential backoff, with an injectable random source."""

from __future__ import annotations

import random
from collections.abc import Callable

# How far a periodic wait strays from its interval, either way.
JITTER = 0.1


def jittered(interval: float, fraction: float = JITTER, rng: Callable[[], float] = random.random) -> float:
    """`interval` spread by ±fraction, so that a fleet started together does not beat in step."""
    return interval * (1 - fraction + 2 * fraction * rng())


class Backoff:
    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        fraction: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.fraction = fraction
        self._rng = rng
        self._current = 0.0

    def next(self) -> float:
        self._current = self.initial if self._current == 0 else min(self._current * self.factor, self.maximum)
        return jittered(self._current, self.fraction, self._rng)

    def reset(self) -> None:
        self._current = 0.0
