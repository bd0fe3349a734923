"""Policies, caps, prices and the usage ledger that makes caps hard.

A policy or cap belongs to exactly one subject: everything (global), a project, or an agent.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

import msgspec
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Func, Q, Value
from django.db.models.lookups import Regex
from django.utils import timezone

from apps.keys.models import Agent, ApiKey, Project

_MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}"
# \A and \Z, not ^ and $: Python's `$` also matches before a final newline. Both anchors mean
# the same in Python and in PostgreSQL regular expressions, so the CHECK constraints below use
# the very same patterns.
MODEL_NAME_RE = rf"\A{_MODEL_NAME}\Z"
_MODEL_NAME_LIST_RE = rf"\A{_MODEL_NAME}(?: {_MODEL_NAME})*\Z"  # names joined by spaces
MODEL_NAME_VALIDATOR = RegexValidator(
    MODEL_NAME_RE, "Model names are 1-128 letters, digits or . _ : / @ + -, starting with a letter or digit.",
    code="invalid_model",
)
MAX_AMOUNT = Decimal("1000000000000")  # 1e12: tokens, requests or USD; anything larger is an error
MAX_TOKENS = 10**9  # tokens of one call, estimated or reported

# The same rules as msgspec types, for the bodies decoded straight into structs (admission, telemetry).
# `^…\Z`: msgspec searches with `re`; the OpenAPI document writes `^…$` (apps.gateway.rest.schema).
ModelName = Annotated[str, msgspec.Meta(pattern=rf"^{_MODEL_NAME}\Z")]
Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
LEDGER_MAX = Decimal("99999999999999.999999")  # the largest numeric(20, 6): where `overrun` saturates


def model_names_check(name: str) -> models.CheckConstraint:
    """`allowed_models` holds only valid names (and no NULLs, which array_to_string shows as `*`)."""
    joined = Func(F("allowed_models"), Value(" "), Value("*"), function="array_to_string",
                  output_field=models.TextField())
    return models.CheckConstraint(
        condition=Q(allowed_models=[]) | Q(Regex(joined, Value(_MODEL_NAME_LIST_RE))), name=name)


class SubjectType(models.TextChoices):
    GLOBAL = "global"
    PROJECT = "project"
    AGENT = "agent"


class SubjectMixin(models.Model):
    """Exactly one of: nothing (global), a project, an agent."""

    subject_type = models.CharField(max_length=8, choices=SubjectType.choices)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, null=True, blank=True, related_name="%(class)s_set")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="%(class)s_set")

    class Meta:
        abstract = True

    @staticmethod
    def subject_check(name: str) -> models.CheckConstraint:
        return models.CheckConstraint(
            condition=(
                Q(subject_type="global", project__isnull=True, agent__isnull=True)
                | Q(subject_type="project", project__isnull=False, agent__isnull=True)
                | Q(subject_type="agent", project__isnull=True, agent__isnull=False)
            ),
            name=name,
        )

    @property
    def subject_label(self) -> str:
        if self.subject_type == SubjectType.AGENT:
            return f"agent {self.agent}"
        if self.subject_type == SubjectType.PROJECT:
            return f"project {self.project}"
        return "global"

    def clean(self) -> None:
        super().clean()
        if not self.subject_type:  # inline forms know the parent, not the subject type
            self.subject_type = (SubjectType.AGENT if self.agent_id else
                                 SubjectType.PROJECT if self.project_id else "")
            if not self.subject_type:
                return  # a new parent: checked again by the service once it is saved
        shapes: dict[str, tuple[bool, bool]] = {  # subject type -> (has a project, has an agent)
            SubjectType.GLOBAL: (False, False),
            SubjectType.PROJECT: (True, False),
            SubjectType.AGENT: (False, True),
        }
        expected = shapes.get(self.subject_type)
        if expected != (self.project_id is not None, self.agent_id is not None):
            raise ValidationError("A policy or cap applies to exactly one subject: global, a project or an agent.",
                                  code="invalid_subject")


class Policy(SubjectMixin):
    kill_switch = models.BooleanField(default=False, help_text="Deny every admission for this subject.")
    kill_switch_reason = models.TextField(blank=True)
    dry_run = models.BooleanField(
        default=False, help_text="Evaluate this level's rules and caps, record would-deny, never block.")
    allowed_models = ArrayField(models.CharField(max_length=128, validators=[MODEL_NAME_VALIDATOR]),
                                default=list, blank=True, help_text="Empty: any model.")
    allow_unpriced_models = models.BooleanField(
        null=True, blank=True, help_text="Admit models with no price under cost caps. Empty: inherit (no).")
    max_tokens_per_attempt = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(10**12)])
    max_cost_per_attempt = models.DecimalField(
        max_digits=18, decimal_places=6, null=True, blank=True,
        validators=[MinValueValidator(Decimal("0.000001")), MaxValueValidator(MAX_AMOUNT)])
    max_concurrent_runs = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(100000)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "policies"
        constraints = [
            SubjectMixin.subject_check("policy_one_subject"),
            models.UniqueConstraint(fields=["subject_type"], condition=Q(subject_type="global"),
                                    name="policy_one_global"),
            models.UniqueConstraint(fields=["project"], condition=Q(subject_type="project"),
                                    name="policy_one_per_project"),
            models.UniqueConstraint(fields=["agent"], condition=Q(subject_type="agent"),
                                    name="policy_one_per_agent"),
            model_names_check("policy_allowed_models_valid"),
        ]

    def __str__(self) -> str:
        return f"policy for {self.subject_label}"


class PolicyCap(SubjectMixin):
    class Metric(models.TextChoices):
        COST_USD = "cost_usd"
        TOKENS = "tokens"
        REQUESTS = "requests"

    class Window(models.TextChoices):
        MINUTE = "minute"
        HOUR = "hour"
        DAY = "day"
        WEEK = "week"
        MONTH = "month"
        TOTAL = "total"

    class Mode(models.TextChoices):
        ENFORCE = "enforce"
        DRY_RUN = "dry_run"

    metric = models.CharField(max_length=8, choices=Metric.choices)
    window = models.CharField(max_length=8, choices=Window.choices)
    limit = models.DecimalField(max_digits=18, decimal_places=6,
                                validators=[MinValueValidator(Decimal("0.000001")), MaxValueValidator(MAX_AMOUNT)])
    model = models.CharField(max_length=128, blank=True, validators=[MODEL_NAME_VALIDATOR],
                             help_text="Only count this model. Empty: every model.")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.ENFORCE)
    enabled = models.BooleanField(default=True)
    # Who created the cap: an agent's key (that agent may later loosen or delete it) or a staff
    # user. Neither (system, or before this was recorded): only operators may loosen it.
    created_by_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, null=True, blank=True, editable=False,
                                       related_name="+")
    created_by_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                        editable=False, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    # Not columns: the current window's usage, set by selectors.agent_caps_with_usage for the API.
    used: Decimal
    reserved: Decimal

    class Meta:
        ordering = ["id"]
        constraints = [
            SubjectMixin.subject_check("policycap_one_subject"),
            models.CheckConstraint(condition=Q(limit__gt=0), name="policycap_limit_positive"),
            models.CheckConstraint(condition=Q(model="") | Q(model__regex=MODEL_NAME_RE),
                                   name="policycap_model_name_valid"),
        ]

    def __str__(self) -> str:
        model = f" {self.model}" if self.model else ""
        return f"cap#{self.pk} {self.metric}{model} ≤ {self.limit:g}/{self.window} ({self.subject_label})"

    def clean(self) -> None:
        super().clean()
        if self._state.adding and self.subject_type and self.subject_is_full():
            raise ValidationError(self.too_many_message(), code="too_many_caps")

    def subject_is_full(self) -> bool:
        """Whether this cap's subject already has MAX_CAPS_PER_SUBJECT caps."""
        siblings = PolicyCap.objects.filter(subject_type=self.subject_type, project=self.project_id,
                                            agent=self.agent_id)
        return siblings.count() >= settings.MAX_CAPS_PER_SUBJECT

    def too_many_message(self) -> str:
        return f"A subject has at most {settings.MAX_CAPS_PER_SUBJECT} caps; {self.subject_label} has that many."


class PendingCapChange(models.Model):
    """A cost cap created or loosened past REQUIRE_SECOND_APPROVAL_ABOVE_USD in the admin: it waits
    here, without effect, until a second staff member approves it (which applies `proposed` to the
    cap through the audited `cap_save`) or someone rejects it. The requester can never approve it;
    a CHECK constraint backs the service's refusal."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    # The cap to change; None for a new cap until it is approved (or if the cap was deleted since).
    cap = models.ForeignKey(PolicyCap, on_delete=models.SET_NULL, null=True, blank=True,
                            related_name="pending_changes")
    creates = models.BooleanField(default=False)
    proposed = models.JSONField(help_text="The cap's fields as proposed (ids for project and agent).")
    reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # The requester may withdraw (reject) their own change, never approve it.
            models.CheckConstraint(condition=~Q(state="approved") | ~Q(decided_by=F("requested_by")),
                                   name="pendingcapchange_two_people"),
            models.CheckConstraint(condition=Q(state="pending", decided_by__isnull=True)
                                   | (~Q(state="pending") & Q(decided_by__isnull=False)),
                                   name="pendingcapchange_decided_by_someone"),
        ]

    def __str__(self) -> str:
        target = "new cap" if self.creates and self.cap_id is None else f"cap#{self.cap_id}"
        return f"change #{self.pk} to {target}: {self.proposed.get('limit')} USD ({self.state})"


class ModelPrice(models.Model):
    model = models.CharField(max_length=128, validators=[MODEL_NAME_VALIDATOR])
    input_usd_per_mtok = models.DecimalField(
        "input USD per 1M tokens", max_digits=14, decimal_places=6,
        validators=[MinValueValidator(0), MaxValueValidator(Decimal("100000"))])
    output_usd_per_mtok = models.DecimalField(
        "output USD per 1M tokens", max_digits=14, decimal_places=6,
        validators=[MinValueValidator(0), MaxValueValidator(Decimal("100000"))])
    effective_from = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="modelprice_unique_from"),
            models.CheckConstraint(condition=Q(model__regex=MODEL_NAME_RE), name="modelprice_model_name_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d}"


class UsageLedger(models.Model):
    """Usage of one cap in one window. The CHECK makes overshoot impossible at the database."""

    cap = models.ForeignKey(PolicyCap, on_delete=models.CASCADE, related_name="ledgers")
    window_start = models.DateTimeField()
    used = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    reserved = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    # Usage that arrived beyond the limit after admission (actual > estimate); never admitted.
    # Saturates at LEDGER_MAX: the other columns are bounded by the limit, this one is not.
    overrun = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    limit_snapshot = models.DecimalField(max_digits=20, decimal_places=6)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cap", "window_start"], name="ledger_one_row_per_window"),
            models.CheckConstraint(
                condition=Q(used__gte=0) & Q(reserved__gte=0) & Q(overrun__gte=0)
                & Q(used__lte=models.F("limit_snapshot") - models.F("reserved")),
                name="ledger_within_limit",
            ),
        ]
        indexes = [models.Index(fields=["window_start"], name="ledger_window_start")]  # the console's current windows

    def __str__(self) -> str:
        return f"{self.cap_id}@{self.window_start:%Y-%m-%d %H:%M}: {self.used}+{self.reserved}/{self.limit_snapshot}"


class Reservation(models.Model):
    class State(models.TextChoices):
        HELD = "held"
        SETTLED = "settled"
        RELEASED = "released"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No database-level foreign key: its check locks the agent's row FOR KEY SHARE in every admission,
    # and concurrent admissions of one agent then share that lock as a new MultiXact each time, which
    # cost 7-11% of gRPC admission throughput (docs/benchmarks.md). Reservations are only written by
    # admission, for the agent that just authenticated; PROTECT still refuses deleting an agent that
    # has any (Django enforces on_delete itself), as its keys already do.
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="reservations", db_constraint=False)
    # The run the admission was for, when the agent named one (its own: admission checks). No
    # database-level foreign key either (the same lock, on the run's row), and no index: nothing
    # looks reservations up by run, and every admission would pay for one.
    run = models.ForeignKey("telemetry.Run", on_delete=models.SET_NULL, null=True, blank=True,
                            related_name="reservations", db_constraint=False, db_index=False)
    model = models.CharField(max_length=128)
    estimated_tokens = models.BigIntegerField()
    estimated_cost_usd = models.DecimalField(max_digits=18, decimal_places=6, null=True)
    # [{"ledger": id, "metric": "...", "amount": "..."}]: what this reservation holds, per ledger row.
    holds = models.JSONField(default=list)
    state = models.CharField(max_length=8, choices=State.choices, default=State.HELD)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    actual_tokens = models.BigIntegerField(null=True, blank=True)
    actual_cost_usd = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["expires_at"], condition=Q(state="held"), name="reservation_held_expiry"),
            # telemetry_maintenance purges finished reservations by age
            models.Index(fields=["finished_at"], condition=~Q(state="held"), name="reservation_finished"),
            models.Index(fields=["created_at"], name="reservation_created"),  # the console's last hour
        ]

    def __str__(self) -> str:
        return f"reservation {self.id} ({self.state})"


class AdmissionDecision(models.Model):
    """A deny or a dry-run would-deny, kept for operators. Plain allows are not stored."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="admission_decisions")
    run = models.ForeignKey("telemetry.Run", on_delete=models.SET_NULL, null=True, blank=True,  # as Reservation.run
                            related_name="admission_decisions", db_constraint=False, db_index=False)
    model = models.CharField(max_length=128)
    allowed = models.BooleanField()
    reasons = ArrayField(models.CharField(max_length=64), default=list)
    dry_run_would_deny = ArrayField(models.CharField(max_length=64), default=list)
    estimated_tokens = models.BigIntegerField()
    estimated_cost_usd = models.DecimalField(max_digits=18, decimal_places=6, null=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["agent", "-created_at"], name="decision_agent_time")]

    def __str__(self) -> str:
        return f"{'allow' if self.allowed else 'deny'} {self.model} for {self.agent_id}"
