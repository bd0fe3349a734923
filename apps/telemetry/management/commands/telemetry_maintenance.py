"""Telemetry housekeeping; run it every few minutes (cron, a systemd timer).

    manage.py telemetry_maintenance [--full] [--lookback-hours 6] [--batch-size 10000] [--apply-retention]

1. releases expired admission reservations;
2. deletes expired idempotency records, and the operational rows past their retention:
   admission decisions (ADMISSION_DECISION_RETENTION_DAYS), settled or released reservations
   (RESERVATION_RETENTION_DAYS) and ledger rows of cap windows that ended long ago
   (USAGE_LEDGER_RETENTION_DAYS; `total` windows are kept);
3. refreshes the rollups: on plain PostgreSQL recomputes the recent buckets (all of them with
   --full); on TimescaleDB refreshes the continuous aggregates over the same window (their
   policies do this too, when the scheduler runs);
4. retention: on plain PostgreSQL deletes raw telemetry older than TELEMETRY_RETENTION_DAYS;
   on TimescaleDB leaves it to the retention policies, unless --apply-retention runs them now.

Safe to start while another run is going: the second one prints that it skipped and exits 0.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.policy.ledger import reservations_expire
from apps.telemetry import maintenance
from apps.telemetry.rollups import retention_policy_horizons, rollups_refresh
from apps.telemetry.timescale import timescale_enabled


class Command(BaseCommand):
    help = ("Release expired reservations, reap idempotency records, purge old decisions, reservations "
            "and ledger windows, refresh rollups, apply retention.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--full", action="store_true",
                            help="Recompute every rollup bucket that still has raw data, not just recent ones.")
        parser.add_argument("--lookback-hours", type=int, default=6,
                            help="Recompute buckets from this long before the last run (late rows). Default 6.")
        parser.add_argument("--batch-size", type=int, default=10_000, help="Rows per delete batch. Default 10000.")
        parser.add_argument("--apply-retention", action="store_true",
                            help="TimescaleDB: run the retention policies now instead of waiting for their jobs.")

    def handle(self, *args: object, **options: Any) -> None:
        batch_size = int(options["batch_size"])
        if batch_size < 1 or int(options["lookback_hours"]) < 1:
            raise CommandError("--batch-size and --lookback-hours must be at least 1.")
        with maintenance.maintenance_lock() as acquired:
            if not acquired:
                self.stdout.write("skipped: another telemetry_maintenance run holds the lock")
                return
            self._run(full=bool(options["full"]), lookback=dt.timedelta(hours=int(options["lookback_hours"])),
                      batch_size=batch_size, apply_retention=bool(options["apply_retention"]))

    def _run(self, *, full: bool, lookback: dt.timedelta, batch_size: int, apply_retention: bool) -> None:
        now = timezone.now()
        retention = dt.timedelta(days=settings.TELEMETRY_RETENTION_DAYS)
        released = reservations_expire(now=now)
        self.stdout.write(f"reservations: released {released} expired")
        reaped = maintenance.idempotency_records_reap(now=now, batch_size=batch_size)
        self.stdout.write(f"idempotency records: deleted {reaped} expired")
        days = dt.timedelta(days=1)
        decisions = maintenance.admission_decisions_purge(
            before=now - settings.ADMISSION_DECISION_RETENTION_DAYS * days, batch_size=batch_size)
        finished = maintenance.reservations_purge(
            before=now - settings.RESERVATION_RETENTION_DAYS * days, batch_size=batch_size)
        windows = maintenance.ledger_windows_purge(
            ended_before=now - settings.USAGE_LEDGER_RETENTION_DAYS * days, batch_size=batch_size)
        self.stdout.write(f"purged: admission decisions {decisions}, finished reservations {finished}, "
                          f"ledger windows {windows}")
        # Refresh before retention, so rows are rolled up before they are deleted.
        for name, result in rollups_refresh(full=full, lookback=lookback, retention=retention, now=now).items():
            self.stdout.write(f"rollup {name}: {result}")
        if not timescale_enabled():
            deleted = maintenance.retention_apply(retention=retention, now=now, batch_size=batch_size)
            cutoff = maintenance.retention_cutoff(retention=retention, now=now)
            self.stdout.write(f"retention (before {cutoff:%Y-%m-%d}): deleted "
                              + ", ".join(f"{table} {count}" for table, count in deleted.items()))
            return
        for table, horizon in sorted(retention_policy_horizons().items()):
            if horizon != retention:  # the policies were made at migrate time
                self.stderr.write(f"note: the retention policy of {table} drops chunks after {horizon}, "
                                  f"but TELEMETRY_RETENTION_DAYS is {retention.days}")
        if apply_retention:
            dropped = maintenance.retention_policies_run()
            self.stdout.write("retention policies run: dropped chunks "
                              + ", ".join(f"{table} {count}" for table, count in dropped.items()))
        else:
            self.stdout.write("retention: left to the TimescaleDB retention policies")
