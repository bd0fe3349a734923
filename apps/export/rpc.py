"""gRPC for the state export (`admin:read`): the same sections and rows as GET /api/v1/export, one
record per message, header first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.utils import timezone

from apps.export import selectors
from apps.gateway.grpc.convert import message_from_row, timestamp
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb

# Section name → (ExportRecord field, its message).
RECORDS = {
    "projects": ("project", pb.ExportProject),
    "agents": ("agent", pb.ExportAgent),
    "api_keys": ("api_key", pb.ExportApiKey),
    "policies": ("policy", pb.ExportPolicy),
    "caps": ("cap", pb.ExportCap),
    "runs": ("run", pb.ExportRun),
}


class ExportRpc:
    def ExportState(self, request: pb.ExportStateRequest, context: Any) -> Iterator[pb.ExportRecord]:  # noqa: N802  # gRPC method name
        yield pb.ExportRecord(header=pb.ExportHeader(exported_at=timestamp(timezone.now())))
        for section, rows in selectors.export_sections():
            field, message_class = RECORDS[section]
            for row in rows:
                record: dict[str, Any] = {field: message_from_row(message_class, row)}  # the oneof member
                yield pb.ExportRecord(**record)
