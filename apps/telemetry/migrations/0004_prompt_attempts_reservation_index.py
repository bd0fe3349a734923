"""Index prompt_attempts by reservation id.

The admin's paste-a-UUID search looks an attempt up by id, run id or reservation id in one
OR; with no index on reservation_id the planner could only answer it by reading the whole
table. Partial: only attempts that settled a reservation pay for the index.

The build holds the table's write lock until it is done. On an installation that already has
a large table, create the index beforehand without blocking ingest, and this migration finds
it and does nothing:

    -- plain PostgreSQL
    CREATE INDEX CONCURRENTLY IF NOT EXISTS prompt_attempts_reservation_idx
        ON prompt_attempts (reservation_id) WHERE reservation_id IS NOT NULL;
    -- TimescaleDB (one transaction per chunk; hypertables have no CONCURRENTLY)
    CREATE INDEX IF NOT EXISTS prompt_attempts_reservation_idx ON prompt_attempts (reservation_id)
        WITH (timescaledb.transaction_per_chunk) WHERE reservation_id IS NOT NULL;

(The migration itself uses neither: the TimescaleDB test engine supports neither.)
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0003_timeseries_rollups"),
    ]

    operations = [
        migrations.RunSQL(
            sql="CREATE INDEX IF NOT EXISTS prompt_attempts_reservation_idx ON prompt_attempts (reservation_id) "
                "WHERE reservation_id IS NOT NULL",
            reverse_sql="DROP INDEX IF EXISTS prompt_attempts_reservation_idx",
        ),
    ]
