from __future__ import annotations

from django.db import models
from django.utils import timezone


class HiddenEntry(models.Model):
    """A model, prompt or benchmark suite an operator has taken off the public board.

    Matched by name: a hidden model disappears from every page (its attempts leave the prompt
    and suite figures too); a hidden prompt name disappears for every project."""

    class Kind(models.TextChoices):
        MODEL = "model"
        PROMPT = "prompt"
        SUITE = "suite"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=128, help_text="Exactly as agents report it (model, prompt name or suite).")
    reason = models.TextField(help_text="Why it is hidden; kept in the audit trail.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=200, editable=False)

    class Meta:
        verbose_name = "hidden leaderboard entry"
        verbose_name_plural = "hidden leaderboard entries"
        ordering = ["kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "name"], name="leaderboard_hidden_unique"),
            models.CheckConstraint(condition=models.Q(kind__in=["model", "prompt", "suite"]),
                                   name="leaderboard_hidden_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class DemoProject(models.Model):
    """Marks a project that `seed_demo` created, so the board can say it shows demo data and
    `seed_demo --clear` knows exactly what to remove."""

    project = models.OneToOneField("keys.Project", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"demo {self.project_id}"
