"""Count each run's events, so that MAX_EVENTS_PER_RUN can be enforced with one conditional UPDATE.

Adding a column with a constant default is a catalog change on PostgreSQL 11+ (no table rewrite).
Runs that existed before start counting at 0: their earlier events are not counted (counting them
would read all of run_events), so an old run may end up with up to one limit more.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0004_prompt_attempts_reservation_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="events",
            field=models.BigIntegerField(default=0, help_text="Run events recorded (bounded by MAX_EVENTS_PER_RUN)."),
        ),
    ]
