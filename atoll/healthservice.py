"""gRPC's standard health service (grpc.health.v1.Health), with List.

grpcio-health-checking's asyncio servicer answers Check and Watch but not List
(added to the protocol in 2024): its inherited List is the generated
synchronous stub, which under grpc.aio logged a traceback and answered UNKNOWN.
Health checkers in other languages (grpc-health-probe, Kubernetes' gRPC
probes, grpcurl) call List, so it answers here.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health, health_pb2


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        # Our own copy of what set() was told, rather than the library's private dict.
        self.statuses: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}

    async def set(self, service: str, status: Any) -> None:
        await super().set(service, status)
        if not self._gracefully_shutting_down:
            self.statuses[service] = status

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self.statuses = dict.fromkeys(self.statuses, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status) for name, status in self.statuses.items()
            }
        )
