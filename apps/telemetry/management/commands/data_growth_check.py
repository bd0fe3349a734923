"""Warn before the big tables outgrow the disk: rows and on-disk size against limits.

    manage.py data_growth_check [--max-rows [TABLE=]N ...] [--max-size [TABLE=]SIZE ...]

Limits: built-in defaults per table, overridden by DATA_GROWTH_MAX_ROWS / DATA_GROWTH_MAX_SIZE
(comma-separated, same syntax) and then by the options. A value without `TABLE=` applies
to every table. Sizes are PostgreSQL sizes ("500 GB", "20MB", bytes). Rows are the
planner's estimate (pg_class.reltuples; approximate_row_count on hypertables), counted
exactly below 100,000. Size includes indexes and TOAST (hypertable_size on hypertables,
compressed chunks included). Prints a table; exits 1 when any table is over a limit.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent
from apps.gateway.models import IdempotencyRecord
from apps.policy.models import AdmissionDecision, Reservation, UsageLedger
from apps.telemetry.models import Run
from apps.telemetry.timescale import hypertables

GIB = 1024**3
# table -> (rows, bytes). Generous: these say "plan capacity now", not "something broke".
DEFAULT_LIMITS = {
    "prompt_attempts": (2_000_000_000, 500 * GIB),
    "run_events": (2_000_000_000, 200 * GIB),
    "benchmarks": (50_000_000, 20 * GIB),
    AuditEvent._meta.db_table: (200_000_000, 100 * GIB),
    IdempotencyRecord._meta.db_table: (100_000_000, 50 * GIB),
    # Purged by telemetry_maintenance after their retention: growth here means it is not running.
    AdmissionDecision._meta.db_table: (100_000_000, 50 * GIB),
    Reservation._meta.db_table: (200_000_000, 100 * GIB),
    UsageLedger._meta.db_table: (50_000_000, 20 * GIB),
    Run._meta.db_table: (100_000_000, 50 * GIB),
}
EXACT_BELOW = 100_000


class Command(BaseCommand):
    help = "Report rows and disk size of the big tables; exit 1 when any is over its limit."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-rows", action="append", default=[], metavar="[TABLE=]N",
                            help="Row limit, for one table or (without TABLE=) all. Repeatable.")
        parser.add_argument("--max-size", action="append", default=[], metavar="[TABLE=]SIZE",
                            help='Size limit such as "200 GB", for one table or all. Repeatable.')

    def handle(self, *args: object, **options: Any) -> None:
        row_limits = {table: rows for table, (rows, _) in DEFAULT_LIMITS.items()}
        size_limits = {table: size for table, (_, size) in DEFAULT_LIMITS.items()}
        for spec in [*_split(settings.DATA_GROWTH_MAX_ROWS), *options["max_rows"]]:
            _apply(row_limits, spec, _parse_rows)
        for spec in [*_split(settings.DATA_GROWTH_MAX_SIZE), *options["max_size"]]:
            _apply(size_limits, spec, _parse_size)

        timescale_tables = hypertables()
        over = []
        self.stdout.write(f"{'table':<30} {'rows':>15} {'row limit':>15} {'size':>10} {'size limit':>10}  status")
        for table in DEFAULT_LIMITS:
            measured = _measure(table, hypertable=table in timescale_tables)
            if measured is None:
                self.stdout.write(f"{table:<30} {'-':>15} {'':>15} {'-':>10} {'':>10}  missing (not migrated?)")
                continue
            rows, size = measured
            problems = [what for what, value, limit in (("rows", rows, row_limits[table]),
                                                        ("size", size, size_limits[table])) if value > limit]
            over += [f"{table} ({what})" for what in problems]
            status = "OVER: " + ", ".join(problems) if problems else "ok"
            self.stdout.write(f"{table:<30} {rows:>15,} {row_limits[table]:>15,} {_pretty(size):>10} "
                              f"{_pretty(size_limits[table]):>10}  {status}")
        if over:
            raise CommandError(f"over the limit: {', '.join(over)}")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _apply(limits: dict[str, int], spec: str, parse) -> None:
    table, sep, value = spec.rpartition("=")
    if not sep:
        for name in limits:
            limits[name] = parse(value)
        return
    if table.strip() not in limits:
        raise CommandError(f"unknown table {table!r} in {spec!r}; known: {', '.join(limits)}")
    limits[table.strip()] = parse(value)


def _parse_rows(value: str) -> int:
    try:
        rows = int(value.replace("_", "").strip())
    except ValueError:
        raise CommandError(f"not a row count: {value!r}") from None
    if rows < 0:
        raise CommandError(f"not a row count: {value!r}")
    return rows


def _parse_size(value: str) -> int:
    """PostgreSQL's own parser, so "500 GB" means what pg_size_pretty prints."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_size_bytes(%s)", [value.strip()])
            return int(cursor.fetchone()[0])
    except DatabaseError:
        raise CommandError(f'not a size: {value!r} (examples: "500 GB", "20MB", "1048576")') from None


def _pretty(size: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 10 * 1024:
            return f"{size} {unit}"
        size //= 1024
    return f"{size} TB"


def _measure(table: str, *, hypertable: bool) -> tuple[int, int] | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [table])
        if cursor.fetchone()[0] is None:
            return None
        if hypertable:
            cursor.execute("SELECT approximate_row_count(%s::regclass), hypertable_size(%s::regclass)", [table, table])
        else:
            cursor.execute("SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
                           "WHERE oid = %s::regclass", [table])
        rows, size = cursor.fetchone()
        if rows is None or rows < EXACT_BELOW:  # never analyzed (-1), or small enough to count
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608  # table names from DEFAULT_LIMITS
            rows = cursor.fetchone()[0]
        return int(rows), int(size or 0)
