"""The seam between the proxy and the kernel: read Atoll's table, apply one nft transaction.

`NftNetfilter` is the real one: the `nft` binary, run through the injected
agent.execute.CommandRunner with a deadline (a wedged nft is killed, not
awaited for ever). `command_prefix` (e.g. `nsenter --net=/run/netns/X --`) aims
it at another network namespace, which is how the tests use it on a test bed
host. agent.proxy.fake.FakeNetfilter is the recording fake of the whole seam
(it keeps a table the way the kernel would); agent.execute.RecordingRunner
under NftNetfilter checks the commands themselves.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.execute import CommandRunner, Result
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
        self,
        runner: CommandRunner,
        *,
        command_prefix: Sequence[str] = (),
        nft: str = "nft",
        timeout: float = 30.0,
    ) -> None:
        self._runner = runner
        self._prefix = list(command_prefix)
        self._nft = nft
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"NftNetfilter({shlex.join([*self._prefix, self._nft])})"

    async def _run(self, args: Sequence[str], stdin: str | None = None) -> Result:
        return await self._runner.run([*self._prefix, self._nft, *args], input=stdin, timeout=self._timeout)

    async def list_table(self) -> Mapping[str, Any] | None:
        try:
            res = await self._run(["-j", "list", "table", FAMILY, TABLE])
        except errors.CommandFailed as exc:
            if exc.returncode is not None and "No such file or directory" in exc.stderr:
                return None  # nft ran and found no such table
            raise NetfilterError(exc.message) from exc
        try:
            doc = json.loads(res.stdout)
        except ValueError as exc:
            raise NetfilterError(f"nft -j printed something that is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise NetfilterError("nft -j printed JSON that is not an object")
        return doc

    async def apply(self, script: str) -> None:
        try:
            await self._run(["-f", "-"], stdin=script)
        except errors.CommandFailed as exc:
            raise NetfilterError(exc.message) from exc
