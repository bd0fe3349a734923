"""Rollups: prompt_attempts_hourly and benchmarks_daily (migration 0003), and the leaderboard's
leaderboard_attempts_daily (apps/leaderboard/migrations/0002).

On TimescaleDB they are continuous aggregates, refreshed by their policies (and by
`telemetry_maintenance` for the recent window). On plain PostgreSQL they are tables that
`rollups_refresh()` keeps up to date: each run recomputes every bucket from a little before
the last run's watermark (`lookback`, for late rows) up to now. Buckets older than the raw
data still present are never touched, so — as with Timescale — rollups outlive retention.

Latency: `lat_le_<N>` counts attempts with latency_ms <= N (cumulative, like Prometheus'
`le` buckets), `lat_gt_51200` the slower ones. The bounds double from 50 ms to 51.2 s,
so an estimate is never off by more than a factor of two, and usually much less.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from apps.telemetry.timescale import timescale_enabled

LATENCY_BOUNDS_MS = (50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200)
LATENCY_COLUMNS = tuple(f"lat_le_{bound}" for bound in LATENCY_BOUNDS_MS)
LATENCY_OVERFLOW_COLUMN = f"lat_gt_{LATENCY_BOUNDS_MS[-1]}"
# For queries that combine rollup rows (several hours, projects or prompt versions): the
# counts of a cumulative histogram add up like any other count.
LATENCY_SUMS_SQL = ", ".join(f"sum({column})::bigint AS {column}"
                             for column in (*LATENCY_COLUMNS, LATENCY_OVERFLOW_COLUMN))


def latency_percentile(row: Mapping[str, Any] | Any, q: float) -> float | None:
    """Estimate the q-quantile (0 < q <= 1; 0.5 for p50, 0.95 for p95) of latency in ms from
    a rollup row's histogram — a mapping or an object with the lat_* columns, one row or
    their sums. Interpolates linearly inside the bucket, as Prometheus' histogram_quantile
    does. Beyond the last bound it returns that bound (51200: "at least 51.2 s").
    None when there are no attempts."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], not {q}")
    value = row.__getitem__ if isinstance(row, Mapping) else row.__getattribute__
    cumulative = [int(value(column) or 0) for column in LATENCY_COLUMNS]
    total = cumulative[-1] + int(value(LATENCY_OVERFLOW_COLUMN) or 0)
    if total == 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0, 0
    for bound, count in zip(LATENCY_BOUNDS_MS, cumulative, strict=True):
        if count >= rank:  # count > lower_count here, because lower_count < rank
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return float(LATENCY_BOUNDS_MS[-1])


# --- refreshing -------------------------------------------------------------------------------

_HISTOGRAM_SQL = ", ".join(
    [f"count(*) FILTER (WHERE latency_ms <= {bound})" for bound in LATENCY_BOUNDS_MS]
    + [f"count(*) FILTER (WHERE latency_ms > {LATENCY_BOUNDS_MS[-1]})"]
)
# date_bin with a UTC origin buckets exactly like time_bucket, whatever the session time zone.
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


@dataclass(frozen=True)
class Rollup:
    name: str
    source: str
    bucket_column: str
    width: dt.timedelta
    insert_sql: str  # recompute every bucket >= %(since)s from the source table


def _attempts_rollup_sql(table: str, bucket_column: str, width: str) -> str:
    """Recompute `table`'s buckets of `width` (hourly, daily) from prompt_attempts, from %(since)s.
    The id is a hash of the group, so a bucket recomputed later replaces its row."""
    return f"""
            INSERT INTO {table}
            SELECT md5(concat_ws(chr(31), extract(epoch FROM b.{bucket_column})::bigint, b.project_id, b.model,
                                 b.prompt_name, b.prompt_version))::uuid, b.*
            FROM (
                SELECT date_bin(INTERVAL '{width}', time, {_ORIGIN}) AS {bucket_column},
                       project_id, model, prompt_name, prompt_version,
                       count(*), count(*) FILTER (WHERE success), count(cost_usd), sum(cost_usd),
                       sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(latency_ms)::bigint,
                       {_HISTOGRAM_SQL}
                FROM prompt_attempts
                WHERE time >= %(since)s
                GROUP BY 1, 2, 3, 4, 5
            ) AS b
        """  # noqa: S608  # only constants are interpolated


ROLLUPS = (
    Rollup(
        name="prompt_attempts_hourly",
        source="prompt_attempts",
        bucket_column="bucket",
        width=dt.timedelta(hours=1),
        insert_sql=_attempts_rollup_sql("prompt_attempts_hourly", "bucket", "1 hour"),
    ),
    # The leaderboard's daily rollup (apps/leaderboard/migrations/0002): the same columns as
    # prompt_attempts_hourly, per UTC day.
    Rollup(
        name="leaderboard_attempts_daily",
        source="prompt_attempts",
        bucket_column="day",
        width=dt.timedelta(days=1),
        insert_sql=_attempts_rollup_sql("leaderboard_attempts_daily", "day", "1 day"),
    ),
    Rollup(
        name="benchmarks_daily",
        source="benchmarks",
        bucket_column="day",
        width=dt.timedelta(days=1),
        insert_sql=f"""
            INSERT INTO benchmarks_daily
            SELECT md5(concat_ws(chr(31), extract(epoch FROM b.day)::bigint, b.project_id, b.suite, b.model,
                                 b.prompt_name, b.prompt_version))::uuid, b.*
            FROM (
                SELECT date_bin(INTERVAL '1 day', time, {_ORIGIN}) AS day,
                       project_id, suite, model, prompt_name, prompt_version,
                       count(*), sum(score), avg(score), min(score), max(score),
                       sum(passed)::bigint, sum(total)::bigint
                FROM benchmarks
                WHERE time >= %(since)s
                GROUP BY 1, 2, 3, 4, 5, 6
            ) AS b
        """,  # noqa: S608  # only constants are interpolated
    ),
)


def floor_to(moment: dt.datetime, width: dt.timedelta) -> dt.datetime:
    """The start of the (UTC-aligned) bucket of this width that contains `moment`."""
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return epoch + (moment - epoch) // width * width


def rollups_refresh(*, full: bool = False, lookback: dt.timedelta = dt.timedelta(hours=6),
                    retention: dt.timedelta, now: dt.datetime | None = None) -> dict[str, str]:
    """Bring the rollups up to date; returns what was refreshed, per rollup, for the log.

    Timescale: refresh the continuous aggregates from `lookback` ago (with `full`, from one
    day inside the retention horizon — never earlier, or the aggregates of dropped chunks
    would be deleted). Must run outside a transaction (TimescaleDB refuses otherwise).
    Plain PostgreSQL: recompute buckets from the watermark minus `lookback` (with `full`,
    from the oldest raw row) in one transaction per rollup. Idempotent."""
    now = now or timezone.now()
    if not timescale_enabled():
        return {rollup.name: _refresh_plain(rollup, full=full, lookback=lookback, now=now) for rollup in ROLLUPS}
    done = {}
    for rollup in ROLLUPS:
        # The policy's horizon wins over the setting: the policy is what actually drops chunks.
        horizon = min(retention, retention_policy_horizons().get(rollup.source, retention))
        earliest = ceil_to(now - horizon + dt.timedelta(days=1), rollup.width)
        start = earliest if full else max(earliest, floor_to(now - lookback, rollup.width))
        with connection.cursor() as cursor:
            cursor.execute("CALL refresh_continuous_aggregate(%s, %s, NULL)", [rollup.name, start])
        done[rollup.name] = f"refreshed from {start:%Y-%m-%d %H:%M}"
    return done


def retention_policy_horizons() -> dict[str, dt.timedelta]:
    """TimescaleDB: each hypertable's retention policy horizon (drop_after), as migrated."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT hypertable_name, (config->>'drop_after')::interval FROM timescaledb_information.jobs "
                       "WHERE proc_name = 'policy_retention' AND hypertable_schema = current_schema()")
        return dict(cursor.fetchall())


def ceil_to(moment: dt.datetime, width: dt.timedelta) -> dt.datetime:
    start = floor_to(moment, width)
    return start if start == moment else start + width


def _refresh_plain(rollup: Rollup, *, full: bool, lookback: dt.timedelta, now: dt.datetime) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        # Serializes refreshes of the same rollup until this transaction ends.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('modeloman.rollup'), hashtext(%s))", [rollup.name])
        cursor.execute("SELECT refreshed_to FROM telemetry_rollup_watermark WHERE rollup = %s", [rollup.name])
        row = cursor.fetchone()
        watermark = row[0] if row else None
        cursor.execute(f"SELECT min(time) FROM {rollup.source}")  # noqa: S608  # fixed identifier; time index
        oldest = cursor.fetchone()[0]
        if oldest is None:
            result = "no raw rows"
        else:
            # Buckets before the oldest raw row's day keep their rows: their raw data is gone
            # (retention deletes whole UTC days, so that day itself is complete).
            since = floor_to(oldest, dt.timedelta(days=1))
            if not full and watermark is not None:
                since = max(since, floor_to(min(watermark, now) - lookback, rollup.width))
            cursor.execute(f"DELETE FROM {rollup.name} WHERE {rollup.bucket_column} >= %s", [since])  # noqa: S608
            cursor.execute(rollup.insert_sql, {"since": since})
            result = f"recomputed {cursor.rowcount} rows from {since:%Y-%m-%d %H:%M}"
        cursor.execute("INSERT INTO telemetry_rollup_watermark (rollup, refreshed_to) VALUES (%s, %s) "
                       "ON CONFLICT (rollup) DO UPDATE SET refreshed_to = excluded.refreshed_to", [rollup.name, now])
    return result
