"""What ClusterService.GetVersion answers: like Kubernetes' /version, plus the features.

Clients in other languages check a feature name here instead of comparing
versions. A name is added when its behaviour ships and never reused.
"""

from __future__ import annotations

import platform
import sys

import atoll
from atoll.v1 import cluster_pb2

API_VERSION = "atoll.v1"

FEATURES = (
    # List takes limit and continue_token; a page never exceeds 4 MiB (coordinator.api.paging).
    "list-paging",
    # A field's error carries google.rpc.BadRequest in grpc-status-details-bin (atoll.errors).
    "status-details-bad-request",
    # Create and Update take dry_run.
    "dry-run",
    # Watch from a resource_version; OUT_OF_RANGE when it is older than the history.
    "watch",
    # GetLogs with follow, tail_lines, previous and timestamps.
    "logs",
    # Services of type NodePort (and LoadBalancer, as a NodePort).
    "node-ports",
)


def response() -> cluster_pb2.GetVersionResponse:
    return cluster_pb2.GetVersionResponse(
        server_version=atoll.version(),
        api_version=API_VERSION,
        features=FEATURES,
        runtime=f"{platform.python_implementation()} {platform.python_version()}",
        platform=f"{sys.platform}/{platform.machine()}",
    )
