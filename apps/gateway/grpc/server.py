"""The hardened gRPC server (SPEC §9): loopback by default, bounded messages and concurrency,
keepalive enforcement, health with graceful drain, reflection only on request, optional TLS/mTLS."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from asgiref.local import Local
from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from apps.gateway.grpc.interceptors import SERVICE, GatewayInterceptor
from apps.gateway.grpc.servicer import IN_ONE_STATEMENT, add_control_plane

logger = logging.getLogger(__name__)

MAX_RECEIVE_BYTES = 1024 * 1024
MAX_SEND_BYTES = 2 * 1024 * 1024

# Keepalive, from the server's side: it pings an idle client every 2 minutes and drops one that does
# not answer within 20 s; a client may ping it without calls in flight, but at most once a minute:
# the third ping sooner than that ends the connection (GOAWAY "too_many_pings"). Idle connections
# close after 15 minutes; any connection after an hour (+ 5 minutes for calls in flight), so clients
# rebalance across servers.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
    ("grpc.max_metadata_size", 16 * 1024),
    ("grpc.keepalive_time_ms", 120_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),  # our own keepalive pings need no data in between
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 60_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 60_000),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.max_connection_idle_ms", 15 * 60_000),
    ("grpc.max_connection_age_ms", 60 * 60_000),
    ("grpc.max_connection_age_grace_ms", 5 * 60_000),
)


@dataclass(frozen=True)
class ServerConfig:
    address: str
    max_workers: int
    max_concurrent_rpcs: int
    reflection: bool
    grace_seconds: float
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""

    @classmethod
    def from_settings(cls) -> ServerConfig:
        config = cls(
            address=settings.GRPC_ADDR, max_workers=settings.GRPC_MAX_WORKERS,
            max_concurrent_rpcs=settings.GRPC_MAX_CONCURRENT_RPCS, reflection=settings.ENABLE_REFLECTION,
            grace_seconds=settings.GRPC_GRACE_SECONDS, tls_cert=settings.GRPC_TLS_CERT,
            tls_key=settings.GRPC_TLS_KEY, tls_client_ca=settings.GRPC_TLS_CLIENT_CA,
        )
        config.check()
        return config

    def check(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ImproperlyConfigured("GRPC_TLS_CERT and GRPC_TLS_KEY go together.")
        if self.tls_client_ca and not self.tls_cert:
            raise ImproperlyConfigured("GRPC_TLS_CLIENT_CA (mTLS) needs GRPC_TLS_CERT and GRPC_TLS_KEY.")
        if self.max_workers < 1 or self.max_concurrent_rpcs < 1:
            raise ImproperlyConfigured("GRPC_MAX_WORKERS and GRPC_MAX_CONCURRENT_RPCS must be at least 1.")

    def credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls_cert:
            return None
        ca = Path(self.tls_client_ca).read_bytes() if self.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(Path(self.tls_key).read_bytes(), Path(self.tls_cert).read_bytes())],
            root_certificates=ca, require_client_auth=ca is not None,
        )


def _keep_cache_connections_per_thread() -> None:
    """grpcio runs every call in a new `contextvars.Context`, and Django keeps its cache backends per
    context (an asgiref Local that is not thread-critical, for the sake of async code): every call
    built a new cache backend and opened a new Redis connection for its rate-limit count. This
    process runs no async code, so its cache backends are kept per thread, as a gunicorn thread's are.
    (Database connections are thread-critical in Django already.)"""
    caches._connections = Local(thread_critical=True)  # type: ignore[attr-defined]  # Django 5.2: not in the stubs


class GrpcServer:
    """A started server: its port, and the drain that ends it.

    `share_port`: listen with SO_REUSEPORT, beside the other processes of one `grpcserve` (whose
    supervisor made sure the port was free). Otherwise a second server on a busy port fails rather
    than silently sharing it."""

    def __init__(self, config: ServerConfig, *, share_port: bool = False) -> None:
        self.config = config
        _keep_cache_connections_per_thread()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="grpc-call"),
            interceptors=[GatewayInterceptor(in_one_statement=IN_ONE_STATEMENT)],
            options=(*SERVER_OPTIONS, ("grpc.so_reuseport", int(share_port))),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        add_control_plane(self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if config.reflection:
            names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, self.server)
        credentials = config.credentials()
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(config.address)
            else:
                self.port = self.server.add_secure_port(config.address, credentials)
        except RuntimeError as error:
            raise ImproperlyConfigured(f"gRPC cannot listen on {config.address}: {error}") from None
        if not self.port:
            raise ImproperlyConfigured(f"gRPC cannot listen on {config.address}.")
        self.host = config.address.rpartition(":")[0]

    def start(self) -> None:
        self.server.start()
        for service in ("", SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def drain(self) -> None:
        """Health NOT_SERVING (watchers hear it at once), new calls refused (UNAVAILABLE), calls in
        flight finish within the grace period; whatever still runs then is cancelled."""
        self.health.enter_graceful_shutdown()
        grace = self.config.grace_seconds
        logger.info("gRPC server draining (grace %.1f s)", grace)
        self.server.stop(grace).wait()
