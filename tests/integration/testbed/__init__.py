"""Integration-test bed: N simulated Atoll hosts on one machine.

Each host is a network namespace on a private underlay bridge
(198.51.100.0/24, no route out of the machine) with its own mount namespace
and dockerd. See `bed.py` for the layout and the teardown guarantees.

    from tests.integration.testbed import TestBed, wait_for

    with TestBed(2) as bed:
        h0, h1 = bed.hosts
        h0.docker().containers.run("fedora/apache", detach=True, ports={"80/tcp": 8080})
        wait_for(lambda: "Apache" in h1.http_get(f"http://{h0.ip}:8080/").body, 20, message="apache")
"""

from .bed import TeardownError, TestBed, destroy_run, find_leftovers, require_root, sweep_stale
from .host import Host, HttpResponse, Underlay
from .netns import PortForward
from .procs import Process
from .waiting import Deadline, wait_for

__all__ = [
    "Deadline",
    "Host",
    "HttpResponse",
    "PortForward",
    "Process",
    "TeardownError",
    "TestBed",
    "Underlay",
    "destroy_run",
    "find_leftovers",
    "require_root",
    "sweep_stale",
    "wait_for",
]
