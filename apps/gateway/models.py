"""The gateway's tables: writes made under an Idempotency-Key (apps.gateway.idempotency) and the
nonces of signed writes (apps.gateway.signing).

The idempotency table keeps the name it had when the model lived in telemetry (gateway migration 0001 and
telemetry 0007 moved only Django's state, not the table).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class IdempotencyRecord(models.Model):
    """One write made under an Idempotency-Key, scoped to the principal that made it."""

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight"
        COMPLETED = "completed"

    principal = models.CharField(max_length=40)
    key = models.CharField(max_length=128)
    operation = models.CharField(max_length=64)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "telemetry_idempotencyrecord"
        constraints = [
            models.UniqueConstraint(fields=["principal", "key"], name="idempotency_one_per_principal_key"),
        ]

    def __str__(self) -> str:
        return f"{self.principal}:{self.key} ({self.state})"


class SignedWriteNonce(models.Model):
    """A nonce a key used on a signed write (apps.gateway.signing), kept until the request's
    timestamp leaves the clock-skew window; the unique constraint makes it usable once, across
    every worker and process."""

    key_id = models.CharField(max_length=12)
    nonce = models.CharField(max_length=128)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key_id", "nonce"], name="signed_write_nonce_once_per_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key_id}:{self.nonce}"
