"""PodStateStore: atomic per-pod files, written only when the record says something new."""

from __future__ import annotations

import pathlib

from agent.pods.state import PodStateStore


def test_an_unchanged_record_is_not_written_again(tmp_path: pathlib.Path) -> None:
    store = PodStateStore(tmp_path)
    record = store.get("uid-1")
    record.container("app").attempt = 0
    store.save(record)
    path = tmp_path / "uid-1" / "state.json"
    first = path.stat().st_ino
    store.save(record)  # a resync that changed nothing: no new file
    assert path.stat().st_ino == first
    record.container("app").attempt = 1
    store.save(record)
    assert path.stat().st_ino != first
    assert PodStateStore(tmp_path).load_all()["uid-1"].containers["app"].attempt == 1


def test_a_loaded_record_saved_unchanged_keeps_its_file(tmp_path: pathlib.Path) -> None:
    store = PodStateStore(tmp_path)
    store.save(store.get("uid-1"))
    path = tmp_path / "uid-1" / "state.json"
    inode = path.stat().st_ino
    again = PodStateStore(tmp_path)  # the agent restarted
    again.save(again.load_all()["uid-1"])
    assert path.stat().st_ino == inode


def test_a_forgotten_pod_is_written_afresh(tmp_path: pathlib.Path) -> None:
    store = PodStateStore(tmp_path)
    record = store.get("uid-1")
    store.save(record)
    path = tmp_path / "uid-1" / "state.json"
    store.forget("uid-1")
    path.unlink()  # its directory went with the pod
    store.save(store.get("uid-1"))
    assert path.exists()


def test_a_file_removed_behind_its_back_is_written_again(tmp_path: pathlib.Path) -> None:
    store = PodStateStore(tmp_path)
    record = store.get("uid-1")
    store.save(record)
    path = tmp_path / "uid-1" / "state.json"
    path.unlink()
    store.save(record)  # unchanged, but the file is gone
    assert path.exists()


def test_records_serialise_as_dataclasses_asdict_would() -> None:
    from dataclasses import asdict

    from agent.pods.state import PodRecord, Termination

    def as_dataclasses_would(record: PodRecord) -> dict[str, object]:
        # The agent-built sandbox's fields are written only when set (an older agent reads the rest).
        return {k: v for k, v in asdict(record).items() if v or not k.startswith("sandbox_") or k in OLD}

    OLD = {"sandbox_attempt", "sandbox_id", "sandbox_error", "sandbox_not_before", "sandbox_backoff_s"}
    record = PodRecord(uid="u", namespace="ns", name="p", start_time=1.5)
    assert record.to_json() == as_dataclasses_would(record)
    record.container("app").attempt = 2
    record.container("app").last_termination = Termination(exit_code=1, reason="Error", started_at=1.0)
    record.container("side").waiting_reason = "ErrImagePull"
    assert record.to_json() == as_dataclasses_would(record)
    assert list(record.to_json()) == list(as_dataclasses_would(record))  # same order: same text, no write
    assert PodRecord.from_json(record.to_json()) == record
    record.sandbox_network, record.sandbox_address = "atoll", "10.1.2.254/24"
    assert list(record.to_json()) == list(as_dataclasses_would(record))
    assert PodRecord.from_json(record.to_json()) == record


def test_a_record_from_a_newer_agent_loads_without_the_fields_it_adds() -> None:
    from agent.pods.state import PodRecord

    data = {"uid": "u", "future_field": 1, "containers": {"app": {"attempt": 3, "future": True}}}
    record = PodRecord.from_json(data)
    assert record.uid == "u" and record.container("app").attempt == 3
