"""The cluster's default namespace quota: Kubernetes' ResourceQuota `hard` keys, one
set of limits that every namespace gets (`--namespace-quota`).

Keys: `pods` (pods not yet Succeeded or Failed), `replicationcontrollers`,
`services`, `requests.cpu` and `requests.memory` (the sums of the containers'
requests of those pods; `cpu` and `memory` are accepted as aliases, as in
Kubernetes). A key left out is unlimited.

Enforced at the registry's create, so pods a replication controller makes are
counted like pods a user makes: the controller's creates beyond the quota fail
(RESOURCE_EXHAUSTED, "exceeded quota") and it retries later. Usage comes from
the informers' caches, updated as their events arrive; a create reserves its
share synchronously (no await between check and reservation), and the
reservation turns into usage when the informer sees the object, or is dropped
if the write fails, so concurrent creates cannot overshoot.

A namespace's own ResourceQuota objects (the same keys, written through the
API by admins) replace the default for that namespace; with several, each key's
smallest limit holds.
"""

from __future__ import annotations

import collections
import decimal
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from atoll import errors
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator.objects.informer import Handler, Informer, object_key

PODS, RCS, SERVICES, CPU, MEMORY = (
    "pods",
    "replicationcontrollers",
    "services",
    "requests.cpu",
    "requests.memory",
)
_ALIASES = {"cpu": CPU, "memory": MEMORY}
_KEYS = (PODS, RCS, SERVICES, CPU, MEMORY)

# The quantity forms a quota needs ("4", "500m", "1.5", "8Gi", "1G"). The full parser,
# coordinator.manifests.quantity, sits above this package (manifests -> auth -> objects).
_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<suffix>m|k|M|G|T|Ki|Mi|Gi|Ti)?")
_SCALE: dict[str | None, decimal.Decimal | int] = {
    None: 1,
    "m": decimal.Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _quantity(value: str, scale: int) -> int:
    m = _QUANTITY.fullmatch(value)
    if m is None:
        raise ValueError("not a quantity")
    amount = decimal.Decimal(m["number"]) * decimal.Decimal(_SCALE[m["suffix"]]) * scale
    return int(amount.to_integral_value(rounding=decimal.ROUND_CEILING))


def parse_hard(entries: Sequence[str], what: str = "namespace_quota") -> dict[str, int]:
    """`["pods=100", "requests.memory=8Gi"]` -> {"pods": 100, "requests.memory": 8589934592}."""
    hard: dict[str, int] = {}
    for i, entry in enumerate(entries):
        name, sep, value = entry.partition("=")
        name = _ALIASES.get(name.strip(), name.strip())
        if not sep or name not in _KEYS:
            raise errors.InvalidArgument(
                f"expected KEY=QUANTITY with KEY one of {', '.join(_KEYS)}, got {entry!r}",
                field=f"{what}[{i}]",
            )
        try:
            hard[name] = _quantity(value.strip(), 1000 if name == CPU else 1)
        except ValueError as exc:
            raise errors.InvalidArgument(f"{name}: {exc}: {value!r}", field=f"{what}[{i}]") from None
    return hard


def usage_of(obj: Message) -> dict[str, int]:
    """What one object counts against its namespace's quota."""
    if isinstance(obj, pod_pb2.Pod):
        if obj.status.phase in (pod_pb2.POD_PHASE_SUCCEEDED, pod_pb2.POD_PHASE_FAILED):
            return {}
        cpu = memory = 0
        for c in obj.spec.containers:  # one pass, no generators: every pod event comes here
            requests = c.resources.requests
            cpu += requests.cpu_millis
            memory += requests.memory_bytes
        return {PODS: 1, CPU: cpu, MEMORY: memory}
    if isinstance(obj, workloads_pb2.ReplicationController):
        return {RCS: 1}
    if isinstance(obj, workloads_pb2.Service):
        return {SERVICES: 1}
    return {}


@dataclass
class _Reservation:
    namespace: str
    amounts: dict[str, int]


class NamespaceQuota:
    def __init__(
        self, hard: dict[str, int], informers: Sequence[Informer], quotas: Informer | None = None
    ) -> None:
        self.hard = hard
        self._quotas = quotas
        self._parsed: dict[tuple[str, int], dict[str, int]] = {}  # (key, resource version) -> hard
        self._used: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._counted: dict[str, dict[str, int]] = {}  # object key -> what it counts
        self._reserved: dict[str, _Reservation] = {}  # object key -> a create in flight
        # The reservations' sum per namespace, kept as they come and go: a create checks its
        # namespace in a few dict reads, not by walking every create in flight (hundreds while a
        # controller scales up).
        self._in_flight: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._informers = {i.info.message: i for i in informers}
        for informer in informers:
            informer.add_handler(self._handler(informer))

    def _handler(self, informer: Informer) -> Handler:
        def handle(type_: str, obj: Message, old: Message | None) -> None:
            key = object_key(informer.info, obj)
            self._drop_reservation(key)
            namespace = obj.metadata.namespace  # type: ignore[attr-defined]
            after = {} if type_ == "DELETED" else usage_of(obj)
            if self._counted.get(key) == after and after:
                return  # a status report, most often: it counts what it counted
            before = self._counted.pop(key, {})
            used = self._used[namespace]
            used.subtract(before)
            used.update(after)
            if after:
                self._counted[key] = after

        return handle

    def hard_for(self, namespace: str) -> dict[str, int]:
        """The limits in force in `namespace`: its ResourceQuota objects' (each key's smallest), else
        the cluster default."""
        if self._quotas is None:
            return self.hard
        limits: dict[str, int] = {}
        found = False
        for obj in self._quotas.items():
            if obj.metadata.namespace != namespace:  # type: ignore[attr-defined]
                continue
            found = True
            version = (object_key(self._quotas.info, obj), obj.metadata.resource_version)  # type: ignore[attr-defined]
            parsed = self._parsed.get(version)
            if parsed is None:
                hard = obj.spec.hard  # type: ignore[attr-defined]
                parsed = self._parsed[version] = parse_hard([f"{k}={v}" for k, v in sorted(hard.items())])
            for key, value in parsed.items():
                limits[key] = min(value, limits.get(key, value))
        return limits if found else self.hard

    def _drop_reservation(self, key: str, only: _Reservation | None = None) -> None:
        reservation = self._reserved.get(key)
        if reservation is None or (only is not None and reservation is not only):
            return
        del self._reserved[key]
        self._in_flight[reservation.namespace].subtract(reservation.amounts)

    def used(self, namespace: str) -> dict[str, int]:
        total = collections.Counter(self._used[namespace])
        total.update(self._in_flight[namespace])
        return {k: v for k, v in total.items() if v}

    def reserve(self, key: str, obj: Message) -> Callable[[], None] | None:
        """Check `obj`'s create against the quota and hold its share; the callback gives it back."""
        if type(obj) not in self._informers:
            return None
        namespace = obj.metadata.namespace  # type: ignore[attr-defined]
        hard = self.hard_for(namespace)
        amounts = {k: v for k, v in usage_of(obj).items() if k in hard and v}
        if not amounts:
            return None
        counted, in_flight = self._used[namespace], self._in_flight[namespace]
        over = [k for k, v in amounts.items() if counted[k] + in_flight[k] + v > hard[k]]
        if over:
            used = self.used(namespace)
            detail = ", ".join(
                f"{k}: requested {amounts[k]}, used {used.get(k, 0)}, limited {hard[k]}" for k in over
            )
            source = "its ResourceQuota" if hard is not self.hard else "--namespace-quota"
            raise errors.ResourceExhausted(f'exceeded quota of namespace "{namespace}" ({source}): {detail}')
        reservation = _Reservation(namespace, amounts)
        self._drop_reservation(key)
        self._reserved[key] = reservation
        in_flight.update(amounts)

        def release() -> None:
            self._drop_reservation(key, only=reservation)

        return release
