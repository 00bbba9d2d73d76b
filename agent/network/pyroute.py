"""pyroute2's IPRoute without the rest of pyroute2.

`import pyroute2` runs a package `__init__` that imports every family the
library speaks (NDB, IPDB, nl80211, WireGuard, IPVS, conntrack, plan9, ...):
163 modules and 22.7 MB resident, against 99 modules and 15.9 MB for the
IPRoute the agent uses. Python runs a package's `__init__` before any of its
submodules, so `load()` puts a lean package object in its place first: it has
the real `__path__`, so `pyroute2.iproute.linux` and the rest import from the
installed files unchanged, and its `__init__` runs only if some code asks the
package for a name that is not a submodule (`from pyroute2 import NDB`): then
the lean object becomes the full package, as if imported the ordinary way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

PACKAGE = "pyroute2"
_lock = threading.RLock()


# The package's own names that a lean package answers by becoming the full one (other dunder
# names are the import system's and Python's probes: plain AttributeError).
_PUBLIC_DUNDERS = frozenset({"__version__", "__all__"})


class _LeanPackage(types.ModuleType):
    _loading = False  # __init__ is running (in the thread holding _lock)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name not in _PUBLIC_DUNDERS:
            raise AttributeError(name)
        spec = self.__spec__
        assert spec is not None and spec.submodule_search_locations is not None
        if not name.startswith("__") and importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            return importlib.import_module(f"{PACKAGE}.{name}")  # sets the attribute on us
        # Not a submodule: somebody wants the package's own names. Become the full package.
        # The class changes only once __init__ has run: until then every other thread asking
        # comes here and waits on the lock; __init__ itself, asking for a name it has not
        # defined yet, sees a partly initialised module, as it would in a plain import.
        with _lock:
            if type(self) is _LeanPackage and not _LeanPackage._loading:
                assert spec.loader is not None
                _LeanPackage._loading = True
                try:
                    spec.loader.exec_module(self)  # on failure the package stays lean
                    self.__class__ = types.ModuleType  # type: ignore[assignment]
                finally:
                    _LeanPackage._loading = False
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None


def _install_lean_package() -> None:
    with _lock:
        if PACKAGE in sys.modules:
            return
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(f"{PACKAGE} is not installed")
        package = _LeanPackage(PACKAGE)
        package.__spec__ = spec
        package.__loader__ = spec.loader
        package.__file__ = spec.origin
        package.__package__ = PACKAGE
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules[PACKAGE] = package


def load() -> tuple[type, type[Exception]]:
    """(IPRoute, NetlinkError), importing no more of pyroute2 than they need."""
    _install_lean_package()
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return IPRoute, NetlinkError
