"""Event manifests (v1): what ``get events -o yaml`` prints, and reading it back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from atoll.v1 import meta_pb2, workloads_pb2
from coordinator import manifests
from coordinator.manifests.errors import ManifestError

EVENT = workloads_pb2.Event(
    metadata=meta_pb2.ObjectMeta(name="apache.3f2a", namespace="default"),
    involved_object=workloads_pb2.ObjectReference(kind="Pod", namespace="default", name="apache", uid="5c6a"),
    reason="Scheduled",
    message="Successfully assigned apache to minion-1",
    type="Normal",
    source_component="scheduler",
    source_host="coordinator-1",
    first_timestamp=timestamp_pb2.Timestamp(seconds=1425211200),
    last_timestamp=timestamp_pb2.Timestamp(seconds=1425211260),
    count=2,
)


def error(data: Any) -> str:
    with pytest.raises(ManifestError) as info:
        manifests.load_text(json.dumps(data), "ev.json")
    return str(info.value)


def test_output_looks_like_kubectl() -> None:
    assert manifests.to_dict(EVENT) == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "apache.3f2a", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "apache", "uid": "5c6a"},
        "reason": "Scheduled",
        "message": "Successfully assigned apache to minion-1",
        "type": "Normal",
        "source": {"component": "scheduler", "host": "coordinator-1"},
        "firstTimestamp": "2015-03-01T12:00:00Z",
        "lastTimestamp": "2015-03-01T12:01:00Z",
        "count": 2,
    }
    assert manifests.load_data(manifests.to_dict(EVENT)) == [EVENT]


def test_newer_kubernetes_fields_are_accepted_or_named() -> None:
    data = manifests.to_dict(EVENT) | {"eventTime": None, "reportingComponent": "", "reportingInstance": ""}
    assert manifests.load_data(data) == [EVENT]
    assert (
        error(data | {"series": {"count": 2}})
        == "ev.json: series: Atoll does not support this Kubernetes field"
    )


def test_errors() -> None:
    data = manifests.to_dict(EVENT)
    data["type"] = "Info"
    assert error(data) == 'ev.json: type: must be "Normal" or "Warning", got \'Info\''
    data = manifests.to_dict(EVENT)
    data["involvedObject"]["namespace"] = "shop"
    assert (
        error(data)
        == "ev.json: involvedObject.namespace: 'shop' does not match the event's namespace 'default'"
    )
    data = manifests.to_dict(EVENT)
    del data["involvedObject"]["name"]
    assert error(data) == "ev.json: involvedObject.name: is required"
    data = manifests.to_dict(EVENT)
    data["involvedObject"]["fieldPath"] = "spec.containers{apache}"  # Kubernetes writes it; dropped
    assert manifests.load_data(data) == [EVENT]


TEXT = st.text(max_size=8)
TIMES = st.builds(
    timestamp_pb2.Timestamp, seconds=st.integers(0, 253402300799), nanos=st.integers(0, 999_999_999)
)


@given(
    st.builds(
        workloads_pb2.Event,
        metadata=st.builds(meta_pb2.ObjectMeta, name=TEXT, namespace=TEXT),
        involved_object=st.one_of(
            st.none(),
            st.builds(workloads_pb2.ObjectReference, kind=TEXT, namespace=TEXT, name=TEXT, uid=TEXT),
        ),
        reason=TEXT,
        message=TEXT,
        type=TEXT,
        source_component=TEXT,
        source_host=TEXT,
        first_timestamp=st.one_of(st.none(), TIMES),
        last_timestamp=st.one_of(st.none(), TIMES),
        count=st.integers(-(2**31), 2**31 - 1),
    )
)
def test_decode_of_encode_is_identity(ev: workloads_pb2.Event) -> None:
    assert manifests.load_data(manifests.to_dict(ev), validate=False) == [ev]
