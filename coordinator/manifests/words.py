"""Kubernetes words for the API's enums, in both directions.

Protobuf enums are prefixed, upper-case and carry an UNSPECIFIED zero; the
Kubernetes shape uses bare words ("Always", "TCP", "True"). Keeping the tables
in one place lets decode and encode stay exact inverses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from atoll.v1 import meta_pb2, pod_pb2

E = TypeVar("E", bound=int)

RESTART_POLICY: Mapping[str, pod_pb2.RestartPolicy] = {
    "Always": pod_pb2.RESTART_POLICY_ALWAYS,
    "OnFailure": pod_pb2.RESTART_POLICY_ON_FAILURE,
    "Never": pod_pb2.RESTART_POLICY_NEVER,
}

PULL_POLICY: Mapping[str, pod_pb2.PullPolicy] = {
    "Always": pod_pb2.PULL_POLICY_ALWAYS,
    "IfNotPresent": pod_pb2.PULL_POLICY_IF_NOT_PRESENT,
    "Never": pod_pb2.PULL_POLICY_NEVER,
}

# v1beta1 spelled the pull policies with a prefix.
LEGACY_PULL_POLICY: Mapping[str, pod_pb2.PullPolicy] = {
    "PullAlways": pod_pb2.PULL_POLICY_ALWAYS,
    "PullIfNotPresent": pod_pb2.PULL_POLICY_IF_NOT_PRESENT,
    "PullNever": pod_pb2.PULL_POLICY_NEVER,
}

PROTOCOL: Mapping[str, meta_pb2.Protocol] = {
    "TCP": meta_pb2.PROTOCOL_TCP,
    "UDP": meta_pb2.PROTOCOL_UDP,
    "SCTP": meta_pb2.PROTOCOL_SCTP,
}

POD_PHASE: Mapping[str, pod_pb2.PodPhase] = {
    "Pending": pod_pb2.POD_PHASE_PENDING,
    "Running": pod_pb2.POD_PHASE_RUNNING,
    "Succeeded": pod_pb2.POD_PHASE_SUCCEEDED,
    "Failed": pod_pb2.POD_PHASE_FAILED,
    "Unknown": pod_pb2.POD_PHASE_UNKNOWN,
}

CONDITION_STATUS: Mapping[str, meta_pb2.ConditionStatus] = {
    "True": meta_pb2.CONDITION_STATUS_TRUE,
    "False": meta_pb2.CONDITION_STATUS_FALSE,
    "Unknown": meta_pb2.CONDITION_STATUS_UNKNOWN,
}


def reverse(table: Mapping[str, E]) -> dict[int, str]:
    return {number: word for word, number in table.items()}


RESTART_POLICY_WORD = reverse(RESTART_POLICY)
PULL_POLICY_WORD = reverse(PULL_POLICY)
PROTOCOL_WORD = reverse(PROTOCOL)
POD_PHASE_WORD = reverse(POD_PHASE)
CONDITION_STATUS_WORD = reverse(CONDITION_STATUS)


def word(table: Mapping[int, str], number: int) -> str | None:
    """The word for an enum value; None for UNSPECIFIED (left out of the output)."""
    return table.get(number)
