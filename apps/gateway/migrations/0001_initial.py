"""IdempotencyRecord, taken over from telemetry (its 0007) with its existing table: state only."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("telemetry", "0007_idempotencyrecord_to_gateway"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="IdempotencyRecord",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                                   verbose_name="ID")),
                        ("principal", models.CharField(max_length=40)),
                        ("key", models.CharField(max_length=128)),
                        ("operation", models.CharField(max_length=64)),
                        ("fingerprint", models.CharField(max_length=64)),
                        ("state", models.CharField(choices=[("in_flight", "In Flight"), ("completed", "Completed")],
                                                   default="in_flight", max_length=10)),
                        ("response_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                        ("response_body", models.JSONField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("expires_at", models.DateTimeField(db_index=True)),
                    ],
                    options={
                        "db_table": "telemetry_idempotencyrecord",
                        "constraints": [models.UniqueConstraint(fields=("principal", "key"),
                                                                name="idempotency_one_per_principal_key")],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
