"""`manage.py grpcserve`: the gRPC server for agents, until SIGTERM or SIGINT, then a graceful drain.

One Python process serves calls on one core at most (one GIL). With GRPC_PROCESSES > 1 this command
is a small supervisor, as grpcio's own "multiprocessing" example: it creates no gRPC object and keeps
no database connection, checks that the port is free, and starts GRPC_PROCESSES server processes (this
command again, with `--worker`) that each listen on the same port with SO_REUSEPORT; the kernel spreads
incoming connections over them. Re-executing rather than forking leaves no question of fork safety
(grpcio's threads, Django's connections, the invalidation listener's thread).
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from apps.gateway import metrics
from apps.gateway.grpc.server import GrpcServer, ServerConfig
from modeloman.invalidation import listener

LISTENING = "grpcserve listening on "
STARTUP_SECONDS = 60.0  # a server process that has not said it listens by then is taken for stuck
EXIT_MARGIN_SECONDS = 10.0  # after the grace period, for a server process to finish exiting


class Command(BaseCommand):
    help = ("Serve modeloman.v1.ControlPlane and grpc.health.v1 on GRPC_ADDR (default 127.0.0.1:50051) from "
            "GRPC_PROCESSES processes; SIGTERM drains: health NOT_SERVING, calls in flight finish within "
            "GRPC_GRACE_SECONDS.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        # One of the supervisor's server processes: listen with SO_REUSEPORT, clean no metrics files.
        parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        config = ServerConfig.from_settings()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        if options["worker"]:
            self.serve(config, stop, share_port=True)
            return
        if settings.GRPC_PROCESSES < 1:
            raise ImproperlyConfigured("GRPC_PROCESSES must be at least 1.")
        if settings.GRPC_PROCESSES == 1:
            self.serve(config, stop, share_port=False)
        else:
            self.supervise(config, stop, settings.GRPC_PROCESSES)

    def serve(self, config: ServerConfig, stop: threading.Event, *, share_port: bool) -> None:
        server = GrpcServer(config, share_port=share_port)
        if not share_port:
            clean_metrics()
        listener.is_healthy()  # starts revocation / kill-switch invalidation now, not on the first call
        connections.close_all()  # the system checks' connection: this thread only waits from here on
        server.start()
        self.announce(config, f"{server.host}:{server.port}", 1)
        if share_port:  # a server process outlives no supervisor: orphaned, it drains and exits
            supervisor = os.getppid()
            while not stop.wait(1.0) and os.getppid() == supervisor:
                pass
        else:
            stop.wait()
        server.drain()
        self.stdout.write("grpcserve stopped")

    def announce(self, config: ServerConfig, address: str, processes: int) -> None:
        """The first line on stdout (tests and the benchmark read the address from it)."""
        self.stdout.write(
            f"{LISTENING}{address} "
            f"(tls: {'mtls' if config.tls_client_ca else 'on' if config.tls_cert else 'off'}, "
            f"reflection: {'on' if config.reflection else 'off'}, "
            f"max concurrent rpcs: {config.max_concurrent_rpcs}"
            f"{f' per process, processes: {processes}' if processes > 1 else ''})"
        )
        self.stdout.flush()

    def supervise(self, config: ServerConfig, stop: threading.Event, processes: int) -> None:
        """Start `processes` server processes on one port; on SIGTERM/SIGINT pass SIGTERM on to each
        (each drains) and exit 0 once all have exited 0. If one ends by itself, stop the others and exit
        non-zero: the process manager restarts the whole server."""
        address, reservation = reserve_port(config.address)
        clean_metrics()
        connections.close_all()  # the system checks' connection: the servers open their own
        command = [sys.executable, sys.argv[0], "grpcserve", "--worker", "--skip-checks"]  # checked once, here
        env = {**os.environ, "GRPC_ADDR": address}
        workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)  # noqa: S603  # this command
                   for _ in range(processes)]
        died = None
        try:
            if wait_until_listening(workers, stop):
                self.announce(config, address, processes)
                died = wait_for_stop_or_exit(workers, stop)
        finally:
            codes = stop_all(workers, timeout=config.grace_seconds + EXIT_MARGIN_SECONDS)
            reservation.close()
        if died is not None:
            raise CommandError(f"grpcserve process {died.pid} exited unexpectedly (code {died.returncode}); "
                               f"the other processes were stopped")
        if any(codes):
            raise CommandError(f"grpcserve processes exited with codes {codes}")
        self.stdout.write("grpcserve stopped")


def clean_metrics() -> None:
    """A restarted gRPC server counts from zero, as gunicorn's workers do. Only once the port is ours:
    a second grpcserve that cannot listen must not wipe the running one's counts."""
    if metrics.DIRECTORY:
        metrics.clean_group(metrics.DIRECTORY, "grpc")


def reserve_port(address: str) -> tuple[str, socket.socket]:
    """`host:port` with the port resolved (a free one for port 0), and a socket that keeps it for
    this server while it runs.

    The port must be free: bound WITHOUT SO_REUSEPORT, the probe fails when any server (one of ours or
    anything else) listens there, so a second grpcserve on a busy port fails as a single process does.
    The socket kept is bound (never listening, so it receives no connection) with SO_REUSEPORT, like the
    server processes' listeners: the kernel hands this port to no one else in the meantime."""
    host, _, port = address.rpartition(":")
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            # As gRPC's own listeners: connections of an earlier server left in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
            bound: int = probe.getsockname()[1]
        reservation = socket.socket(family, kind, proto)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind((sockaddr[0], bound, *sockaddr[2:]))
    except (OSError, ValueError) as error:
        raise ImproperlyConfigured(f"gRPC cannot listen on {address}: {error}") from None
    return f"{host}:{bound}", reservation


def wait_until_listening(workers: list[subprocess.Popen], stop: threading.Event) -> bool:
    """True once every server process has printed its listening line; False if told to stop first."""
    deadline = time.monotonic() + STARTUP_SECONDS
    with selectors.DefaultSelector() as selector:
        for worker in workers:
            selector.register(worker.stdout, selectors.EVENT_READ, data=worker)  # type: ignore[arg-type]  # a pipe
        while selector.get_map():
            if stop.is_set():
                return False
            if time.monotonic() > deadline:
                raise CommandError(f"grpcserve processes did not listen within {STARTUP_SECONDS:.0f} s")
            for key, _ in selector.select(timeout=0.2):
                worker = key.data
                selector.unregister(key.fileobj)
                line = worker.stdout.readline()  # the whole line: the server writes it at once, then flushes
                if not line.startswith(LISTENING):
                    worker.wait()
                    raise CommandError(f"grpcserve process {worker.pid} did not start (code {worker.returncode}); "
                                       f"its error is above")
    return True


def wait_for_stop_or_exit(workers: list[subprocess.Popen], stop: threading.Event) -> subprocess.Popen | None:
    """Until SIGTERM/SIGINT (None) or a server process ending by itself (that process)."""
    while not stop.wait(0.2):
        for worker in workers:
            if worker.poll() is not None:
                return worker
    return None


def stop_all(workers: list[subprocess.Popen], *, timeout: float) -> list[int]:
    """SIGTERM to each server process still running, wait for all (killing any still running after
    `timeout`); their exit codes. A process's live metrics (requests in progress) go with it."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        if worker.stdout:
            worker.stdout.close()
        metrics.process_exited("grpc", worker.pid)
    return [worker.returncode for worker in workers]
