"""Is TimescaleDB on? The one answer, from the database itself (the TIMESCALE setting only chose
what `migrate` built): the rollups, the growth check and the TIMESCALE=required check ask here.
The applied migrations keep their own test, since a migration never changes once applied."""

from __future__ import annotations

from django.db import connections


def hypertables(using: str = "default") -> set[str]:
    """The hypertables of the current schema; empty when the extension is not installed."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
        if not cursor.fetchone()[0]:
            return set()
        cursor.execute("SELECT hypertable_name FROM timescaledb_information.hypertables "
                       "WHERE hypertable_schema = current_schema()")
        return {name for (name,) in cursor.fetchall()}


def timescale_enabled(using: str = "default") -> bool:
    """Whether the telemetry tables were migrated as hypertables."""
    return "prompt_attempts" in hypertables(using)
