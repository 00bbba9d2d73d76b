"""Code shared by the agent and the coordinator.

The API itself lives in `atoll.v1`, generated from protos/ by
`make proto`; everything else in this package is written by hand.
"""

import functools


@functools.cache
def version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written).

    Read once per process: an upgrade restarts the daemon, and the agent's every heartbeat
    asks (reading the metadata parses an email-format file).
    """
    import importlib.metadata  # here, not at the top: every command imports `atoll`, few ask this

    try:
        return importlib.metadata.version("atoll")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"
