"""The coordinator's garbage-collection policy and the pause figures it serves."""

from __future__ import annotations

import argparse
import gc

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from atoll import errors, gcpolicy
from atoll.metrics import GCPauseMetrics
from coordinator import config as coordinator_config


class RecordingCollector:
    """A stand-in for the gc module: records what a policy asks of it."""

    def __init__(self) -> None:
        self.threshold = (700, 10, 10)
        self.calls: list[str] = []
        self.frozen = 0

    def set_threshold(self, threshold0: int, threshold1: int = 10, threshold2: int = 10, /) -> None:
        self.calls.append("set_threshold")
        self.threshold = (threshold0, threshold1, threshold2)

    def get_threshold(self) -> tuple[int, int, int]:
        return self.threshold

    def freeze(self) -> None:
        self.calls.append("freeze")
        self.frozen = 42

    def get_freeze_count(self) -> int:
        return self.frozen

    def collect(self, generation: int = 2, /) -> int:
        self.calls.append("collect")
        return 0

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")
        self.frozen = 0


def test_policy_sets_thresholds_and_returns_the_old_ones() -> None:
    fake = RecordingCollector()
    assert gcpolicy.GCPolicy().apply(fake) == (700, 10, 10)
    assert fake.threshold == (gcpolicy.DEFAULT_YOUNG, 20, 20)


def test_young_zero_keeps_the_interpreters_thresholds() -> None:
    fake = RecordingCollector()
    gcpolicy.GCPolicy(young=0).apply(fake)
    assert fake.calls == [] and fake.threshold == (700, 10, 10)


def test_freeze_reports_how_many_objects_it_left_out() -> None:
    fake = RecordingCollector()
    assert gcpolicy.freeze_start_up(fake) == 42
    assert fake.calls == ["collect", "freeze"]  # start-up's garbage is not frozen with the rest


def test_pauses_time_each_collection_by_generation() -> None:
    ticks = iter([1.0, 1.25, 2.0, 2.05, 3.0, 3.5])
    pauses = gcpolicy.GCPauses(clock=lambda: next(ticks))
    callbacks: list[object] = []
    pauses.install(callbacks).install(callbacks)
    assert callbacks == [pauses]  # installed once however often it is asked
    for generation in (2, 0, 2):
        pauses("start", {"generation": generation})
        pauses("stop", {"generation": generation, "collected": 0, "uncollectable": 0})
    old, young = pauses.generations[2], pauses.generations[0]
    assert (old.collections, young.collections) == (2, 1)
    assert old.seconds == pytest.approx(0.75) and old.longest == pytest.approx(0.5)
    assert young.longest == pytest.approx(0.05)
    pauses.uninstall()
    assert callbacks == []


def test_pauses_see_real_collections_and_serve_them() -> None:
    pauses = gcpolicy.GCPauses().install()
    try:
        gc.collect()
    finally:
        pauses.uninstall()
    assert pauses not in gc.callbacks
    assert pauses.generations[2].collections >= 1
    registry = CollectorRegistry()
    registry.register(GCPauseMetrics(pauses))
    text = generate_latest(registry).decode()
    assert 'atoll_gc_collections_total{generation="2"}' in text
    assert 'atoll_gc_pause_seconds_total{generation="0"}' in text
    assert "atoll_gc_longest_pause_seconds" in text


def test_governing_leaves_the_collector_as_it_found_it() -> None:
    fake = RecordingCollector()
    callbacks: list[object] = []
    policy = gcpolicy.GCPolicy()
    with pytest.raises(RuntimeError), gcpolicy.governing(policy, fake, callbacks) as (pauses, may_freeze):
        assert may_freeze and callbacks == [pauses] and fake.threshold[0] == gcpolicy.DEFAULT_YOUNG
        gcpolicy.freeze_start_up(fake)
        raise RuntimeError("the serve failed")
    assert callbacks == [] and fake.threshold == (700, 10, 10) and fake.frozen == 0


def test_governing_never_thaws_what_someone_else_froze() -> None:
    fake = RecordingCollector()
    fake.frozen = 7
    with gcpolicy.governing(gcpolicy.GCPolicy(), fake, []) as (_, may_freeze):
        assert not may_freeze
    assert fake.frozen == 7 and "unfreeze" not in fake.calls


def _serve_config(environ: dict[str, str]) -> coordinator_config.ServeConfig:
    parser = argparse.ArgumentParser()
    coordinator_config.add_serve_flags(parser)
    return coordinator_config.load_serve(parser.parse_args([]), environ=environ)


def test_threshold_is_configured_and_checked() -> None:
    assert _serve_config({}).gc_young_threshold == gcpolicy.DEFAULT_YOUNG
    assert _serve_config({"ATOLL_COORDINATOR_GC_YOUNG_THRESHOLD": "0"}).gc_young_threshold == 0
    for wrong in ("-1", str(gcpolicy.MAX_THRESHOLD + 1)):
        with pytest.raises(errors.InvalidArgument, match="gc_young_threshold"):
            _serve_config({"ATOLL_COORDINATOR_GC_YOUNG_THRESHOLD": wrong})
