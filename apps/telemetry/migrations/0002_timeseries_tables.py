"""Telemetry time series: prompt_attempts, run_events, benchmarks (SPEC §2, §7).

With TimescaleDB they are hypertables (1-day chunks) with compression and retention
policies; without it, plain tables with the same columns and indexes, whose retention
`telemetry_maintenance` applies. Which one is decided here, at migrate time:

- TIMESCALE=auto (default): use the extension if the database has it or the server offers it.
- TIMESCALE=required: the same, but fail when the extension cannot be had.
- TIMESCALE=off: plain tables even if the extension is there.

Migrations import no app code, so the settings are read from os.environ (the same variables
as modeloman/settings/base.py; `manage.py` has already loaded `.env` into os.environ).
Later migrations follow what this one built (is prompt_attempts a hypertable?), not the
environment. Policy horizons are fixed at migrate time; docs/architecture.md says how to
change them later.
"""

import os
import sys

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, migrations, models, transaction

import django.db.models.deletion

# time is in every unique index: a hypertable requires it, and plain tables keep the same shape.
TABLES = """
CREATE TABLE IF NOT EXISTS prompt_attempts (
    time timestamptz NOT NULL,
    id uuid NOT NULL,
    project_id bigint NOT NULL,
    agent_id bigint NOT NULL,
    run_id uuid NULL,
    reservation_id uuid NULL,
    model text NOT NULL,
    prompt_name text NOT NULL DEFAULT '',
    prompt_version text NOT NULL DEFAULT '',
    success boolean NOT NULL,
    error_code text NOT NULL DEFAULT '',
    input_tokens bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL CHECK (output_tokens >= 0),
    latency_ms integer NOT NULL CHECK (latency_ms BETWEEN 0 AND 3600000),
    cost_usd numeric(18, 6) NULL CHECK (cost_usd >= 0),
    reported_cost_usd numeric(18, 6) NULL CHECK (reported_cost_usd >= 0),
    attributes jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, time)
);
CREATE INDEX IF NOT EXISTS prompt_attempts_time_idx ON prompt_attempts (time DESC);
CREATE INDEX IF NOT EXISTS prompt_attempts_project_time_idx ON prompt_attempts (project_id, time DESC);
CREATE INDEX IF NOT EXISTS prompt_attempts_agent_time_idx ON prompt_attempts (agent_id, time DESC);
CREATE INDEX IF NOT EXISTS prompt_attempts_run_time_idx ON prompt_attempts (run_id, time) WHERE run_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS run_events (
    time timestamptz NOT NULL,
    id uuid NOT NULL,
    run_id uuid NOT NULL,
    project_id bigint NOT NULL,
    agent_id bigint NOT NULL,
    kind text NOT NULL,
    message text NOT NULL DEFAULT '',
    attributes jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, time)
);
CREATE INDEX IF NOT EXISTS run_events_time_idx ON run_events (time DESC);
CREATE INDEX IF NOT EXISTS run_events_run_time_idx ON run_events (run_id, time);

CREATE TABLE IF NOT EXISTS benchmarks (
    time timestamptz NOT NULL,
    id uuid NOT NULL,
    project_id bigint NOT NULL,
    agent_id bigint NOT NULL,
    suite text NOT NULL,
    model text NOT NULL,
    prompt_name text NOT NULL DEFAULT '',
    prompt_version text NOT NULL DEFAULT '',
    score double precision NOT NULL,
    passed integer NULL,
    total integer NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, time)
);
CREATE INDEX IF NOT EXISTS benchmarks_time_idx ON benchmarks (time DESC);
CREATE INDEX IF NOT EXISTS benchmarks_project_time_idx ON benchmarks (project_id, time DESC);
"""

# table -> (chunk interval, compress_segmentby). Segments are what queries filter on; `id` is
# in compress_orderby so a late insert into a compressed chunk checks uniqueness cheaply.
HYPERTABLES = {
    "prompt_attempts": ("1 day", "project_id, agent_id"),
    "run_events": ("1 day", "run_id"),
    "benchmarks": ("7 days", "project_id"),
}

# Dropping a hypertable drops its chunks and its policies with it; TimescaleDB drops only
# one hypertable per statement.
DROP_TABLES = "DROP TABLE IF EXISTS prompt_attempts; DROP TABLE IF EXISTS run_events; DROP TABLE IF EXISTS benchmarks"


def _whole_number(name, default, minimum):
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return value


def _use_timescale(schema_editor):
    mode = (os.environ.get("TIMESCALE", "").strip() or "auto").lower()
    if mode not in ("auto", "required", "off"):
        raise ImproperlyConfigured(f"TIMESCALE must be auto, required or off, not {mode!r}.")
    if mode == "off":
        return False
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),"
            " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        )
        installed, available = cursor.fetchone()
    if installed:
        return True
    if available:
        try:
            with transaction.atomic(using=connection.alias):  # a savepoint: a failure leaves the migration usable
                schema_editor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return True
        except DatabaseError as error:
            if mode == "required":
                raise ImproperlyConfigured(
                    f"TIMESCALE=required, but CREATE EXTENSION timescaledb failed: {error}. TimescaleDB needs "
                    "shared_preload_libraries = 'timescaledb' and a role allowed to create the extension."
                ) from error
            sys.stderr.write(f"TIMESCALE=auto: could not create the timescaledb extension ({error}); "
                             "creating plain PostgreSQL telemetry tables instead.\n")
            return False
    if mode == "required":
        raise ImproperlyConfigured(
            f"TIMESCALE=required, but the timescaledb extension is not installed in database "
            f"{connection.settings_dict['NAME']!r} and this PostgreSQL server does not offer it "
            "(pg_available_extensions). Install TimescaleDB, or set TIMESCALE=auto to use plain PostgreSQL tables."
        )
    return False


def create_tables(apps, schema_editor):
    timescale = _use_timescale(schema_editor)
    retention_days = _whole_number("TELEMETRY_RETENTION_DAYS", 90, minimum=4)
    compress_after_days = _whole_number("TELEMETRY_COMPRESS_AFTER_DAYS", 7, minimum=1)
    schema_editor.execute(TABLES)
    if not timescale:
        return
    for table, (chunk_interval, segment_by) in HYPERTABLES.items():
        # The indexes above already include the default time index; don't add a second one.
        schema_editor.execute(
            f"SELECT create_hypertable('{table}', by_range('time', INTERVAL '{chunk_interval}'), "
            "create_default_indexes => false, if_not_exists => true)"
        )
        schema_editor.execute(
            f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = '{segment_by}', "
            "timescaledb.compress_orderby = 'time DESC, id')"
        )
        schema_editor.execute(
            f"SELECT add_compression_policy('{table}', compress_after => INTERVAL '{compress_after_days} days', "
            "if_not_exists => true)"
        )
        schema_editor.execute(
            f"SELECT add_retention_policy('{table}', drop_after => INTERVAL '{retention_days} days', "
            "if_not_exists => true)"
        )


def drop_tables(apps, schema_editor):
    # The timescaledb extension is left in place: other objects may use it, and removing it
    # needs more privileges than creating the tables did.
    schema_editor.execute(DROP_TABLES)


def _project():
    return models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING,
                             related_name="+", to="keys.project")


def _agent():
    return models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING,
                             related_name="+", to="keys.agent")


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0002_revocation_is_final"),
        ("telemetry", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create_tables, drop_tables)],
            state_operations=[
                migrations.CreateModel(
                    name="PromptAttempt",
                    fields=[
                        ("id", models.UUIDField(primary_key=True, serialize=False)),
                        ("time", models.DateTimeField()),
                        ("run_id", models.UUIDField(blank=True, null=True)),
                        ("reservation_id", models.UUIDField(blank=True, null=True)),
                        ("model", models.TextField()),
                        ("prompt_name", models.TextField(blank=True, default="")),
                        ("prompt_version", models.TextField(blank=True, default="")),
                        ("success", models.BooleanField()),
                        ("error_code", models.TextField(blank=True, default="")),
                        ("input_tokens", models.BigIntegerField()),
                        ("output_tokens", models.BigIntegerField()),
                        ("latency_ms", models.IntegerField()),
                        ("cost_usd", models.DecimalField(blank=True, decimal_places=6, max_digits=18, null=True)),
                        ("reported_cost_usd", models.DecimalField(blank=True, decimal_places=6, max_digits=18,
                                                                  null=True)),
                        ("attributes", models.JSONField(blank=True, default=dict)),
                        ("agent", _agent()),
                        ("project", _project()),
                    ],
                    options={"db_table": "prompt_attempts", "managed": False},
                ),
                migrations.CreateModel(
                    name="RunEvent",
                    fields=[
                        ("id", models.UUIDField(primary_key=True, serialize=False)),
                        ("time", models.DateTimeField()),
                        ("run_id", models.UUIDField()),
                        ("kind", models.TextField()),
                        ("message", models.TextField(blank=True, default="")),
                        ("attributes", models.JSONField(blank=True, default=dict)),
                        ("agent", _agent()),
                        ("project", _project()),
                    ],
                    options={"db_table": "run_events", "managed": False},
                ),
                migrations.CreateModel(
                    name="Benchmark",
                    fields=[
                        ("id", models.UUIDField(primary_key=True, serialize=False)),
                        ("time", models.DateTimeField()),
                        ("suite", models.TextField()),
                        ("model", models.TextField()),
                        ("prompt_name", models.TextField(blank=True, default="")),
                        ("prompt_version", models.TextField(blank=True, default="")),
                        ("score", models.FloatField()),
                        ("passed", models.IntegerField(blank=True, null=True)),
                        ("total", models.IntegerField(blank=True, null=True)),
                        ("attributes", models.JSONField(blank=True, default=dict)),
                        ("agent", _agent()),
                        ("project", _project()),
                    ],
                    options={"db_table": "benchmarks", "managed": False},
                ),
            ],
        ),
    ]
