"""Process limits both daemons raise at start.

A daemon holding thousands of connections (agents' channels, watch streams,
clients mid-handshake) must not run out of file descriptors at the soft limit
a login shell or an old init hands it (often 1,024) while the hard limit
allows far more: each daemon raises its soft RLIMIT_NOFILE to the hard limit
once, at start, before it opens anything.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_nofile() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one; return (before, after) soft limits.

    Never fails the daemon: a refusal (a container that forbids it) is logged and the
    old limit kept.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard in (resource.RLIM_INFINITY, soft):
        # Linux never reports an infinite NOFILE hard limit; keep what we have if it does.
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft, soft
    log.info("open-file limit raised from %d to %d", soft, hard)
    return soft, hard
