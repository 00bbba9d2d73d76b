"""The top frames of a py-spy speedscope profile, by own time and by time including callees.

    .venv/bin/python bench/profile_top.py PROFILE.json [--top 25] [--filter coordinator/]

bench/hollow.py --profile records one; this names its hottest functions for a note.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib


def top_frames(path: pathlib.Path, top: int, needle: str, thread: str = "MainThread") -> str:
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    own: collections.Counter[int] = collections.Counter()
    inclusive: collections.Counter[int] = collections.Counter()
    total = 0.0
    profiles = doc["profiles"]
    if thread == "MainThread" and not any(thread in p["name"] for p in profiles):
        profiles = profiles[:1]  # py-spy did not name it: the process's first thread is the main one
    elif thread:
        profiles = [p for p in profiles if thread in p["name"]]
    # The event loop's thread by default: py-spy counts gRPC's poller and the idle executor
    # threads, blocked in C, as busy.
    for profile in profiles:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            total += weight
            if stack:
                own[stack[-1]] += weight
            for index in set(stack):
                inclusive[index] += weight

    def name(i: int) -> str:
        f = frames[i]
        return f"{f['name']} ({f.get('file', '?').split('site-packages/')[-1]}:{f.get('line', '?')})"

    lines = [f"{path.name}: {total:.1f} s sampled on threads named {thread or 'anything'!r}"]
    for title, counter in (("own time", own), ("including callees", inclusive)):
        lines.append(f"-- top {top} by {title}")
        shown = 0
        for i, weight in counter.most_common():
            if needle and needle not in frames[i].get("file", ""):
                continue
            lines.append(f"  {100 * weight / total:5.1f}%  {name(i)}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=pathlib.Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--filter", default="", help="only frames whose file contains this")
    parser.add_argument("--thread", default="MainThread", help="only threads whose name has this ('': all)")
    args = parser.parse_args()
    print(top_frames(args.profile, args.top, args.filter, args.thread))


if __name__ == "__main__":
    main()
