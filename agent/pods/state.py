"""What the agent remembers about each pod beyond what container labels say.

Labels carry the attempt number of every container, so restart counts survive
an agent restart. This file-backed state adds what labels cannot hold: the
attempt of a container that someone removed behind our back (so its
recreation counts as a restart), crash-loop and image-pull backoff, and the
last termination for `lastState`. One JSON file per pod, replaced atomically.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from dataclasses import dataclass, field, fields
from typing import Any

from atoll import files

log = logging.getLogger(__name__)


@dataclass
class Termination:
    exit_code: int
    reason: str
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    container_id: str = ""


@dataclass
class ContainerRecord:
    attempt: int = -1  # -1: never created
    container_id: str = ""
    backoff_s: float = 0.0
    not_before: float = 0.0
    # Why the container cannot run right now (ErrImagePull, CreateContainerError, ...).
    waiting_reason: str = ""
    waiting_message: str = ""
    last_termination: Termination | None = None
    # Set once a container that will not be restarted is gone for good.
    lost: bool = False

    def to_json(self) -> dict[str, Any]:
        """As dataclasses.asdict, without its deep copy of every value (it ran on every sync)."""
        data = {name: getattr(self, name) for name in _CONTAINER_FIELDS}
        if self.last_termination is not None:
            data["last_termination"] = {
                name: getattr(self.last_termination, name) for name in _TERMINATION_FIELDS
            }
        return data


@dataclass
class PodRecord:
    uid: str
    namespace: str = ""
    name: str = ""
    sandbox_attempt: int = -1
    sandbox_id: str = ""
    sandbox_error: str = ""
    sandbox_not_before: float = 0.0
    sandbox_backoff_s: float = 0.0
    # When the agent first worked on the pod (epoch seconds): the pod's start time.
    start_time: float = 0.0
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    # Extra networks (SR-IOV): whether VFs are attached, and the retry backoff of a failed attach.
    networks_attached: bool = False
    networks_backoff_s: float = 0.0
    # A sandbox network the agent built (agent.network.sandbox): the sandbox it built it in, and
    # the pod's address there (CIDR).
    sandbox_plumbed: str = ""
    sandbox_network: str = ""
    sandbox_address: str = ""

    def to_json(self) -> dict[str, Any]:
        """As dataclasses.asdict (the same keys in the same order), a few times faster. The agent's
        sandbox network fields only when set, so that an agent from before them still reads the
        records of pods whose networks the engine built (an agent downgraded)."""
        data = {name: getattr(self, name) for name in _POD_FIELDS}
        data["containers"] = {name: c.to_json() for name, c in self.containers.items()}
        for name in _OPTIONAL_POD_FIELDS:
            if not data[name]:
                del data[name]
        return data

    def container(self, name: str) -> ContainerRecord:
        return self.containers.setdefault(name, ContainerRecord())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodRecord:
        containers = {}
        for name, raw in data.get("containers", {}).items():
            term = raw.pop("last_termination", None)
            record = ContainerRecord(**{k: v for k, v in raw.items() if k in _CONTAINER_FIELD_SET})
            record.last_termination = Termination(**term) if term else None
            containers[name] = record
        # Fields this agent does not know (a record from a newer one) are left out, not fatal.
        data = {k: v for k, v in data.items() if k in _POD_FIELD_SET}
        data["containers"] = containers
        return cls(**data)


# Each record's fields, read once (dataclasses.fields per call cost as much as the copy itself);
# the values are flat (str, int, float, bool), Termination aside.
_TERMINATION_FIELDS = tuple(f.name for f in fields(Termination))
_CONTAINER_FIELDS = tuple(f.name for f in fields(ContainerRecord))
_CONTAINER_FIELD_SET = frozenset(_CONTAINER_FIELDS)
_POD_FIELDS = tuple(f.name for f in fields(PodRecord))
_POD_FIELD_SET = frozenset(_POD_FIELDS)
_OPTIONAL_POD_FIELDS = ("sandbox_plumbed", "sandbox_network", "sandbox_address")


class PodStateStore:
    """PodRecords under `<state-dir>/pods/<uid>/state.json`."""

    def __init__(self, pods_dir: pathlib.Path) -> None:
        self._dir = pods_dir
        self._dir_name = os.fspath(pods_dir)
        self._records: dict[str, PodRecord] = {}
        # What each pod's file holds: a sync saves its record every time (resyncs included),
        # and most find nothing changed, so an unchanged record costs no file, no fsync.
        self._written: dict[str, str] = {}

    def load_all(self) -> dict[str, PodRecord]:
        self._dir.mkdir(parents=True, exist_ok=True)
        for path in self._dir.glob("*/state.json"):
            try:
                text = path.read_text()
                record = PodRecord.from_json(json.loads(text))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable pod state %s: %s", path, exc)
                continue
            self._records[record.uid] = record
            self._written[record.uid] = text
        return dict(self._records)

    def get(self, uid: str) -> PodRecord:
        record = self._records.get(uid)
        if record is None:
            record = self._records[uid] = PodRecord(uid=uid)
        return record

    def known(self) -> set[str]:
        return set(self._records)

    def save(self, record: PodRecord) -> None:
        """Write `record` through (atomically, fsync'd) unless its file already says the same."""
        text = json.dumps(record.to_json())
        # A string, not a pathlib.Path: joining and converting Paths cost more than the write.
        path = f"{self._dir_name}/{record.uid}/state.json"
        if self._written.get(record.uid) == text and os.path.exists(path):
            return  # (exists: a file removed behind our back is written again)
        # The directory is not fsynced: a power cut that undoes the rename brings back the
        # previous record, and what it lacks the agent learns again from the containers' labels.
        files.write_atomic(path, text.encode(), sync_dir=False)
        self._written[record.uid] = text

    def forget(self, uid: str) -> None:
        self._records.pop(uid, None)
        self._written.pop(uid, None)
