"""Django's PostgreSQL backend with a cheaper health check (settings: ENGINE "modeloman.db").

CONN_HEALTH_CHECKS makes Django send `SELECT 1` before the first query of every request on a
reused connection: one more round trip per request, the same price whether the connection sat idle
for an hour or answered a millisecond ago. Here a connection last used less than
DB_HEALTH_CHECK_IDLE_SECONDS ago is taken as alive; one idle for longer is checked as before, so
a connection the server dropped while it idled (a restart, an idle timeout, a failover) is replaced
before a request uses it. Under load no request pays for the check (an admission over the wire went
from 6 round trips to 5). What that gives up: a connection broken within the last second fails its
next request (503 `database_unavailable`), and Django closes it at that request's end, as it does
without health checks.

`prepared_cursor()` is for the few statements every agent sends all the time (the admission): their
parameters are bound on the server and the statement is prepared once per connection, so neither
side parses or plans it again (docs/benchmarks.md, "Seventh session"). Every other query keeps
Django's client-side binding. DB_PREPARED_STATEMENTS=false turns it off, for a pooler that cannot
keep a connection's prepared statements (PgBouncer in transaction mode before 1.21, or without
`max_prepared_statements`).
"""

from __future__ import annotations

import time
from typing import Any, cast

import psycopg
from django.conf import settings
from django.db import connection
from django.db.backends.postgresql import base


class PreparedCursor(psycopg.Cursor):
    """Parameters bound on the server; each statement prepared the first time this connection runs it."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None, **kwargs: Any) -> Any:
        return super().execute(query, params, prepare=True if prepare is None else prepare, **kwargs)

    def _convert_query(self, query: Any, params: Any = None) -> Any:
        # Django's query log (DEBUG, and the tests' query counts) reads psycopg's private `_query`,
        # which psycopg sets only for a statement it sends unprepared (psycopg is pinned).
        self._query = super()._convert_query(query, params)
        return self._query


class DatabaseWrapper(base.DatabaseWrapper):
    last_used: float | None = None  # when a cursor was last opened on this connection (monotonic)
    _next_cursor_prepared = False

    def close_if_health_check_failed(self) -> None:
        if (self.connection is not None and not self.health_check_done and self.last_used is not None
                and time.monotonic() - self.last_used < settings.DB_HEALTH_CHECK_IDLE_SECONDS):
            self.health_check_done: bool = True  # in use just now, so alive: until this request ends
            return
        super().close_if_health_check_failed()

    def cursor(self) -> Any:
        cursor = super().cursor()  # checks first (close_if_health_check_failed), then connects
        self.last_used = time.monotonic()
        return cursor

    def prepared_cursor(self) -> Any:
        """`cursor()`, with its statements prepared (module docstring) unless DB_PREPARED_STATEMENTS is off."""
        self._next_cursor_prepared = settings.DB_PREPARED_STATEMENTS
        try:
            return self.cursor()
        finally:
            self._next_cursor_prepared = False

    def create_cursor(self, name: str | None = None) -> Any:
        if name or not self._next_cursor_prepared:
            return super().create_cursor(name)
        client_cursor, self.connection.cursor_factory = self.connection.cursor_factory, PreparedCursor
        try:
            return super().create_cursor(name)
        finally:
            self.connection.cursor_factory = client_cursor


def prepared_cursor() -> Any:
    """The default connection's `prepared_cursor()`."""
    return cast(DatabaseWrapper, connection).prepared_cursor()
