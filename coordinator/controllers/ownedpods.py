"""One replication controller's pods, with the counts its sync needs kept current per pod event.

A sync used to walk every pod the controller owns to count the active and the
ready ones. With a 10,000-replica controller that walk was 40 % of the
coordinator's time during a scale-up (py-spy under bench/hollow.py): every
status report re-queued the controller, and each sync cost 10,000 selector
matches and condition scans. Each pod event now files the one pod it is about,
and a sync reads set sizes. Only a change of the controller's selector
re-files all of its pods, once.
"""

from __future__ import annotations

from collections.abc import Mapping

from atoll import labels
from atoll.v1 import pod_pb2

TERMINAL = (pod_pb2.POD_PHASE_SUCCEEDED, pod_pb2.POD_PHASE_FAILED)


def is_active(pod: pod_pb2.Pod) -> bool:
    return pod.status.phase not in TERMINAL


def is_ready(pod: pod_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == 1 for c in pod.status.conditions)


def is_lost(pod: pod_pb2.Pod) -> bool:
    """Declared lost by the node lifecycle controller: Failed with reason NodeLost."""
    return pod.status.phase == pod_pb2.POD_PHASE_FAILED and pod.status.reason == "NodeLost"


class OwnedPods:
    def __init__(self) -> None:
        self.pods: dict[str, pod_pb2.Pod] = {}  # by namespace/name
        self.active: set[str] = set()  # not terminal, and matching the controller's selector
        self.ready: set[str] = set()  # the active ones with Ready=True
        self.lost: set[str] = set()
        self._selector: dict[str, str] | None = None  # None: not known yet, nothing counted
        self.matcher = labels.Selector()  # the selector's matcher, for the controller's orphans too

    def __len__(self) -> int:
        return len(self.pods)

    def put(self, key: str, pod: pod_pb2.Pod) -> None:
        self.pods[key] = pod
        self._file(key, pod)

    def remove(self, key: str) -> None:
        self.pods.pop(key, None)
        self.active.discard(key)
        self.ready.discard(key)
        self.lost.discard(key)

    def use_selector(self, selector: Mapping[str, str]) -> None:
        """Count against this selector from now on (the controller's current one)."""
        if self._selector is not None and self._selector == selector:
            return
        self._selector = dict(selector)
        self.matcher = labels.Selector.from_map(selector)
        for key, pod in self.pods.items():
            self._file(key, pod)

    def active_pods(self) -> list[pod_pb2.Pod]:
        return [self.pods[k] for k in self.active]

    def lost_pods(self) -> list[pod_pb2.Pod]:
        return [self.pods[k] for k in self.lost]

    def _file(self, key: str, pod: pod_pb2.Pod) -> None:
        if is_lost(pod):
            self.lost.add(key)
        else:
            self.lost.discard(key)
        if self._selector is None:
            return  # filed when the controller's selector is known (its first sync)
        if is_active(pod) and self.matcher.matches(pod.metadata.labels):
            self.active.add(key)
            if is_ready(pod):
                self.ready.add(key)
            else:
                self.ready.discard(key)
        else:
            self.active.discard(key)
            self.ready.discard(key)
