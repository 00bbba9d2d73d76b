"""Waiting on conditions with deadlines instead of sleeping.

Integration tests observe systems that converge (an engine starting, a pod
coming up, a port starting to answer). Fixed sleeps make such tests both slow
and flaky; polling a predicate until a deadline makes them as fast as the
system allows and, when they fail, says what was last seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Deadline:
    """A point in monotonic time, for loops that need more than `wait_for`."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def sleep(self, interval: float) -> None:
        """Sleep `interval` seconds, never past the deadline."""
        time.sleep(min(interval, self.remaining()))


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
    *,
    ignore: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Exceptions listed in `ignore` (by default any `Exception`, including
    `AssertionError`, so a predicate can be a block of asserts) count as "not
    yet". When `timeout` seconds pass, raise an `AssertionError` naming
    `message` with the last value returned and the last exception raised, so
    a failing test says what it saw rather than just "timed out".
    """
    deadline = Deadline(timeout)
    attempts = 0
    last_value: object = None
    last_error: BaseException | None = None
    while True:
        attempts += 1
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value, last_error = value, None
        if deadline.expired():
            detail = f"last value: {last_value!r}"
            if last_error is not None:
                detail += f"; last error: {type(last_error).__name__}: {last_error}"
            raise AssertionError(
                f"timed out after {timeout:.1f}s ({attempts} attempts) waiting for {message}; {detail}"
            )
        deadline.sleep(interval)
