from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """One change to keys, agents, projects or policy, written in the change's transaction.

    `chain_seq`, `prev_hash` and `hash` are reserved for the hash chain (SPEC §9).
    """

    class ActorType(models.TextChoices):
        USER = "user"
        KEY = "key"
        SYSTEM = "system"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_type = models.CharField(max_length=8, choices=ActorType.choices)
    actor_label = models.CharField(max_length=200)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    actor_key_id = models.CharField(max_length=12, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=200)
    # A key named by audit rows can never be hard-deleted (PROTECT, and a real FK in the DB).
    api_key = models.ForeignKey(
        "keys.ApiKey", on_delete=models.PROTECT, null=True, blank=True, related_name="audit_events"
    )
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    chain_seq = models.BigIntegerField(null=True, blank=True, unique=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")]

    def __str__(self) -> str:
        return f"{self.action} {self.target_repr} by {self.actor_label}"
