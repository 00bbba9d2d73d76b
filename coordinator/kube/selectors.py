"""Field selectors: `metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`.

The fields Kubernetes lets one select pods by that Atoll's objects have
(kubectl `--field-selector`, `kubectl wait` and the scheduler-style
`spec.nodeName=` watches use them). Only `=`, `==` and `!=` exist, as in
Kubernetes; anything else is refused naming the field, never ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from atoll import errors
from atoll.v1 import pod_pb2

_PHASES = {
    v.number: v.name.removeprefix("POD_PHASE_").capitalize() for v in pod_pb2.PodPhase.DESCRIPTOR.values
}


def _pod_phase(obj: Message) -> str | None:
    if not isinstance(obj, pod_pb2.Pod):
        return None
    return _PHASES.get(obj.status.phase, "")


def _node_name(obj: Message) -> str | None:
    return obj.spec.node_name if isinstance(obj, pod_pb2.Pod) else None


FIELDS: dict[str, Callable[[Message], str | None]] = {
    "metadata.name": lambda o: o.metadata.name,  # type: ignore[attr-defined]
    "metadata.namespace": lambda o: o.metadata.namespace,  # type: ignore[attr-defined]
    "spec.nodeName": _node_name,
    "status.phase": _pod_phase,
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool

    def matches(self, obj: Message) -> bool:
        actual = FIELDS[self.field](obj)
        if actual is None:  # a field this kind does not have
            return self.negate
        return (actual == self.value) != self.negate


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Message) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def name(self) -> str:
        """The single name `metadata.name=X` selects ("" otherwise): a list of one object."""
        for r in self.requirements:
            if r.field == "metadata.name" and not r.negate:
                return r.value
        return ""


def parse(text: str) -> FieldSelector:
    out: list[FieldRequirement] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        op = next((o for o in ("!=", "==", "=") if o in part), "")
        if not op:
            raise errors.InvalidArgument(
                f"invalid field selector {part!r}: expected FIELD=VALUE or FIELD!=VALUE",
                field="fieldSelector",
            )
        field, _, value = part.partition(op)
        negate = op == "!="
        field = field.strip()
        if field not in FIELDS:
            raise errors.InvalidArgument(
                f'field label "{field}" not supported (supported: {", ".join(FIELDS)})', field="fieldSelector"
            )
        out.append(FieldRequirement(field, value.strip(), negate))
    return FieldSelector(tuple(out))
