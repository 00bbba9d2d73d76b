"""The payloads of a push every node watches (service state, node config), serialised once.

Every node's stream is at one of few points: nothing sent yet, or some earlier generation. The
full state and the delta from each such point to the current generation are each built and
serialised once, and the same bytes go to every stream at that point (`rpc.Encoded`).
"""

from __future__ import annotations

from collections.abc import Callable

from atoll import rpc


class SharedPushes:
    def __init__(self, full: Callable[[], bytes], delta: Callable[[int], bytes | None]) -> None:
        """`full()`: the full response at the current generation, serialised; `delta(base)`: the
        delta response from generation `base` to the current one, serialised, or None when
        there is none to give (the change log no longer reaches back to `base`)."""
        self._build_full = full
        self._build_delta = delta
        self._full: tuple[int, rpc.Encoded] | None = None
        self._deltas: dict[int, rpc.Encoded] = {}  # base generation -> delta to the current one
        self.encodings = 0  # payloads serialised (tests count them)

    def changed(self) -> None:
        """The generation moved on: the deltas kept lead to an older one."""
        self._deltas.clear()

    def encoded(self, generation: int, sent: int, accept_deltas: bool) -> tuple[int, rpc.Encoded]:
        """The next response for a stream that last got generation `sent` (-1: nothing yet), and
        the generation it brings the stream to."""
        if accept_deltas and sent >= 0:
            payload = self._deltas.get(sent)
            if payload is None:
                data = self._build_delta(sent)
                if data is not None:
                    payload = self._deltas[sent] = rpc.Encoded(data)
                    self.encodings += 1
            if payload is not None:
                return generation, payload
        if self._full is None or self._full[0] != generation:
            self._full = (generation, rpc.Encoded(self._build_full()))
            self.encodings += 1
        return self._full
