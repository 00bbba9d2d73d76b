"""Where the agent reports what it did to a pod (pulled, started, killed, ...).

Issue #4 sends these to the coordinator as Event objects; until a sink is
injected they go to the log, with the pod as context.
"""

from __future__ import annotations

import logging
from typing import Protocol

from atoll.v1 import pod_pb2

log = logging.getLogger(__name__)


class EventRecorder(Protocol):
    def record(self, pod: pod_pb2.Pod, type_: str, reason: str, message: str) -> None: ...


class LogRecorder:
    def record(self, pod: pod_pb2.Pod, type_: str, reason: str, message: str) -> None:
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        log.log(level, "pod %s/%s: %s: %s", pod.metadata.namespace, pod.metadata.name, reason, message)


class RecordingRecorder:
    """Keeps events in memory, for tests."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def record(self, pod: pod_pb2.Pod, type_: str, reason: str, message: str) -> None:
        self.events.append((pod.metadata.name, type_, reason, message))

    def reasons(self) -> list[str]:
        return [e[2] for e in self.events]


class TeeRecorder:
    """Records to several recorders (the coordinator and a test's, say)."""

    def __init__(self, *recorders: EventRecorder) -> None:
        self._recorders = recorders

    def record(self, pod: pod_pb2.Pod, type_: str, reason: str, message: str) -> None:
        for recorder in self._recorders:
            recorder.record(pod, type_, reason, message)
