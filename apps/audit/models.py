from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """One change to keys, agents, projects or policy, written in the change's transaction.

    Append-only: database triggers refuse UPDATE, DELETE and TRUNCATE, and the runtime role
    may only SELECT and INSERT (migration audit 0002, docs/runbooks.md). `chain_seq`,
    `prev_hash` and `hash` chain every row to the one before (apps/audit/chain.py).
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
    chain_seq = models.BigIntegerField(unique=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")]
        constraints = [
            models.CheckConstraint(condition=models.Q(chain_seq__gte=1, prev_hash__regex=r"^[0-9a-f]{64}$",
                                                      hash__regex=r"^[0-9a-f]{64}$"),
                                   name="audit_chain_columns_filled"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_repr} by {self.actor_label}"


class AuditChainHead(models.Model):
    """The chain's single head row: the last `chain_seq` and `hash`. Every audit insert locks it
    (SELECT ... FOR UPDATE) until its transaction ends, so inserts take sequence numbers one at
    a time, in commit order, and a rollback takes its number back with it."""

    id = models.SmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_chainhead_single_row")]

    def __str__(self) -> str:
        return f"audit chain head #{self.seq}"
