"""Django's PostgreSQL backend with a cheaper health check (settings: ENGINE "modeloman.db").

CONN_HEALTH_CHECKS makes Django send `SELECT 1` before the first query of every request on a
reused connection: one more round trip per request, the same price whether the connection sat idle
for an hour or answered a millisecond ago. Here a connection that finished a request less than
DB_HEALTH_CHECK_IDLE_SECONDS ago is taken as alive; one idle for longer is checked as before, so
a connection the server dropped while it idled (a restart, an idle timeout, a failover) is replaced
before a request uses it. Under load no request pays for the check (an admission's statements went
from 5 to 4). What that gives up: a connection broken within the last second fails its next request
(503 `database_unavailable`), and Django closes it at that request's end, as without health checks.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    idle_since: float | None = None  # when this connection last finished a request

    def close_if_unusable_or_obsolete(self) -> None:
        """Django calls this when a request (or a gRPC call) ends."""
        super().close_if_unusable_or_obsolete()
        self.idle_since = time.monotonic() if self.connection is not None else None

    def close_if_health_check_failed(self) -> None:
        if (self.connection is not None and not self.health_check_done and self.idle_since is not None
                and time.monotonic() - self.idle_since < settings.DB_HEALTH_CHECK_IDLE_SECONDS):
            self.health_check_done: bool = True  # busy, so alive: until this request ends
            return
        super().close_if_health_check_failed()
