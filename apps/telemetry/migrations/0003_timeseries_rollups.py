"""Rollups for the leaderboard: prompt_attempts_hourly and benchmarks_daily (SPEC §7, §8).

Where prompt_attempts is a hypertable (migration 0002 chose TimescaleDB) they are continuous
aggregates with refresh policies; otherwise plain tables with the same names and columns,
which `telemetry_maintenance` refreshes (apps/telemetry/rollups.py computes the same columns).

- `id` is a deterministic UUID of the group key (md5 of bucket epoch, project, labels), so
  each row has a single-column key that the admin and the ORM can use.
- Latency is a cumulative histogram: `lat_le_<ms>` counts attempts with latency_ms <= <ms>
  (log-spaced bounds, 50 ms to 51.2 s) and `lat_gt_51200` the slower ones; p50/p95 are
  estimated from it by apps.telemetry.rollups.latency_percentile().
- The refresh policies' window starts one day inside the retention horizon: a refresh that
  reached into dropped chunks would delete the aggregates of the dropped data.
- Continuous aggregates read the recent, not yet materialized part from the raw table
  (materialized_only = false), so the current hour is always visible.
"""

import os

from django.core.exceptions import ImproperlyConfigured
from django.db import migrations, models

import django.db.models.deletion

LATENCY_BOUNDS_MS = (50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200)
HISTOGRAM = ",\n    ".join(
    [f"count(*) FILTER (WHERE latency_ms <= {bound}) AS lat_le_{bound}" for bound in LATENCY_BOUNDS_MS]
    + [f"count(*) FILTER (WHERE latency_ms > {LATENCY_BOUNDS_MS[-1]}) AS lat_gt_{LATENCY_BOUNDS_MS[-1]}"]
)
HISTOGRAM_COLUMNS = ",\n    ".join(
    [f"lat_le_{bound} bigint NOT NULL" for bound in LATENCY_BOUNDS_MS] + [f"lat_gt_{LATENCY_BOUNDS_MS[-1]} bigint NOT NULL"]
)

HOURLY_CAGG = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS prompt_attempts_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    md5(concat_ws(chr(31), extract(epoch FROM time_bucket(INTERVAL '1 hour', time))::bigint,
                  project_id, model, prompt_name, prompt_version))::uuid AS id,
    time_bucket(INTERVAL '1 hour', time) AS bucket,
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
GROUP BY time_bucket(INTERVAL '1 hour', time), project_id, model, prompt_name, prompt_version
WITH NO DATA;
CREATE INDEX IF NOT EXISTS prompt_attempts_hourly_id_idx ON prompt_attempts_hourly (id);
"""

DAILY_CAGG = """
CREATE MATERIALIZED VIEW IF NOT EXISTS benchmarks_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    md5(concat_ws(chr(31), extract(epoch FROM time_bucket(INTERVAL '1 day', time))::bigint,
                  project_id, suite, model, prompt_name, prompt_version))::uuid AS id,
    time_bucket(INTERVAL '1 day', time) AS day,
    project_id, suite, model, prompt_name, prompt_version,
    count(*) AS runs,
    sum(score) AS score_sum,
    avg(score) AS score_avg,
    min(score) AS score_min,
    max(score) AS score_max,
    sum(passed)::bigint AS passed,
    sum(total)::bigint AS total
FROM benchmarks
GROUP BY time_bucket(INTERVAL '1 day', time), project_id, suite, model, prompt_name, prompt_version
WITH NO DATA;
CREATE INDEX IF NOT EXISTS benchmarks_daily_id_idx ON benchmarks_daily (id);
"""

# Same names, columns and types as the continuous aggregates above. Sums of tokens and
# latency are cast to bigint there, cost stays numeric.
PLAIN_ROLLUPS = f"""
CREATE TABLE IF NOT EXISTS prompt_attempts_hourly (
    id uuid PRIMARY KEY,
    bucket timestamptz NOT NULL,
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
    UNIQUE (bucket, project_id, model, prompt_name, prompt_version)
);
CREATE INDEX IF NOT EXISTS prompt_attempts_hourly_project_bucket_idx ON prompt_attempts_hourly (project_id, bucket DESC);
CREATE INDEX IF NOT EXISTS prompt_attempts_hourly_model_bucket_idx ON prompt_attempts_hourly (model, bucket DESC);

CREATE TABLE IF NOT EXISTS benchmarks_daily (
    id uuid PRIMARY KEY,
    day timestamptz NOT NULL,
    project_id bigint NOT NULL,
    suite text NOT NULL,
    model text NOT NULL,
    prompt_name text NOT NULL,
    prompt_version text NOT NULL,
    runs bigint NOT NULL,
    score_sum double precision NOT NULL,
    score_avg double precision NOT NULL,
    score_min double precision NOT NULL,
    score_max double precision NOT NULL,
    passed bigint NULL,
    total bigint NULL,
    UNIQUE (day, project_id, suite, model, prompt_name, prompt_version)
);
CREATE INDEX IF NOT EXISTS benchmarks_daily_suite_day_idx ON benchmarks_daily (suite, day DESC);

-- How far each plain rollup has been refreshed (telemetry_maintenance).
CREATE TABLE IF NOT EXISTS telemetry_rollup_watermark (
    rollup text PRIMARY KEY,
    refreshed_to timestamptz NOT NULL
);
"""

DROP_PLAIN_ROLLUPS = "DROP TABLE IF EXISTS prompt_attempts_hourly, benchmarks_daily, telemetry_rollup_watermark"
# Dropping a continuous aggregate drops its refresh policy and materialized data.
DROP_CAGGS = "DROP MATERIALIZED VIEW IF EXISTS prompt_attempts_hourly; DROP MATERIALIZED VIEW IF EXISTS benchmarks_daily"


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
    # Same variable, default and minimum as migration 0002.
    raw = os.environ.get("TELEMETRY_RETENTION_DAYS", "").strip() or "90"
    try:
        days = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"TELEMETRY_RETENTION_DAYS must be a whole number, not {raw!r}.") from None
    if days < 4:
        raise ImproperlyConfigured(f"TELEMETRY_RETENTION_DAYS must be at least 4, not {days}.")
    return days


def create_rollups(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        timescale = _is_hypertable(cursor, "prompt_attempts")
    if not timescale:
        schema_editor.execute(PLAIN_ROLLUPS)
        return
    window_days = _retention_days() - 1  # inside the retained range (see the module docstring)
    schema_editor.execute(HOURLY_CAGG)
    schema_editor.execute(DAILY_CAGG)
    schema_editor.execute(
        f"SELECT add_continuous_aggregate_policy('prompt_attempts_hourly', start_offset => INTERVAL '{window_days} days', "
        "end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => true)"
    )
    schema_editor.execute(
        f"SELECT add_continuous_aggregate_policy('benchmarks_daily', start_offset => INTERVAL '{window_days} days', "
        "end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour', if_not_exists => true)"
    )


def drop_rollups(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        # A continuous aggregate is a view (relkind 'v'); the plain rollup is a table.
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('prompt_attempts_hourly')")
        row = cursor.fetchone()
    if row is not None and row[0] == "v":
        schema_editor.execute(DROP_CAGGS)
    schema_editor.execute(DROP_PLAIN_ROLLUPS)


def _project():
    return models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING,
                             related_name="+", to="keys.project")


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0002_timeseries_tables")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create_rollups, drop_rollups)],
            state_operations=[
                migrations.CreateModel(
                    name="PromptAttemptHourly",
                    fields=[
                        ("id", models.UUIDField(primary_key=True, serialize=False)),
                        ("bucket", models.DateTimeField()),
                        ("model", models.TextField()),
                        ("prompt_name", models.TextField()),
                        ("prompt_version", models.TextField()),
                        ("attempts", models.BigIntegerField()),
                        ("successes", models.BigIntegerField()),
                        ("priced_attempts", models.BigIntegerField()),
                        ("cost_usd", models.DecimalField(decimal_places=6, max_digits=24, null=True)),
                        ("input_tokens", models.BigIntegerField()),
                        ("output_tokens", models.BigIntegerField()),
                        ("latency_ms_sum", models.BigIntegerField()),
                        *[(f"lat_le_{bound}", models.BigIntegerField()) for bound in LATENCY_BOUNDS_MS],
                        ("lat_gt_51200", models.BigIntegerField()),
                        ("project", _project()),
                    ],
                    options={
                        "verbose_name": "prompt attempts (hourly)",
                        "verbose_name_plural": "prompt attempts (hourly)",
                        "db_table": "prompt_attempts_hourly",
                        "managed": False,
                    },
                ),
                migrations.CreateModel(
                    name="BenchmarkDaily",
                    fields=[
                        ("id", models.UUIDField(primary_key=True, serialize=False)),
                        ("day", models.DateTimeField()),
                        ("suite", models.TextField()),
                        ("model", models.TextField()),
                        ("prompt_name", models.TextField()),
                        ("prompt_version", models.TextField()),
                        ("runs", models.BigIntegerField()),
                        ("score_sum", models.FloatField()),
                        ("score_avg", models.FloatField()),
                        ("score_min", models.FloatField()),
                        ("score_max", models.FloatField()),
                        ("passed", models.BigIntegerField(null=True)),
                        ("total", models.BigIntegerField(null=True)),
                        ("project", _project()),
                    ],
                    options={
                        "verbose_name": "benchmarks (daily)",
                        "verbose_name_plural": "benchmarks (daily)",
                        "db_table": "benchmarks_daily",
                        "managed": False,
                    },
                ),
            ],
        ),
    ]
