"""Parsed documents -> atoll.v1 messages: kind dispatch, Lists, validation.

The document says what it is (``apiVersion`` + ``kind``); the catalog says
which decoder reads that shape. Documents that do not say are recognised by
the codecs' sniffs (registry.Sniff): a 2014 pod (``desiredState.manifest``),
controller (``desiredState.podTemplate``) or service (``port`` + ``selector``)
without ``kind``, and flannel's net-conf.json (a top-level ``Network``). One
more concession to 2014-2015 files: a document with ``desiredState`` or
``id`` but no ``apiVersion`` is v1beta1 - the first Kubernetes examples were
written that way.

After decoding, the object goes through atoll.validation (on a defaulted copy:
the caller gets the object as written, so a namespace left out stays open to
the CLI's ``--namespace``). Its first problem becomes a ManifestError whose
path is translated back into the document's own shape.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from google.protobuf.message import Message

from coordinator.manifests import catalog
from coordinator.manifests.errors import ManifestError, describe, format_path
from coordinator.manifests.loader import MAX_DOCUMENTS, Document
from coordinator.manifests.reader import Context, Schema, Value
from coordinator.manifests.registry import Codec, Shape, Sniff, same_path

# Kubernetes kinds whose job an Atoll kind does.
_INSTEAD = {
    "Deployment": "Atoll keeps replicas running with a ReplicationController",
    "ReplicaSet": "Atoll keeps replicas running with a ReplicationController",
}

LIST = Schema.of(known=("apiVersion", "kind", "items"), ignored=("metadata",))
_V1_PATH_IN_TEXT = re.compile(r"\b(?:spec|metadata)(?:\.[A-Za-z]+|\[\d+\])+")


def decode_documents(docs: Sequence[Document], *, validate: bool = True) -> list[Message]:
    out: list[Message] = []
    for doc in docs:
        out.extend(decode_document(doc, validate=validate))
        if len(out) > MAX_DOCUMENTS:
            raise ManifestError(
                doc.source, "", f"more than {MAX_DOCUMENTS} objects in one file", line=doc.line
            )
    return out


def decode_data(data: object, source: str, *, validate: bool = True) -> list[Message]:
    """Already-parsed data (a dict, as ``json.load`` gives): one object, or several from a List."""
    return decode_documents([Document(source, data)], validate=validate)


def decode_document(doc: Document, *, validate: bool = True) -> list[Message]:
    """One document: a single object, or a ``kind: List`` (or ``PodList`` ...) of them."""
    root = Value(doc.data, (), Context(doc.source, doc.line))
    raw = _mapping(root)
    kind = raw.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and kind[:-4] in ("", *catalog.BY_KIND):
        return _decode_list(root, kind, validate=validate)
    return [decode_object(root, validate=validate)]


def _decode_list(root: Value, kind: str, *, validate: bool) -> list[Message]:
    f = root.fields(LIST)
    element_kind = kind.removesuffix("List") or None
    api_version = v.string() if (v := f.get("apiVersion")) else None
    out: list[Message] = []
    for i, item in enumerate(v.elements() if (v := f.get("items")) else []):
        ctx = Context(root.ctx.source, root.ctx.line, ("items", i))
        element = Value(item.raw, (), ctx)
        item_kind = _mapping(element).get("kind")
        if isinstance(item_kind, str) and item_kind.endswith("List"):
            element.child(item_kind, "kind").fail("a List cannot contain another List")
        out.append(decode_object(element, validate=validate, kind=element_kind, api_version=api_version))
        if len(out) > MAX_DOCUMENTS:
            element.fail(f"more than {MAX_DOCUMENTS} objects in one file")
    return out


def decode_object(
    root: Value, *, validate: bool = True, kind: str | None = None, api_version: str | None = None
) -> Message:
    """One object. ``kind``/``api_version`` are what a typed List supplies to items without them."""
    raw = _mapping(root)
    codec = _codec(root, raw, kind)
    try:
        return _decode_as(root, raw, codec, validate=validate, api_version=api_version)
    except ManifestError as exc:
        exc.subject = exc.subject or _subject(codec.kind, raw)
        raise


def _subject(kind: str, raw: dict[str, object]) -> str:
    """How errors name an object: ``pod "apache"`` (metadata.name, or v1beta1's id); "" without a name."""
    meta = raw.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        name = raw.get("id")
    return f'{kind.lower()} "{name}"' if isinstance(name, str) and name else ""


def _decode_as(
    root: Value, raw: dict[str, object], codec: Codec, *, validate: bool, api_version: str | None
) -> Message:
    shape = _shape(root, raw, codec, api_version)
    message = shape.decode(root)
    if validate:
        problems = codec.validate(message)
        if problems.items:
            field, text = problems.items[0]
            translate = shape.translate_for(root)
            path = translate(field)
            if root.ctx.prefix:
                path = f"{format_path(root.ctx.prefix)}.{path}" if path else format_path(root.ctx.prefix)
            if translate is not same_path:
                text = _V1_PATH_IN_TEXT.sub(lambda m: translate(m.group()), text)
            raise ManifestError(root.ctx.source, path, text, line=root.ctx.line)
    return message


def _mapping(root: Value) -> dict[str, object]:
    if not isinstance(root.raw, dict):
        root.fail(f"expected an object with apiVersion and kind, got {describe(root.raw)}")
    return root.mapping()


def _sniff(codec: Codec, raw: dict[str, object]) -> Sniff | None:
    return next((s for s in codec.sniffs if s.test(raw)), None)


def _codec(root: Value, raw: dict[str, object], default: str | None) -> Codec:
    kind = raw.get("kind")
    if kind is None:
        sniffed = next((c for c in catalog.CODECS if _sniff(c, raw)), None)
        if sniffed is not None:
            return sniffed
        if default is not None:
            kind = default
        else:
            root.child(None, "kind").fail("is required (for example, kind: Pod)")
    where = root.child(kind, "kind")
    name = where.string()
    codec = catalog.BY_KIND.get(name)
    if codec is None:
        options = [*catalog.KIND_NAMES, "List"]
        near = [k for k in options if k.lower() == name.lower()] or difflib.get_close_matches(
            name, options, 1
        )
        hint = f' (did you mean "{near[0]}"?)' if near else ""
        if name in _INSTEAD:
            hint = f" ({_INSTEAD[name]})"
        where.fail(f"expected one of {', '.join(options)}, got {describe(name)}{hint}")
    return codec


def _shape(root: Value, raw: dict[str, object], codec: Codec, default: str | None) -> Shape:
    version = raw.get("apiVersion")
    if version is None:
        if sniff := _sniff(codec, raw):
            return sniff.shape
        if "desiredState" in raw or "id" in raw:
            version = "v1beta1"
        elif default is not None:
            version = default
        else:
            root.child(None, "apiVersion").fail("is required (for example, apiVersion: v1)")
    where = root.child(version, "apiVersion")
    name = where.string()
    shape = codec.shapes.get(name)
    if shape is None:
        legacy = ", ".join(sorted(v for v in codec.shapes if v != "v1"))
        older = f" (or the older {legacy})" if legacy else ""
        where.fail(f"expected v1{older} for kind {codec.kind}, got {describe(name)}")
    return shape
