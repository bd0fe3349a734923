"""IdempotencyRecord moved to apps.gateway: Django forgets it here; the table stays as it is
(gateway 0001 takes the model over under the same table name). No SQL runs."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0006_run_events_count"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="IdempotencyRecord")],
            database_operations=[],
        ),
    ]
