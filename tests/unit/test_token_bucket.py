"""The per-client token bucket, on a clock the test steps."""

from __future__ import annotations

from atoll.limits import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def takes(bucket: TokenBucket, n: int) -> list[bool]:
    return [bucket.take() for _ in range(n)]


def test_a_full_burst_then_nothing_until_time_passes() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert takes(bucket, 6) == [True] * 5 + [False]
    clock.now += 0.1  # one token at 10/s
    assert takes(bucket, 2) == [True, False]


def test_refills_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    takes(bucket, 5)
    clock.now += 0.35  # 3.5 tokens
    assert takes(bucket, 4) == [True, True, True, False]
    clock.now += 3600  # an idle hour refills the burst, no more
    assert takes(bucket, 6) == [True] * 5 + [False]


def test_fractional_rates() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=0.5, burst=1, clock=clock)
    assert takes(bucket, 2) == [True, False]
    clock.now += 1.0  # half a token
    assert takes(bucket, 1) == [False]
    clock.now += 1.0  # the other half (the refused take spent nothing)
    assert takes(bucket, 2) == [True, False]


def test_a_clock_stepping_back_neither_refills_nor_drains() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    takes(bucket, 3)  # 2 left
    clock.now -= 50
    assert takes(bucket, 3) == [True, True, False]
    clock.now += 50  # back where it was: still no time has passed since the last refill
    assert takes(bucket, 1) == [False]
    clock.now += 0.1
    assert takes(bucket, 2) == [True, False]
