"""gRPC methods for keys. Thin: the guard (apps.gateway.grpc.interceptors) has authenticated the
call; these convert to and from messages."""

from __future__ import annotations

from typing import Any

from apps.gateway.grpc.convert import timestamp
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.grpc.interceptors import current_principal


class KeysRpc:
    def WhoAmI(self, request: pb.WhoAmIRequest, context: Any) -> pb.WhoAmIResponse:  # noqa: N802  # gRPC method name
        """The calling key: as GET /api/v1/whoami."""
        principal = current_principal()
        return pb.WhoAmIResponse(
            key_id=principal.key_id, agent=principal.agent_name, project=principal.project_slug,
            scopes=sorted(principal.scopes), expires_at=timestamp(principal.expires_at),
        )
