"""Indexes for the admin console's "last hour" and "current window" reads (modeloman/console.py):
reservations by creation time (admissions that reserved budget), ledger rows by window start (the
current window of every cap).

Each build holds its table's write lock until it is done (admissions insert reservations and
update the ledger). On an installation with large tables, create them beforehand without blocking,
and this migration finds them and does nothing:

    CREATE INDEX CONCURRENTLY IF NOT EXISTS reservation_created ON policy_reservation (created_at);
    CREATE INDEX CONCURRENTLY IF NOT EXISTS ledger_window_start ON policy_usageledger (window_start);

(The migration itself does not use CONCURRENTLY: the TimescaleDB test engine does not support it.)
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("policy", "0006_pending_cap_change"),
    ]

    operations = [
        migrations.RunSQL(
            sql="CREATE INDEX IF NOT EXISTS reservation_created ON policy_reservation (created_at)",
            reverse_sql="DROP INDEX IF EXISTS reservation_created",
            state_operations=[
                migrations.AddIndex(model_name="reservation",
                                    index=models.Index(fields=["created_at"], name="reservation_created")),
            ],
        ),
        migrations.RunSQL(
            sql="CREATE INDEX IF NOT EXISTS ledger_window_start ON policy_usageledger (window_start)",
            reverse_sql="DROP INDEX IF EXISTS ledger_window_start",
            state_operations=[
                migrations.AddIndex(model_name="usageledger",
                                    index=models.Index(fields=["window_start"], name="ledger_window_start")),
            ],
        ),
    ]
