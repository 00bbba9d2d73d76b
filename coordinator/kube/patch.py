"""PATCH bodies applied to the Kubernetes v1 form of an object.

* JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge,
  `null` deletes, everything else (lists too) replaces.
* Strategic merge patch (`application/strategic-merge-patch+json`, what
  kubectl label, annotate, edit and client-side apply send): a merge patch in
  which the lists Kubernetes declares with a merge key (containers by name,
  ports by containerPort or port, env by name, ...) merge element by element,
  with the `$patch: delete|replace`, `$retainKeys`, `$setElementOrder/` and
  `$deleteFromPrimitiveList/` directives kubectl may write.
"""

from __future__ import annotations

import copy
from typing import Any

from atoll import errors

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

# Field name -> merge key of its list elements (the patchMergeKey tags of k8s.io/api/core/v1),
# by the field's name alone: the same name has the same key wherever it appears in our kinds.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "tolerations": "key",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "finalizers": "",  # a set of strings: merged, not replaced
}
# `ports` merges by containerPort inside a container and by port inside a service spec.
_PORT_KEYS = ("containerPort", "port")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        raise errors.InvalidArgument("a strategic merge patch must be a JSON object", field="body")
    return _merge_map(target if isinstance(target, dict) else {}, patch)


def _merge_map(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    result = dict(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            gone = set(map(_hashable, value or []))
            result[field] = [v for v in result.get(field) or [] if _hashable(v) not in gone]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = _merge_map(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        keep = set(retain)
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, dict | list) else value


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        for key in _PORT_KEYS:
            if all(isinstance(i, dict) and key in i for i in items if not _is_directive(i)):
                return key
        return None
    return MERGE_KEYS.get(field)


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and "$patch" in item


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    existing = list(current) if isinstance(current, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not _is_directive(i)]
    key = _merge_key(field, [*existing, *patch])
    if key is None:
        return copy.deepcopy(patch)  # an atomic list: replaced
    if key == "":  # a set of primitives
        merged = list(existing)
        for item in patch:
            if item not in merged:
                merged.append(copy.deepcopy(item))
        return merged
    out = [dict(i) if isinstance(i, dict) else i for i in existing]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise errors.InvalidArgument(f"every element needs its merge key {key!r}", field=field)
        at = next((n for n, e in enumerate(out) if isinstance(e, dict) and e.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
            continue
        if at is None:
            out.append(_merge_map({}, item))
        else:
            out[at] = _merge_map(out[at], item)
    return out


def apply(content_type: str, current: dict[str, Any], body: Any) -> dict[str, Any]:
    """The object after `body` (already parsed JSON) of `content_type` is applied to `current`."""
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if kind == MERGE:
        result = merge_patch(current, body)
    elif kind == STRATEGIC:
        result = strategic_merge_patch(current, body)
    else:
        raise errors.Unimplemented(
            f"patch type {kind or '(none)'} is not supported: use {MERGE} or {STRATEGIC} "
            "(kubectl patch --type merge or strategic)"
        )
    if not isinstance(result, dict):
        raise errors.InvalidArgument("the patched object is not a JSON object", field="body")
    return result
