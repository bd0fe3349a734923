"""Process-local caches that every process drops within milliseconds of a change.

Hot paths (key verification, effective policy) read from a dict in this process. A change
that must take effect everywhere — anything a cached principal or effective policy depends
on: revocation, expiry change, any agent change (status, project, name), a project's slug,
policy, caps, prices — calls `broadcast()` inside its transaction: that clears this process's caches at once and
sends `pg_notify`, which PostgreSQL delivers to every listening process when — and only
if — the transaction commits. Each process runs one listener thread.

Safety rules:
- A cache serves nothing unless this process's listener is connected (a process that cannot
  hear invalidations reads the database every time instead of trusting stale entries).
- Every clear bumps a generation; a value read from the database is only stored if no
  clear happened while it was being read (so a pre-commit read cannot outlive the NOTIFY).
- Entries also age out after `AUTH_CACHE_MAX_AGE_SECONDS`, as a last line of defence.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection, connections

logger = logging.getLogger(__name__)

CHANNEL = "modeloman_invalidate"
_HEARTBEAT_SECONDS = 1.0


class ProcessCache:
    """A dict guarded by the invalidation listener."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._entries: dict[Any, tuple[float, Any]] = {}
        self._generation = 0
        _registry.append(self)

    def generation(self) -> int:
        return self._generation

    def get(self, key: Any) -> Any | None:
        if not listener.is_healthy():
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if time.monotonic() - stored_at > settings.AUTH_CACHE_MAX_AGE_SECONDS:
            return None
        return value

    def put(self, key: Any, value: Any, generation: int) -> None:
        with self._lock:
            if generation == self._generation and listener.is_healthy():
                self._entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


_registry: list[ProcessCache] = []


def clear_local_caches() -> None:
    for cache in _registry:
        cache.clear()


def broadcast(topic: str) -> None:
    """Invalidate caches here now and in every process when the current transaction commits."""
    clear_local_caches()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, topic])


class _Listener:
    """One daemon thread per process holding `LISTEN modeloman_invalidate`."""

    def __init__(self) -> None:
        self._healthy = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._start_lock = threading.Lock()

    def is_healthy(self) -> bool:
        if not settings.AUTH_CACHE_ENABLED:
            return False
        if self._pid != os.getpid():  # never started, or we are a fresh fork
            self.start()
        return self._healthy.is_set()

    def start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid() and self._thread and self._thread.is_alive():
                return
            self._healthy.clear()
            self._stop.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="invalidation-listener", daemon=True)
            self._thread.start()

    def wait_until_healthy(self, timeout: float = 5.0) -> bool:
        self.is_healthy()
        return self._healthy.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_HEARTBEAT_SECONDS + 1)
        self._thread = None
        self._pid = None
        self._healthy.clear()

    def _connection_params(self) -> dict[str, Any]:
        params = connections["default"].get_connection_params()
        for django_only in ("context", "cursor_factory", "prepare_threshold", "server_side_binding"):
            params.pop(django_only, None)
        return params

    def _run(self) -> None:
        import psycopg

        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self._connection_params(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    clear_local_caches()  # anything cached while we were deaf may be stale
                    self._healthy.set()
                    backoff = 0.1
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=_HEARTBEAT_SECONDS, stop_after=1):
                            clear_local_caches()
                        conn.execute("SELECT 1")  # notice a dead connection promptly
            except Exception:
                logger.warning("invalidation listener lost its connection", exc_info=True)
            finally:
                self._healthy.clear()
                clear_local_caches()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)


listener = _Listener()
