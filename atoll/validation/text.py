"""Control characters: refused in every string an API object carries, free text aside.

A name ending in "\\n" used to pass `re.match(r"^...$")` (`$` matches before
a final newline); it then broke tables, logs and the agent's nft batches. Name
patterns are now full matches (`re.fullmatch` or `\\Z`), and `check_strings`
is the second line behind them: it walks every string field of an object
(map keys and values, repeated elements, nested messages) and refuses C0
controls (U+0000-U+001F) and DEL (U+007F).

Free text (FREE_TEXT: env values, command and args, annotation values,
messages) may carry tab and newline, as a Kubernetes manifest can (scripts in
`args`, multi-line annotations); every other control character, NUL and
carriage return included, is refused there too: NUL cannot cross exec or
the environment, and a bare CR rewrites terminal lines.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from atoll.validation.core import Problems

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab (09) and newline (0a) allowed

#: Fields (protobuf full names) holding free text: tab and newline allowed. For maps, the values.
FREE_TEXT = frozenset(
    {
        "atoll.v1.EnvVar.value",
        "atoll.v1.Container.command",
        "atoll.v1.Container.args",
        "atoll.v1.ObjectMeta.annotations",
        "atoll.v1.Event.message",
        "atoll.v1.PodStatus.message",
        "atoll.v1.PodCondition.message",
        "atoll.v1.ContainerStateWaiting.message",
        "atoll.v1.ContainerStateTerminated.message",
        "atoll.v1.MachineStatus.last_error",
    }
)


def control_char(value: str, *, free_text: bool = False) -> str:
    """ "" when `value` is clean, else what is wrong, e.g. "contains a control character (U+000A) at 4"."""
    m = (_CONTROL_IN_TEXT if free_text else _CONTROL).search(value)
    if m is None:
        return ""
    return f"contains a control character (U+{ord(m.group()):04X}) at position {m.start()}"


def check_text(p: Problems, field: str, value: str, *, free_text: bool = False) -> None:
    if problem := control_char(value, free_text=free_text):
        p.add(field, problem)


def check_object(p: Problems, obj: Message) -> None:
    """Every string of an API object but its status, which Atoll writes itself (agents report what
    the engine says, and an engine's error text is its own business)."""
    check_strings(p, obj, skip=frozenset({"status"}))


def check_strings(p: Problems, msg: Message, prefix: str = "", *, skip: frozenset[str] = frozenset()) -> None:
    """Every string in `msg` (set fields only, but those named in `skip`), with its path in the
    API's JSON shape."""
    for fd, value in msg.ListFields():
        if fd.name in skip:
            continue
        field = f"{prefix}.{fd.json_name}" if prefix else fd.json_name
        free = fd.full_name in FREE_TEXT
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            for key, item in sorted(value.items()):  # in key order, as check_labels
                item_field = f"{field}[{key!r}]" if _CONTROL.search(str(key)) else f"{field}[{key}]"
                if isinstance(key, str):
                    check_text(p, item_field, key)
                if value_fd.type == FieldDescriptor.TYPE_STRING:
                    check_text(p, item_field, item, free_text=free)
                elif value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    check_strings(p, item, item_field)
        elif fd.is_repeated:
            for i, item in enumerate(value):
                if fd.type == FieldDescriptor.TYPE_STRING:
                    check_text(p, f"{field}[{i}]", item, free_text=free)
                elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                    check_strings(p, item, f"{field}[{i}]")
        elif fd.type == FieldDescriptor.TYPE_STRING:
            check_text(p, field, value, free_text=free)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            check_strings(p, value, field)
