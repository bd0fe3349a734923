"""Rollup leaderboard_attempts_daily: prompt attempts per UTC day (SPEC §7, §8).

The 7- and 30-day boards would otherwise sum 24x as many rows of prompt_attempts_hourly on
every uncached page view. Same columns as prompt_attempts_hourly (telemetry 0003), one row
per (day, project, model, prompt name, prompt version), and built the same two ways:

- prompt_attempts is a hypertable: a continuous aggregate over it (materialized_only = false,
  so today is visible), with a refresh policy whose window stays one day inside retention;
- plain PostgreSQL: a table with the same name and columns that rollups_refresh()
  (apps/telemetry/rollups.py, run by telemetry_maintenance) recomputes.
"""

import os

from django.core.exceptions import ImproperlyConfigured
from django.db import migrations

LATENCY_BOUNDS_MS = (50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200)
HISTOGRAM = ",\n    ".join(
    [f"count(*) FILTER (WHERE latency_ms <= {bound}) AS lat_le_{bound}" for bound in LATENCY_BOUNDS_MS]
    + [f"count(*) FILTER (WHERE latency_ms > {LATENCY_BOUNDS_MS[-1]}) AS lat_gt_{LATENCY_BOUNDS_MS[-1]}"]
)
HISTOGRAM_COLUMNS = ",\n    ".join(
    [f"lat_le_{bound} bigint NOT NULL" for bound in LATENCY_BOUNDS_MS] + [f"lat_gt_{LATENCY_BOUNDS_MS[-1]} bigint NOT NULL"]
)

DAILY_CAGG = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS leaderboard_attempts_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    md5(concat_ws(chr(31), extract(epoch FROM time_bucket(INTERVAL '1 day', time))::bigint,
                  project_id, model, prompt_name, prompt_version))::uuid AS id,
    time_bucket(INTERVAL '1 day', time) AS day,
    project_id, model, prompt_name, prompt_version,
    count(*) AS attempts,
    count(*) FILTER (WHERE success) AS successes,
    count(cost_usd) AS priced_attempts,
    sum(cost_usd) AS cost_usd,
    sum(input_tokens)::bigint AS input_tokens,
    sum(output_tokens)::bigint AS output_tokens,
    sum(latency_ms)::bigint AS latency_ms_sum,
    {HISTOGRAM}
FROM prompt_attempts
GROUP BY time_bucket(INTERVAL '1 day', time), project_id, model, prompt_name, prompt_version
WITH NO DATA;
"""

PLAIN_TABLE = f"""
CREATE TABLE IF NOT EXISTS leaderboard_attempts_daily (
    id uuid PRIMARY KEY,
    day timestamptz NOT NULL,
    project_id bigint NOT NULL,
    model text NOT NULL,
    prompt_name text NOT NULL,
    prompt_version text NOT NULL,
    attempts bigint NOT NULL,
    successes bigint NOT NULL,
    priced_attempts bigint NOT NULL,
    cost_usd numeric NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    latency_ms_sum bigint NOT NULL,
    {HISTOGRAM_COLUMNS},
    UNIQUE (day, project_id, model, prompt_name, prompt_version)
);
"""

DROP_PLAIN = "DROP TABLE IF EXISTS leaderboard_attempts_daily"
DROP_CAGG = "DROP MATERIALIZED VIEW IF EXISTS leaderboard_attempts_daily"


def _is_hypertable(cursor, table):
    cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
    if not cursor.fetchone()[0]:
        return False
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = %s)",
        [table],
    )
    return cursor.fetchone()[0]


def _retention_days():
    # Same variable, default and minimum as telemetry 0002 and 0003.
    raw = os.environ.get("TELEMETRY_RETENTION_DAYS", "").strip() or "90"
    try:
        days = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"TELEMETRY_RETENTION_DAYS must be a whole number, not {raw!r}.") from None
    if days < 4:
        raise ImproperlyConfigured(f"TELEMETRY_RETENTION_DAYS must be at least 4, not {days}.")
    return days


def create_rollup(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        timescale = _is_hypertable(cursor, "prompt_attempts")
    if not timescale:
        schema_editor.execute(PLAIN_TABLE)
        return
    schema_editor.execute(DAILY_CAGG)
    schema_editor.execute(
        f"SELECT add_continuous_aggregate_policy('leaderboard_attempts_daily', "
        f"start_offset => INTERVAL '{_retention_days() - 1} days', end_offset => INTERVAL '1 hour', "
        "schedule_interval => INTERVAL '1 hour', if_not_exists => true)"
    )


def drop_rollup(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('leaderboard_attempts_daily')")
        row = cursor.fetchone()
    if row is not None and row[0] == "v":  # a continuous aggregate (its policy goes with it)
        schema_editor.execute(DROP_CAGG)
    schema_editor.execute(DROP_PLAIN)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('telemetry_rollup_watermark') IS NOT NULL")
        if cursor.fetchone()[0]:
            cursor.execute("DELETE FROM telemetry_rollup_watermark WHERE rollup = 'leaderboard_attempts_daily'")


class Migration(migrations.Migration):
    dependencies = [
        ("leaderboard", "0001_initial"),
        ("telemetry", "0003_timeseries_rollups"),
    ]

    operations = [migrations.RunPython(create_rollup, drop_rollup)]
