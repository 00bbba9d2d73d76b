"""Addresses the agent hands out on this node, as CNI's host-local IPAM keeps them: one JSON file.

network -> address -> holder, written before an address is used and replaced
atomically. The sandbox networks' IPAM (agent.network.sandbox) and the SR-IOV
one (agent.sriov.ipam) each keep one book; what an address is chosen from is
theirs to say.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Callable

from atoll import files

log = logging.getLogger(__name__)


class LeaseBook:
    def __init__(self, path: pathlib.Path, *, sync_dir: bool = True) -> None:
        self.path = path
        self._sync_dir = sync_dir
        self.leases: dict[str, dict[str, str]] = {}
        try:
            self.leases = json.loads(path.read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): set aside", path, exc)
            try:
                path.replace(path.with_suffix(".unreadable"))
            except OSError:
                pass

    def save(self) -> None:
        text = json.dumps(self.leases, indent=1, sort_keys=True).encode()
        files.write_atomic(self.path, text, sync_dir=self._sync_dir)

    def of(self, network: str) -> dict[str, str]:
        """The addresses held on `network` (address -> holder), to read and change; save() after."""
        return self.leases.setdefault(network, {})

    def holders(self) -> set[str]:
        return {holder for held in self.leases.values() for holder in held.values()}

    def release(self, gone: Callable[[str], bool]) -> bool:
        """Drop every address whose holder `gone` says is gone, and save; whether any was."""
        changed = False
        for held in self.leases.values():
            for address in [a for a, holder in held.items() if gone(holder)]:
                del held[address]
                changed = True
        if changed:
            self.save()
        return changed
