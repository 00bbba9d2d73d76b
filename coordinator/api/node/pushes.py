"""The payloads of a push every node watches (service state, node config), serialised once.

Every node's stream is at one of few points: nothing sent yet, or some earlier generation. The
full state and the delta from each such point to the current generation are each built and
serialised once, and the same bytes go to every stream at that point (`callchain.Encoded`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable

from google.protobuf.message import Message

from atoll import callchain

# WatchNodeResponse's fields (node_api.proto): the push of each call it stands for.
ASSIGNMENT, NODE_CONFIG, SERVICES = 1, 2, 3


class SharedPushes:
    def __init__(self, full: Callable[[], bytes], delta: Callable[[int], bytes | None]) -> None:
        """`full()`: the full response at the current generation, serialised; `delta(base)`: the
        delta response from generation `base` to the current one, serialised, or None when
        there is none to give (the change log no longer reaches back to `base`)."""
        self._build_full = full
        self._build_delta = delta
        self._full: tuple[int, callchain.Encoded] | None = None
        self._deltas: dict[int, callchain.Encoded] = {}  # base generation -> delta to the current one
        self.encodings = 0  # payloads serialised (tests count them)

    def changed(self) -> None:
        """The generation moved on: the deltas kept lead to an older one."""
        self._deltas.clear()

    def encoded(self, generation: int, sent: int, accept_deltas: bool) -> tuple[int, callchain.Encoded]:
        """The next response for a stream that last got generation `sent` (-1: nothing yet), and
        the generation it brings the stream to."""
        if accept_deltas and sent >= 0:
            payload = self._deltas.get(sent)
            if payload is None:
                data = self._build_delta(sent)
                if data is not None:
                    payload = self._deltas[sent] = callchain.Encoded(data)
                    self.encodings += 1
            if payload is not None:
                return generation, payload
        if self._full is None or self._full[0] != generation:
            self._full = (generation, callchain.Encoded(self._build_full()))
            self.encodings += 1
        return self._full


def _as_field(field: int, data: bytes) -> bytes:
    """`data` (a serialised message) as field `field` of an enclosing message, serialised."""
    size = len(data)
    head = bytearray([field << 3 | 2])  # a length-delimited field
    while size > 0x7F:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + data


# Shared pushes only (a generation's full state and its deltas, a few at a time): a node's own
# assignment would only crowd them out.
@functools.lru_cache(maxsize=16)
def as_field(field: int, payload: callchain.Encoded) -> callchain.Encoded:
    """A shared push as field `field` of WatchNodeResponse, built once for every WatchNode stream,
    as the push itself is for every stream of the call it stands for."""
    return callchain.Encoded(_as_field(field, payload.data))


async def as_pushes(
    field: int, source: AsyncIterator[Message | callchain.Encoded]
) -> AsyncIterator[callchain.Encoded]:
    """A watch's responses as WatchNodeResponse pushes in field `field`."""
    async with contextlib.aclosing(source) as items:  # type: ignore[type-var]
        async for item in items:
            if isinstance(item, callchain.Encoded):
                yield as_field(field, item)
            else:
                yield callchain.Encoded(_as_field(field, item.SerializeToString()))
