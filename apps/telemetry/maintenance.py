"""Periodic telemetry housekeeping, run by `manage.py telemetry_maintenance`.

Every step is idempotent and works in bounded batches, each its own short transaction, so
a run can be interrupted at any point and simply run again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from apps.gateway.models import IdempotencyRecord
from apps.telemetry.rollups import floor_to

RAW_TABLES = ("prompt_attempts", "run_events", "benchmarks")
_LOCK_KEY = "hashtext('modeloman.telemetry_maintenance'), 0"


@contextmanager
def maintenance_lock() -> Iterator[bool]:
    """A session-level advisory lock: yields False (and holds nothing) when another run has it.
    A run that dies loses the lock with its connection."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_try_advisory_lock({_LOCK_KEY})")
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})")


def retention_cutoff(*, retention: dt.timedelta, now: dt.datetime) -> dt.datetime:
    """Rows before this go. Whole UTC days, like TimescaleDB's day chunks, so that the oldest
    remaining day is complete (the plain rollup refresh relies on it)."""
    return floor_to(now - retention, dt.timedelta(days=1))


def retention_apply(*, retention: dt.timedelta, now: dt.datetime, batch_size: int) -> dict[str, int]:
    """Plain PostgreSQL: delete raw telemetry older than the retention horizon, in batches.
    Rollups keep their rows (see rollups.py). Returns rows deleted per table."""
    cutoff = retention_cutoff(retention=retention, now=now)
    deleted = {}
    for table in RAW_TABLES:
        deleted[table] = 0
        while True:
            with connection.cursor() as cursor:  # autocommit: one short transaction per batch
                # By ctid: the batch is found through the time index and deleted by a TID scan.
                cursor.execute(
                    f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608  # fixed identifiers
                    f"SELECT ctid FROM {table} WHERE time < %s LIMIT %s))",
                    [cutoff, batch_size],
                )
                batch = cursor.rowcount
            deleted[table] += batch
            if batch < batch_size:
                break
    return deleted


def retention_policies_run() -> dict[str, int]:
    """TimescaleDB: run the retention policies' jobs now (their scheduler would anyway; the
    test engine has none). Returns chunks dropped per table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT job_id, hypertable_name FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_retention' AND hypertable_schema = current_schema() "
            "AND hypertable_name = ANY(%s) ORDER BY hypertable_name",
            [list(RAW_TABLES)],
        )
        jobs = cursor.fetchall()
    dropped = {}
    for job_id, table in jobs:
        before = _chunk_count(table)
        with connection.cursor() as cursor:
            cursor.execute("CALL run_job(%s)", [job_id])
        dropped[table] = before - _chunk_count(table)
    return dropped


def _chunk_count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM timescaledb_information.chunks "
                       "WHERE hypertable_schema = current_schema() AND hypertable_name = %s", [table])
        return cursor.fetchone()[0]


def _delete_in_batches(sql: str, params: dict, batch_size: int) -> int:
    """Run a DELETE of at most %(batch)s rows until a batch comes back short. Each batch is its
    own short transaction when the caller has none (the command)."""
    deleted = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, {**params, "batch": batch_size})
            batch = cursor.rowcount
        deleted += batch
        if batch < batch_size:
            return deleted


def idempotency_records_reap(*, now: dt.datetime, batch_size: int) -> int:
    """Delete idempotency records past their expiry, oldest first, in batches. Rows another
    transaction holds are skipped (they are in use) and reaped next time."""
    table = IdempotencyRecord._meta.db_table
    return _delete_in_batches(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE expires_at < %(now)s "  # noqa: S608
        "ORDER BY expires_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED)", {"now": now}, batch_size)


def admission_decisions_purge(*, before: dt.datetime, batch_size: int) -> int:
    """Delete recorded admission decisions (denials, dry-run would-denies) made before `before`."""
    return _delete_in_batches(
        "DELETE FROM policy_admissiondecision WHERE id IN (SELECT id FROM policy_admissiondecision "
        "WHERE created_at < %(before)s ORDER BY created_at LIMIT %(batch)s)", {"before": before}, batch_size)


def reservations_purge(*, before: dt.datetime, batch_size: int) -> int:
    """Delete settled and released reservations that finished before `before`. Held ones stay
    (expired ones are released first, then purged once they are old)."""
    return _delete_in_batches(
        "DELETE FROM policy_reservation WHERE id IN (SELECT id FROM policy_reservation "
        "WHERE state <> 'held' AND finished_at < %(before)s ORDER BY finished_at LIMIT %(batch)s "
        "FOR UPDATE SKIP LOCKED)", {"before": before}, batch_size)


# Ledger rows are per calendar window; a row may go once its window has ended, i.e. once it began
# more than the window's longest possible length ago (a DST change adds an hour to a local day).
# Per cap (LATERAL), so each cap's old windows are a range of the (cap_id, window_start) index.
_PURGE_LEDGER = """
    DELETE FROM policy_usageledger WHERE id IN (
        SELECT old.id FROM policy_policycap cap CROSS JOIN LATERAL (
            SELECT ledger.id FROM policy_usageledger ledger
            WHERE ledger.cap_id = cap.id AND ledger.reserved = 0
              AND ledger.window_start < %(ended_before)s - CASE cap."window"
                    WHEN 'minute' THEN interval '1 minute' WHEN 'hour' THEN interval '1 hour'
                    WHEN 'day' THEN interval '25 hours' WHEN 'week' THEN interval '169 hours'
                    ELSE interval '745 hours' END
            LIMIT %(batch)s FOR UPDATE SKIP LOCKED) old
        WHERE cap."window" <> 'total'
        LIMIT %(batch)s)
"""


def ledger_windows_purge(*, ended_before: dt.datetime, batch_size: int) -> int:
    """Delete usage-ledger rows of cap windows that ended before `ended_before`. Never a `total`
    window, nor a row something still holds a reservation on; rows locked by a running admission
    or settlement are skipped (no waiting, so no lock-order concerns) and go next time."""
    return _delete_in_batches(_PURGE_LEDGER, {"ended_before": ended_before}, batch_size)
