"""Run ModeloMan in other processes (real gunicorn workers) against the test database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """A DATABASE_URL for the database this test process is using (the test database)."""
    s = connection.settings_dict
    credentials = f"{quote(s['USER'])}:{quote(s['PASSWORD'] or '')}"
    host, port = s["HOST"] or "127.0.0.1", s["PORT"] or 5432
    if host.startswith("/"):  # a Unix socket directory (the embedded server)
        return f"postgres://{credentials}@/{s['NAME']}?host={host}&port={port}"
    return f"postgres://{credentials}@{host}:{port}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, *, token: str | None = None, body: dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, method=method, data=data)  # noqa: S310  # loopback test server
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if method != "GET":
        request.add_header("Idempotency-Key", uuid.uuid4().hex)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # loopback test server
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@contextmanager
def gunicorn_server(*, workers: int = 2, env: dict[str, str] | None = None,
                    log_path: Path | None = None) -> Iterator[str]:
    """Serve the WSGI app with real gunicorn workers, as deployed (deploy/gunicorn.conf.py: sync
    workers, metrics files, logging), on a loopback port; yield its base URL. `log_path`: keep the
    server's output there (else it is thrown away)."""
    port = free_port()
    child_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modeloman.settings.test",
        "DATABASE_URL": database_url(),
        "AUTH_CACHE_MAX_AGE_SECONDS": "600",  # only active invalidation can explain a fast refusal
        **(env or {}),
    }
    log = (open(log_path, "wb") if log_path else  # noqa: SIM115
           tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False))
    process = subprocess.Popen(
        # The deployed worker model (deploy/gunicorn.conf.py: sync workers), with `workers` processes.
        [sys.executable, "-m", "gunicorn", "modeloman.wsgi:application", "--config", "deploy/gunicorn.conf.py",
         "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning"],
        cwd=BASE_DIR, env=child_env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{Path(log.name).read_text()}")
            time.sleep(0.1)
        yield base
        process.terminate()  # as systemd stops it: SIGTERM, then every worker exits at once
        status = process.wait(timeout=10)
        assert status == 0, f"gunicorn exited {status} on SIGTERM:\n{Path(log.name).read_text()[-3000:]}"
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        log.close()
        if not log_path:
            os.unlink(log.name)


def grpcserve_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test's `manage.py grpcserve`: the test database, a free loopback port, and
    one server process unless `env` says otherwise (GRPC_PROCESSES; the deployed default, 2, starts a
    supervisor and two interpreters per server: tests/gateway/test_grpc_processes.py runs that)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modeloman.settings.test",
        "DATABASE_URL": database_url(),
        "AUTH_CACHE_MAX_AGE_SECONDS": "600",  # only active invalidation can explain a fast refusal
        "GRPC_ADDR": "127.0.0.1:0",
        "GRPC_PROCESSES": "1",
        **(env or {}),
    }


@contextmanager
def grpcserve(*, env: dict[str, str] | None = None, stop: bool = True) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run `manage.py grpcserve` on a free loopback port against the test database; yield the process
    and its address. `stop=False` leaves stopping (and waiting) to the test."""
    log = tempfile.NamedTemporaryFile(prefix="grpcserve-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "manage.py", "grpcserve"], cwd=BASE_DIR, env=grpcserve_env(env),
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    try:
        line = _first_line(process, timeout=30)
        if not line.startswith("grpcserve listening on "):
            raise RuntimeError(f"grpcserve did not start: {line!r}\n{Path(log.name).read_text()}")
        yield process, line.split()[3]
    finally:
        if stop and process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            os.unlink(log.name)


def _first_line(process: subprocess.Popen, *, timeout: float) -> str:
    import selectors

    stdout = process.stdout
    assert stdout is not None, "started with stdout=PIPE"
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stdout.readline().strip()
