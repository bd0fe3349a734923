from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from apps.gateway.access import ALL_SCOPES, Scope

NAME_VALIDATOR = RegexValidator(
    r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z",  # \Z, not $: Python's $ also matches before a final newline
    "Use 1-100 letters, digits, dots, dashes or underscores, starting with a letter or digit.",
)


class Project(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    public_name = models.CharField(
        max_length=200, blank=True, help_text="Shown on the public leaderboard if opted in."
    )
    leaderboard_opt_in = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Agent(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        QUARANTINED = "quarantined"
        DISABLED = "disabled"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="agents")
    name = models.CharField(max_length=100, validators=[NAME_VALIDATOR])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["project__slug", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="agent_unique_name_per_project"),
            models.CheckConstraint(
                condition=models.Q(status__in=["active", "quarantined", "disabled"]),
                name="agent_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


def validate_scopes(value: list[str]) -> None:
    unknown = sorted(set(value) - ALL_SCOPES)
    if unknown:
        raise ValidationError(
            "Unknown scope(s): %(unknown)s. Known: %(known)s.",
            code="unknown_scope",
            params={"unknown": ", ".join(unknown), "known": ", ".join(sorted(ALL_SCOPES))},
        )


# django-ratelimit's rate syntax: a count per period, e.g. 600/m, 6000/h, 100/5s.
RATE_VALIDATOR = RegexValidator(
    r"\A[1-9][0-9]{0,8}/(?:[1-9][0-9]{0,4})?[smhd]\Z",
    "A rate is a count per period, e.g. 600/m, 6000/h or 100/10s.",
    code="invalid_rate",
)


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def with_status(self, status: str, now) -> ApiKeyQuerySet:
        """The keys whose `status_at(now)` is `status`: the same rule, as a query (a test holds
        the two to each other)."""
        live = models.Q(revoked_at__isnull=True)
        not_expired = (models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)) & (
            models.Q(grace_until__isnull=True) | models.Q(grace_until__gt=now))
        match status:
            case ApiKey.Status.REVOKED:
                return self.filter(revoked_at__isnull=False)
            case ApiKey.Status.EXPIRED:
                return self.filter(live).exclude(not_expired)
            case ApiKey.Status.ROTATING:
                return self.filter(live & not_expired, grace_until__isnull=False)
            case ApiKey.Status.ACTIVE:
                return self.filter(live & not_expired, grace_until__isnull=True)
        raise ValueError(f"not a key status: {status!r}")


class ApiKey(models.Model):
    """A per-agent credential. Only the peppered HMAC digest of the secret is stored."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        ROTATING = "rotating", "rotating (in grace)"
        EXPIRED = "expired"
        REVOKED = "revoked"

    agent = models.ForeignKey(
        Agent, on_delete=models.PROTECT, related_name="api_keys", null=True, blank=True,
        help_text="Empty for operator automation keys.",
    )
    name = models.CharField(max_length=100, blank=True, help_text="A label for operators.")
    key_id = models.CharField(max_length=12, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(
        models.CharField(max_length=32, choices=[(s.value, s.value) for s in Scope]),
        default=list, validators=[validate_scopes],
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_reason = models.TextField(blank=True, editable=False)
    rotated_from = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, editable=False,
        related_name="rotated_to",
    )
    grace_until = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Set on a key that was rotated: it keeps working until then.",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Operator overrides of RATE_LIMIT_GET / RATE_LIMIT_MUTATION for this key (e.g. a bulk-ingest
    # agent); empty means the default. Changed only through api_key_set_rate_limits (audited).
    rate_limit_get = models.CharField(max_length=20, blank=True, validators=[RATE_VALIDATOR],
                                      help_text="Reads allowed per period, e.g. 6000/m. Empty: RATE_LIMIT_GET.")
    rate_limit_mutation = models.CharField(max_length=20, blank=True, validators=[RATE_VALIDATOR],
                                           help_text="Writes allowed per period, e.g. 600/m. Empty: "
                                                     "RATE_LIMIT_MUTATION.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=200, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(revoked_at__isnull=True) | ~models.Q(revoked_reason=""),
                name="apikey_revocation_has_reason",
            ),
            models.CheckConstraint(
                condition=models.Q(digest__regex=r"^[0-9a-f]{64}$"), name="apikey_digest_is_hex"
            ),
        ]

    def __str__(self) -> str:
        return self.key_id

    def status_at(self, now) -> ApiKey.Status:
        if self.revoked_at is not None:
            return self.Status.REVOKED
        effective = self.effective_expiry
        if effective is not None and effective <= now:
            return self.Status.EXPIRED
        if self.grace_until is not None:
            return self.Status.ROTATING
        return self.Status.ACTIVE

    @property
    def status(self) -> ApiKey.Status:
        return self.status_at(timezone.now())

    @property
    def effective_expiry(self):
        moments = [m for m in (self.expires_at, self.grace_until) if m is not None]
        return min(moments) if moments else None

    def clean(self) -> None:
        if self.pk:
            stored = ApiKey.objects.filter(pk=self.pk).values("revoked_at").first()
            if stored and stored["revoked_at"] is not None and self.revoked_at != stored["revoked_at"]:
                raise ValidationError(
                    {"revoked_at": "A revoked key stays revoked; issue a new key instead."},
                    code="revocation_is_final",
                )
