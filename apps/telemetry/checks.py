"""TIMESCALE=required: refuse to run without TimescaleDB (SPEC §7).

The application never creates the extension or any table at startup; it only checks. Where
the check runs: `manage.py check --database default` (and every `migrate`), and
`modeloman/wsgi.py` at import, so a web worker refuses to start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from apps.telemetry.timescale import timescale_enabled


def verify_timescale(using: str = "default", *, before_migrate: bool = False) -> None:
    """Raise ImproperlyConfigured when TIMESCALE=required and the database lacks TimescaleDB:
    the extension is not installed, or the telemetry tables were migrated as plain tables.
    `before_migrate=True` accepts an extension the server offers but nobody created yet,
    because `migrate` will create it."""
    if settings.TIMESCALE != "required":
        return
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),"
            " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
            " to_regclass('prompt_attempts') IS NOT NULL"
        )
        installed, available, migrated = cursor.fetchone()
    if installed and migrated and not timescale_enabled(using):
        raise ImproperlyConfigured(
            "TIMESCALE=required, but prompt_attempts is a plain table: the telemetry migrations ran "
            "without TimescaleDB. Convert the tables (create_hypertable(..., migrate_data => true)) or "
            "migrate telemetry back to 0001 and forward again with TIMESCALE=required."
        )
    if installed or (before_migrate and available and not migrated):
        return
    raise ImproperlyConfigured(
        f"TIMESCALE=required, but the timescaledb extension is not installed in database "
        f"{connection.settings_dict['NAME']!r}"
        + ("" if available else " (and this PostgreSQL server does not offer it)")
        + ". Install TimescaleDB and run `manage.py migrate`, or set TIMESCALE=auto."
    )


@checks.register(checks.Tags.database)
def timescale_check(app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None,
                    **kwargs: Any) -> list[checks.CheckMessage]:
    """Database checks run only when asked for (`check --database`, `migrate`)."""
    if not databases or "default" not in databases:
        return []
    try:
        verify_timescale("default", before_migrate=True)
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="telemetry.E001")]
    return []
