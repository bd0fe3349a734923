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
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    last_used: float | None = None  # when a cursor was last opened on this connection (monotonic)

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
