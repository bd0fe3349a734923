"""One request, observed: its metrics sample and its log line, the same for every transport.

The REST middleware (apps.gateway.rest.observe) and the gRPC guard (apps.gateway.grpc.interceptors)
call `request_started` when a request arrives and `request_finished` when its answer is known.
The log line carries the request id, the operation, the key id (never the token), the status, the
duration and the client's address; modeloman.logs formats it (JSON in production).
"""

from __future__ import annotations

import logging

from apps.gateway import metrics

request_logger = logging.getLogger("modeloman.requests")


def request_started(transport: str) -> None:
    metrics.request_started(transport)


def request_finished(*, transport: str, operation: str, status: int | str, seconds: float, request_id: str,
                     key_id: str | None, client: str | None, method: str = "", path: str = "") -> None:
    metrics.request_finished(transport=transport, operation=operation, status=status, seconds=seconds)
    duration_ms = round(seconds * 1000, 2)
    where = f"{method} {path}" if method else operation
    request_logger.info(
        "%s %s %.1fms", where, status, duration_ms,
        extra={"request_id": request_id, "transport": transport, "method": method or None, "path": path or None,
               "operation": operation, "status": status, "duration_ms": duration_ms, "key_id": key_id,
               "client": client},
    )
