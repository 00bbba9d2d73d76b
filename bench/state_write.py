"""What one pod-state save costs the agent, beside the stdlib's way of writing a file atomically.

    .venv/bin/python bench/state_write.py [--records 2000] [--dir /dev/shm]

The agent saves a pod's record on every sync that changes it (agent.pods.state),
and the last assignment on every push (agent.link). Both go through
atoll.files.write_atomic. The baseline is the plain stdlib route the agent
took before: dataclasses.asdict, tempfile.mkstemp beside the file, fsync,
os.replace. Each record is written twice (a new pod's directory, then an
existing one), three rounds each, interleaved. `--dir` on tmpfs shows the
CPU per save; on a disk, fsync dominates both.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import tempfile
import time
from dataclasses import asdict

import psutil

from agent.pods.state import PodRecord, Termination
from atoll import files


def stdlib_save(root: pathlib.Path, record: PodRecord) -> None:
    text = json.dumps(asdict(record))
    path = root / record.uid / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def agent_save(root: pathlib.Path, record: PodRecord) -> None:
    files.write_atomic(
        root / record.uid / "state.json", json.dumps(record.to_json()).encode(), sync_dir=False
    )


def records(n: int) -> list[PodRecord]:
    out = []
    for i in range(n):
        record = PodRecord(uid=f"uid-{i}", namespace="default", name=f"pod-{i}", start_time=time.time())
        container = record.container("main")
        container.attempt, container.container_id = 1, "c" * 64
        container.last_termination = Termination(exit_code=0, reason="Completed", finished_at=time.time())
        out.append(record)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    batch = records(args.records)
    root = pathlib.Path(tempfile.mkdtemp(prefix="atoll-state-write-", dir=args.dir))
    per_save: dict[str, list[float]] = {"stdlib (asdict, mkstemp)": [], "agent (write_atomic)": []}
    try:
        for r in range(3):
            for spent, save in zip(per_save.values(), (stdlib_save, agent_save), strict=True):
                where = root / f"{r}-{len(spent)}-{save.__name__}"
                started = time.perf_counter()
                for record in batch + batch:
                    save(where, record)
                spent.append((time.perf_counter() - started) / (2 * len(batch)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"one pod-state save, {args.records} records written twice, on {args.dir or tempfile.gettempdir()}")
    for label, spent in per_save.items():
        print(f"  {label:26} best {min(spent) * 1e6:7.0f} µs   rounds {[round(s * 1e6) for s in spent]}")
    base, ours = (min(spent) for spent in per_save.values())
    print(f"  ratio agent / stdlib      {ours / base:7.2f}")


if __name__ == "__main__":
    main()
