"""Pod security at admission: the namespace's level, from the store, applied to pods and templates.

The rules are in coordinator/admission/podsecurity.py (pure functions); this
module reads the namespace's level and decides who may change it. Every writer
is checked, admins and controllers' owners included: a replication
controller's template is checked when the controller is written, so a bad one
is refused at once rather than failing each pod it would create; the
replication manager calls `check_workload` again for the pods it creates, in
case the namespace was tightened since.

Only admins may loosen a namespace's level (privileged < baseline <
restricted): create or move one to a looser level than it has (a namespace
without an object is baseline), or delete the object of a restricted one.
"""

from __future__ import annotations

from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.v1 import namespace_pb2, pod_pb2, workloads_pb2
from coordinator.admission import podsecurity
from coordinator.admission.podsecurity import PodSecurityConfig
from coordinator.objects.registry import Registry

NAMESPACE = kinds.by_name("Namespace")
_RANK = {level: rank for rank, level in enumerate(podsecurity.LEVELS)}
_LEVEL_FIELD = f"metadata.labels[{podsecurity.LABEL}]"


def _rank(level: str) -> int:
    return _RANK.get(level, _RANK[podsecurity.DEFAULT_LEVEL])  # unknown levels are refused on write


class PodSecurityAdmission:
    def __init__(self, registry: Registry, config: PodSecurityConfig | None = None) -> None:
        self._registry = registry
        self._config = config or PodSecurityConfig()

    async def level(self, namespace: str) -> str:
        try:
            ns = await self._registry.get(NAMESPACE, "", namespace)
        except errors.NotFound:
            return podsecurity.DEFAULT_LEVEL
        assert isinstance(ns, namespace_pb2.Namespace)
        return podsecurity.level_of(ns.metadata.labels)

    async def check_workload(self, obj: Message, old: Message | None) -> None:
        """A pod's spec, a replication controller's template; on update only when it changed."""
        if isinstance(obj, pod_pb2.Pod):
            spec, prefix = obj.spec, "spec"
            previous = old.spec if isinstance(old, pod_pb2.Pod) else None
        elif isinstance(obj, workloads_pb2.ReplicationController) and obj.spec.HasField("template"):
            spec, prefix = obj.spec.template.spec, "spec.template.spec"
            previous = (
                old.spec.template.spec if isinstance(old, workloads_pb2.ReplicationController) else None
            )
        else:
            return
        if previous is not None and previous == spec:
            return  # a scale or a label change: the level applies to what is written, not to what was
        namespace = obj.metadata.namespace
        level = await self.level(namespace)
        podsecurity.refuse(podsecurity.check_pod_spec(spec, level, self._config, prefix), level, namespace)

    def check_namespace(self, ns: namespace_pb2.Namespace, old: Message | None, *, admin: bool) -> None:
        before = (
            podsecurity.level_of(old.metadata.labels)
            if isinstance(old, namespace_pb2.Namespace)
            else podsecurity.DEFAULT_LEVEL
        )
        after = podsecurity.level_of(ns.metadata.labels)
        if not admin and _rank(after) < _rank(before):
            raise errors.PermissionDenied(
                f'only admins may move namespace "{ns.metadata.name}" from pod security level '
                f'"{before}" to "{after}"',
                field=_LEVEL_FIELD,
            )

    async def check_namespace_delete(self, name: str, *, admin: bool) -> None:
        """Deleting a restricted namespace's object would make it baseline: admins only."""
        level = await self.level(name)
        if not admin and _rank(level) > _rank(podsecurity.DEFAULT_LEVEL):
            raise errors.PermissionDenied(
                f'only admins may delete namespace "{name}": it is at pod security level "{level}" '
                f'and would fall back to "{podsecurity.DEFAULT_LEVEL}"'
            )
