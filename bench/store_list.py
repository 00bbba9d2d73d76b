"""What one page of a big list costs the store's in-memory side, against reading the whole list per page.

    .venv/bin/python bench/store_list.py [--pods 10000] [--page 500] [--rounds 20]

A MemoryState (what the SQLite, memory and etcd stores list from) holds
--pods pods with random names (a replication controller's), and a few writes
land after the list's snapshot, so every page but the first is read at an
older revision, rolled back through the history, as the API's pages are. Timed,
--rounds times each, in this process:

  whole list      list_at of every pod, as a full list reads it
  pages (ranges)  every page of --page through list_range: each page's keys alone
  pages (whole)   every page by reading the whole list and cutting the page out
                  of it, as Registry.list_page did before list_range (the baseline)
"""

from __future__ import annotations

import argparse
import bisect
import random
import statistics
import string
import time

from common import ROOT, machine  # type: ignore[import-not-found]  # noqa: F401 - puts the repo on sys.path

from coordinator.store.base import KV, StoreEvent
from coordinator.store.state import MemoryState

PREFIX = "/pods/default/"


def filled(pods: int) -> tuple[MemoryState, int]:
    """A state with `pods` pods and the revision of a snapshot that 50 later writes moved past."""
    rng = random.Random(1)
    state = MemoryState(history_limit=pods * 2)
    names = {"web-" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=5)) for _ in range(pods)}
    events = [
        StoreEvent("put", KV(PREFIX + name, b"x" * 800, rev, rev), None)
        for rev, name in enumerate(sorted(names, key=lambda _: rng.random()), start=1)
    ]
    state.apply(events)
    snapshot = state.revision
    later = [
        StoreEvent("put", KV(e.kv.key, b"y" * 800, e.kv.create_revision, snapshot + i), e.kv)
        for i, e in enumerate(events[:50], start=1)
    ]
    state.apply(later)
    return state, snapshot


def timed(fn: object, rounds: int) -> float:
    """Median milliseconds of `fn()` over `rounds`."""
    assert callable(fn)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(machine())
    state, snapshot = filled(args.pods)

    def whole() -> None:
        state.list_at(PREFIX, snapshot)

    def by_ranges() -> None:
        after = ""
        while True:
            got = state.list_range(PREFIX, snapshot, after, args.page)
            if not got.more:
                return
            after = got.kvs[-1].key

    def by_whole_lists() -> None:
        after = ""
        while True:
            kvs, _ = state.list_at(PREFIX, snapshot)
            i = bisect.bisect_right(kvs, after, key=lambda kv: kv.key) if after else 0
            page = kvs[i : i + args.page]
            if i + len(page) >= len(kvs):
                return
            after = page[-1].key

    pages = -(-args.pods // args.page)
    print(
        f"{args.pods} pods, pages of {args.page} ({pages} pages), at a revision 50 writes old; median of {args.rounds}"
    )
    t_whole = timed(whole, args.rounds)
    t_ranges = timed(by_ranges, args.rounds)
    t_baseline = timed(by_whole_lists, args.rounds)
    print(f"  whole list                 {t_whole:8.2f} ms")
    print(f"  every page, ranges         {t_ranges:8.2f} ms  ({t_ranges / pages:.3f} ms a page)")
    print(
        f"  every page, whole lists    {t_baseline:8.2f} ms  ({t_baseline / pages:.3f} ms a page; baseline)"
    )
    print(f"  ratio ranges / baseline    {t_ranges / t_baseline:8.3f}")


if __name__ == "__main__":
    main()
