"""The one ControlPlane servicer, composed from each app's rpc.py and registered through
django-grpc-framework's `Service.as_servicer()` (which builds a fresh instance per call). A method
no app implements yet answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc
from django_grpc_framework.services import Service

from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc
from apps.keys.rpc import KeysRpc


class ControlPlane(KeysRpc, Service):
    pass


def add_control_plane(server: grpc.Server) -> None:
    control_plane_pb2_grpc.add_ControlPlaneServicer_to_server(ControlPlane.as_servicer(), server)
