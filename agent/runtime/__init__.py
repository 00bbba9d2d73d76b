"""Container runtimes behind one Protocol (the docker SDK is one of them)."""

from agent.runtime.base import (
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    ImagePullError,
    Mount,
    NetworkResult,
    PodNetworkSpec,
    PortBinding,
    RuntimeError_,
    RuntimeTimeout,
)

__all__ = [
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerSpec",
    "ImagePullError",
    "Mount",
    "NetworkResult",
    "PodNetworkSpec",
    "PortBinding",
    "RuntimeError_",
    "RuntimeTimeout",
]
