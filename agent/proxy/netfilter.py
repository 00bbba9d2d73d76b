"""The seam between the proxy and the kernel: read Atoll's table, apply one nft transaction.

`NftNetfilter` is the real one: the `nft` binary, always through `_run`, the
one place that starts a process. The agent is asyncio; nft is blocking, so it
runs in a worker thread with a deadline (a wedged nft is killed, not awaited
for ever). `command_prefix` (e.g. `nsenter --net=/run/netns/X --`) aims it at
another network namespace, which is how the tests use it on a test bed host.
agent.proxy.fake.FakeNetfilter is the recording fake.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.proxy.ruleset import FAMILY, TABLE
from atoll import errors


class NetfilterError(errors.Unavailable):
    """nft failed, is missing, or did not finish in time; the table is as it was before."""


class Netfilter(Protocol):
    async def list_table(self) -> Mapping[str, Any] | None:
        """`nft -j list table ip atoll` as parsed JSON; None when the table does not exist."""
        ...

    async def apply(self, script: str) -> None:
        """Run `script` as one atomic transaction (`nft -f -`); raises NetfilterError."""
        ...


class NftNetfilter:
    def __init__(
        self, *, command_prefix: Sequence[str] = (), nft: str = "nft", timeout: float = 30.0
    ) -> None:
        self._prefix = list(command_prefix)
        self._nft = nft
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"NftNetfilter({shlex.join([*self._prefix, self._nft])})"

    async def _run(self, args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The one place that runs nft (in a thread, so the event loop keeps going)."""
        argv = [*self._prefix, self._nft, *args]

        def call() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                argv,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self._timeout,  # kills nft when it runs out
                check=False,
            )

        try:
            return await asyncio.to_thread(call)
        except subprocess.TimeoutExpired:
            raise NetfilterError(f"{shlex.join(argv)} did not finish within {self._timeout:.0f}s") from None
        except OSError as exc:
            raise NetfilterError(f"{shlex.join(argv)}: {exc}") from None

    async def list_table(self) -> Mapping[str, Any] | None:
        res = await self._run(["-j", "list", "table", FAMILY, TABLE])
        if res.returncode != 0:
            if "No such file or directory" in res.stderr:
                return None
            raise NetfilterError(f"nft list table {FAMILY} {TABLE} failed: {res.stderr.strip()}")
        try:
            doc = json.loads(res.stdout)
        except ValueError as exc:
            raise NetfilterError(f"nft -j printed something that is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise NetfilterError("nft -j printed JSON that is not an object")
        return doc

    async def apply(self, script: str) -> None:
        res = await self._run(["-f", "-"], stdin=script)
        if res.returncode != 0:
            raise NetfilterError(f"nft -f failed ({res.returncode}): {res.stderr.strip()[:2000]}")
