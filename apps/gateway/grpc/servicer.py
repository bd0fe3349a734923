"""The one ControlPlane servicer, composed from each app's rpc.py and registered through
django-grpc-framework's `Service.as_servicer()` (which builds a fresh instance per call).

The framework also connects Django's `close_old_connections` to its request signals, which it sends
around the method itself. Our guard (apps.gateway.grpc.interceptors) already does that around the
whole call, and a write's method runs inside the idempotency transaction, where
`close_old_connections` would close the connection mid-transaction (it closes any connection whose
autocommit differs from the setting's). So those two receivers are disconnected here; the signals
still fire for anyone else listening."""

from __future__ import annotations

import grpc
from django.db import close_old_connections
from django_grpc_framework.services import Service
from django_grpc_framework.signals import grpc_request_finished, grpc_request_started

from apps.export.rpc import ExportRpc
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc
from apps.keys.rpc import KeysRpc
from apps.leaderboard.rpc import LeaderboardRpc
from apps.policy.rpc import PolicyRpc, admit_in_one_statement
from apps.telemetry.rpc import TelemetryRpc


class ControlPlane(KeysRpc, PolicyRpc, TelemetryRpc, ExportRpc, LeaderboardRpc, Service):
    pass


# Methods that can also write in one statement (the guard tries them first; apps.gateway.idempotency).
IN_ONE_STATEMENT = {"Admit": admit_in_one_statement}

grpc_request_started.disconnect(close_old_connections)
grpc_request_finished.disconnect(close_old_connections)


def add_control_plane(server: grpc.Server) -> None:
    control_plane_pb2_grpc.add_ControlPlaneServicer_to_server(ControlPlane.as_servicer(), server)
