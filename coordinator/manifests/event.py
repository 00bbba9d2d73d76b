"""The Event kind (v1): what happened to an object, as ``kubectl get events -o yaml`` shows it.

Atoll writes events itself; decoding them back exists for round trips and
for tests. Fields of the newer events.k8s.io API that core/v1 also carries
(``eventTime``, ``reportingComponent``) are accepted and dropped.
"""

from __future__ import annotations

from typing import Any

from atoll import validation
from atoll.v1 import workloads_pb2
from coordinator.manifests import meta
from coordinator.manifests.reader import INT32, Schema, Value
from coordinator.manifests.registry import Codec, Shape

EVENT = Schema.of(
    known=(
        "apiVersion",
        "kind",
        "metadata",
        "involvedObject",
        "reason",
        "message",
        "type",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
    ),
    unsupported=("series", "action", "related"),
    ignored=("eventTime", "reportingComponent", "reportingInstance"),
)
SOURCE = Schema.of(known=("component", "host"))


def decode_v1(root: Value) -> workloads_pb2.Event:
    f = root.fields(EVENT)
    ev = workloads_pb2.Event(metadata=meta.decode(f.get("metadata")))
    if v := f.get("involvedObject"):
        ev.involved_object.CopyFrom(meta.decode_reference(v))
    if v := f.get("reason"):
        ev.reason = v.string()
    if v := f.get("message"):
        ev.message = v.string()
    if v := f.get("type"):
        ev.type = v.string()
    source = f.child_fields("source", SOURCE)
    if v := source.get("component"):
        ev.source_component = v.string()
    if v := source.get("host"):
        ev.source_host = v.string()
    if v := f.get("firstTimestamp"):
        ev.first_timestamp.CopyFrom(v.timestamp())
    if v := f.get("lastTimestamp"):
        ev.last_timestamp.CopyFrom(v.timestamp())
    if v := f.get("count"):
        ev.count = v.integer(INT32)
    return ev


def encode(ev: workloads_pb2.Event) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Event", "metadata": meta.encode(ev.metadata)}
    if ev.HasField("involved_object"):
        out["involvedObject"] = meta.encode_reference(ev.involved_object)
    for key, text in (("reason", ev.reason), ("message", ev.message), ("type", ev.type)):
        if text:
            out[key] = text
    source = {k: v for k, v in (("component", ev.source_component), ("host", ev.source_host)) if v}
    if source:
        out["source"] = source
    if ev.HasField("first_timestamp"):
        out["firstTimestamp"] = meta.encode_time(ev.first_timestamp)
    if ev.HasField("last_timestamp"):
        out["lastTimestamp"] = meta.encode_time(ev.last_timestamp)
    if ev.count:
        out["count"] = ev.count
    return out


def _validate(ev: workloads_pb2.Event) -> validation.Problems:
    defaulted = workloads_pb2.Event()
    defaulted.CopyFrom(ev)
    validation.default_event(defaulted)
    return validation.validate_event(defaulted)


CODEC = Codec(
    kind="Event",
    message=workloads_pb2.Event,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=_validate,
)
