"""RegistryManager: the agent's single owner of registry settings.

The daemon builds one at start and calls `apply(None)` before the first sync
(so local and legacy settings hold even before the coordinator answers),
then `apply(spec)` with every NodeConfig.registries the coordinator pushes.
Each apply re-reads the two local files, merges (agent.registries.settings),
swaps the resolver the pod syncer asks for on every image, and brings the
Engine's part (insecure registries, mirrors) up to date through an
EngineConfigurator.

A local file that turns bad after a good read keeps its last good contents
(logged), so an operator's typo never drops a node's credentials or blocks
mid-flight; one that is bad at the first apply raises, so the agent refuses
to start with a one-line reason. An Engine that cannot be configured is
logged and retried on the next apply; it never stops image resolution.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from agent.registries import legacy, settings
from agent.registries.engine import EngineConfigurator, EngineSettings
from agent.registries.resolve import ImageResolver
from agent.registries.settings import RegistrySettings, SettingsError
from atoll.v1 import network_pb2

log = logging.getLogger(__name__)


class _FileSource:
    """One local file: re-read on every apply, last good contents kept when it turns bad."""

    def __init__(self, path: Path | None, load: Callable[[Path], RegistrySettings]) -> None:
        self.path = path
        self._load = load
        self._good: RegistrySettings | None = None

    def read(self) -> RegistrySettings:
        if self.path is None:
            return RegistrySettings()
        try:
            self._good = self._load(self.path)
        except SettingsError as exc:
            if self._good is None:
                raise
            log.error("%s; keeping its last good contents", exc.message)
        return self._good


class RegistryManager:
    def __init__(
        self,
        engine: EngineConfigurator | None,
        *,
        local_file: Path | str | None = None,
        legacy_file: Path | str | None = None,
    ) -> None:
        """`engine` None leaves the Engine's config alone (option docker_config empty).

        Empty or None file paths are not read; missing files are empty settings.
        """
        self.engine = engine
        self._local = _FileSource(Path(local_file) if local_file else None, settings.load_file)
        self._legacy = _FileSource(Path(legacy_file) if legacy_file else None, legacy.load_file)
        self._pushed: network_pb2.RegistriesSpec | None = None
        self._settings = RegistrySettings()
        self._resolver = ImageResolver()
        self._engine_settings: EngineSettings | None = None  # last applied to the Engine
        self._lock = asyncio.Lock()

    @property
    def settings(self) -> RegistrySettings:
        """The effective settings now in force."""
        return self._settings

    def resolver(self) -> ImageResolver:
        """The current resolver; pass this bound method to PodSyncer(registries=...)."""
        return self._resolver

    async def apply(self, pushed: network_pb2.RegistriesSpec | None) -> bool:
        """Merge `pushed` with the local files and put the result in force; True if anything changed.

        Raises SettingsError only when a local file is bad and was never good.
        """
        async with self._lock:
            self._pushed = pushed
            merged = settings.merge(settings.from_proto(pushed), self._local.read(), self._legacy.read())
            changed = merged != self._settings
            if changed:
                self._settings = merged
                self._resolver = ImageResolver(merged)
                log.info("registry settings: %s", merged.summary())
            wanted = EngineSettings(insecure=merged.insecure, mirrors=merged.mirrors)
            if self.engine is not None and wanted != self._engine_settings:
                try:
                    if await self.engine.apply(wanted):
                        changed = True
                    self._engine_settings = wanted
                except Exception as exc:  # the Engine half must never stop resolution; retried next apply
                    log.error("cannot apply registry settings to the container engine: %s", exc)
            return changed

    async def reload(self) -> bool:
        """Re-read the local files with the last pushed settings (e.g. on SIGHUP to the agent)."""
        return await self.apply(self._pushed)
