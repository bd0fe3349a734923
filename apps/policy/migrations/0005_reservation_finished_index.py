"""Index finished (settled or released) reservations by when they finished, so that
telemetry_maintenance can purge them by age without reading the whole table.

The build holds the table's write lock (admissions insert reservations) until it is done. On an
installation that already has a large table, create the index beforehand without blocking, and
this migration finds it and does nothing:

    CREATE INDEX CONCURRENTLY IF NOT EXISTS reservation_finished
        ON policy_reservation (finished_at) WHERE NOT (state = 'held');

(The migration itself does not use CONCURRENTLY: the TimescaleDB test engine does not support it.)
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("policy", "0004_cap_creators_and_model_names"),
    ]

    operations = [
        migrations.RunSQL(
            sql="CREATE INDEX IF NOT EXISTS reservation_finished ON policy_reservation (finished_at) "
                "WHERE NOT (state = 'held')",
            reverse_sql="DROP INDEX IF EXISTS reservation_finished",
            state_operations=[
                migrations.AddIndex(
                    model_name="reservation",
                    index=models.Index(condition=~models.Q(state="held"), fields=["finished_at"],
                                       name="reservation_finished"),
                ),
            ],
        ),
    ]
