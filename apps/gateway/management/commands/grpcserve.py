"""`manage.py grpcserve`: the gRPC server for agents, until SIGTERM or SIGINT, then a graceful drain."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connections

from apps.gateway import metrics
from apps.gateway.grpc.server import GrpcServer, ServerConfig
from modeloman.invalidation import listener


class Command(BaseCommand):
    help = ("Serve modeloman.v1.ControlPlane and grpc.health.v1 on GRPC_ADDR (default 127.0.0.1:50051); "
            "SIGTERM drains: health NOT_SERVING, calls in flight finish within GRPC_GRACE_SECONDS.")

    def handle(self, *args: Any, **options: Any) -> None:
        config = ServerConfig.from_settings()
        if metrics.DIRECTORY:  # a restarted gRPC server counts from zero, as gunicorn's workers do
            metrics.clean_group(metrics.DIRECTORY, "grpc")
        server = GrpcServer(config)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        listener.is_healthy()  # starts revocation / kill-switch invalidation now, not on the first call
        connections.close_all()  # the system checks' connection: this thread only waits from here on
        server.start()
        self.stdout.write(
            f"grpcserve listening on {server.host}:{server.port} "
            f"(tls: {'mtls' if config.tls_client_ca else 'on' if config.tls_cert else 'off'}, "
            f"reflection: {'on' if config.reflection else 'off'}, "
            f"max concurrent rpcs: {config.max_concurrent_rpcs})"
        )
        self.stdout.flush()
        stop.wait()
        server.drain()
        self.stdout.write("grpcserve stopped")
