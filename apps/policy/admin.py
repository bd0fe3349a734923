"""Operator screens for policy: kill switches, dry-run, caps, prices, usage and decisions.

Kill switch and dry-run changes are one-way-style actions with a reason and a confirmation
page (on the Project, Agent and Policy lists); everything else is edited inline on the
Project and Agent pages or on the global policy page. All writes go through services.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import BooleanField, Exists, OuterRef, QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from apps.audit.services import Actor
from apps.keys.admin import AgentAdmin, ProjectAdmin
from apps.keys.models import Agent, Project
from apps.policy import services
from apps.policy.ledger import Reason
from apps.policy.models import (
    ModelPrice,
    PendingCapChange,
    Policy,
    PolicyCap,
    Reservation,
    SubjectType,
)
from apps.policy.selectors import current_usage
from modeloman.admin_actions import ConfirmedActionsMixin, ModelAdminMixin, ReadOnlyModelAdmin

POLICY_EDITABLE = ("allowed_models", "allow_unpriced_models", "max_tokens_per_attempt", "max_cost_per_attempt",
                   "max_concurrent_runs")
SWITCHES = ("kill_switch", "kill_switch_reason", "dry_run")


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user)


def _subject(obj: Project | Agent | Policy) -> dict[str, Any]:
    if isinstance(obj, Project):
        return {"subject_type": SubjectType.PROJECT, "project": obj}
    if isinstance(obj, Agent):
        return {"subject_type": SubjectType.AGENT, "agent": obj}
    return {"subject_type": obj.subject_type, "project": obj.project, "agent": obj.agent}


class PolicySwitchActions(ConfirmedActionsMixin):
    """Engage/release the kill switch and turn dry-run on/off for the selected subjects."""

    policy_actions = ["engage_kill_switch", "release_kill_switch", "dry_run_on", "dry_run_off"]

    def _switch(self, request: HttpRequest, queryset: QuerySet, *, action: str, title: str, intro: str,
                **change: bool) -> HttpResponse | None:
        def apply(obj: Project | Agent | Policy, data: dict[str, Any]) -> Policy:
            fields = {**_subject(obj), **change}
            return services.policy_set(actor=_actor(request), reason=data["reason"], **fields)

        return self.confirm_action(request, queryset, action=action, title=title, intro=intro, apply=apply)

    @admin.action(description="Engage kill switch…", permissions=["change"])
    def engage_kill_switch(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._switch(request, queryset, action="engage_kill_switch", title="Engage kill switch",
                            intro="Every admission for these subjects is denied, in every process within a "
                                  "second, until the switch is released.", kill_switch=True)

    @admin.action(description="Release kill switch…", permissions=["change"])
    def release_kill_switch(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._switch(request, queryset, action="release_kill_switch", title="Release kill switch",
                            intro="Admissions resume under the remaining rules and caps.", kill_switch=False)

    @admin.action(description="Turn dry-run on…", permissions=["change"])
    def dry_run_on(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._switch(request, queryset, action="dry_run_on", title="Turn dry-run on",
                            intro="Rules and caps at this level are evaluated and recorded as would-deny, "
                                  "but never block. Kill switches still block.", dry_run=True)

    @admin.action(description="Turn dry-run off…", permissions=["change"])
    def dry_run_off(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._switch(request, queryset, action="dry_run_off", title="Turn dry-run off",
                            intro="Rules and caps at this level block again.", dry_run=False)


class _PolicyInline(admin.StackedInline):
    model = Policy
    fields = (*SWITCHES, *POLICY_EDITABLE)
    readonly_fields = SWITCHES  # changed through the confirmed actions, with a reason
    extra = 0
    max_num = 1
    can_delete = False


class CapForm(forms.ModelForm):
    """A cap as an operator edits it: loosening one (a higher limit, disabling it, dry-run, another
    metric, window or model) needs a reason, which goes into the audit row."""

    reason = forms.CharField(required=False, max_length=2000,
                             help_text="Why; required to loosen a cap, and kept in the audit trail.")

    class Meta:
        model = PolicyCap
        fields: tuple[str, ...] = ("metric", "window", "limit", "model", "mode", "enabled")

    def clean(self) -> dict:
        super().clean()
        cleaned = self.cleaned_data
        if self.instance.pk is not None and not cleaned.get("reason"):  # the instance is unchanged until _post_clean
            changes = {name: cleaned[name] for name in services.CAP_SETTINGS if name in cleaned}
            loosened = services.cap_loosened_fields(self.instance, changes)
            if loosened:
                self.add_error("reason", f"Say why: this loosens the cap ({', '.join(loosened)}).")
        return cleaned


def _pending_message(request: HttpRequest, change: PendingCapChange) -> None:
    messages.warning(request, f"Cap change #{change.pk} waits for a second staff member's approval "
                              "(Policy → Pending cap changes); nothing has changed yet.")


class _CapInline(admin.TabularInline):
    model = PolicyCap
    form = CapForm
    fields = ("metric", "window", "limit", "model", "mode", "enabled", "reason")
    extra = 0


class ProjectPolicyInline(_PolicyInline):
    fk_name = "project"


class ProjectCapInline(_CapInline):
    fk_name = "project"


class AgentPolicyInline(_PolicyInline):
    fk_name = "agent"


class AgentCapInline(_CapInline):
    fk_name = "agent"


class PolicyFormsets(ModelAdminMixin):
    """Inline policy and cap rows are saved (and deleted) through the audited services."""

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset, change: bool) -> None:
        if formset.model not in (Policy, PolicyCap):
            return super().save_formset(request, form, formset, change)
        actor = _actor(request)
        parent = _subject(form.instance)
        reasons = {id(f.instance): f.cleaned_data.get("reason", "") for f in formset.forms
                   if getattr(f, "cleaned_data", None)}
        for obj in formset.save(commit=False):
            if isinstance(obj, Policy):
                changes = {name: getattr(obj, name) for name in POLICY_EDITABLE}
                services.policy_set(actor=actor, **parent, **changes)
            else:
                obj.subject_type = parent["subject_type"]
                result = services.cap_propose(actor=actor, cap=obj, reason=reasons.get(id(obj), ""))
                if isinstance(result, PendingCapChange):
                    _pending_message(request, result)
        for obj in formset.deleted_objects:
            services.cap_delete(actor=actor, cap=obj)
        formset.save_m2m()


class ProjectWithPolicyAdmin(PolicyFormsets, PolicySwitchActions, ProjectAdmin):
    inlines = [ProjectPolicyInline, ProjectCapInline]
    actions = PolicySwitchActions.policy_actions


class AgentWithPolicyAdmin(PolicyFormsets, PolicySwitchActions, AgentAdmin):
    inlines = [*AgentAdmin.inlines, AgentPolicyInline, AgentCapInline]
    actions = PolicySwitchActions.policy_actions


class PolicyAdmin(PolicySwitchActions, admin.ModelAdmin):
    """Every policy row; the global policy is edited here (add one with subject "global")."""

    list_display = ("__str__", "kill_switch", "dry_run", "max_cost_per_attempt", "updated_at")
    list_filter = ("subject_type", "kill_switch", "dry_run")
    list_select_related = ("project", "agent__project")
    fields = ("subject_type", "project", "agent", *SWITCHES, *POLICY_EDITABLE, "updated_at")
    actions = PolicySwitchActions.policy_actions

    def get_readonly_fields(self, request: HttpRequest, obj: Policy | None = None) -> tuple[str, ...]:
        subject = ("subject_type", "project", "agent") if obj else ()
        return (*subject, *SWITCHES, "updated_at")

    def save_model(self, request: HttpRequest, obj: Policy, form: forms.Form, change: bool) -> None:
        changes = {name: getattr(obj, name) for name in POLICY_EDITABLE}
        saved = services.policy_set(actor=_actor(request), **_subject(obj), **changes)
        obj.pk = saved.pk

    def has_delete_permission(self, request: HttpRequest, obj: Policy | None = None) -> bool:
        return False  # reset a policy by editing it; its history is in the audit trail


class CapChangeList(ChangeList):
    """Attaches each listed cap's current ledger row, read in one query for this page only.
    Kept on the caps of this request's ChangeList, never on the ModelAdmin, which every
    request (and thread) shares."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = list(self.result_list)
        usage = current_usage(self.result_list)
        for cap in self.result_list:
            cap.current_ledger = usage.get(cap.pk)


class CapAdminForm(CapForm):
    class Meta(CapForm.Meta):
        fields = ("subject_type", "project", "agent", *CapForm.Meta.fields)


class PolicyCapAdmin(admin.ModelAdmin):
    form = CapAdminForm
    list_display = ("id", "subject_label", "metric", "window", "limit", "model", "mode", "enabled", "usage",
                    "created_by")
    list_filter = ("subject_type", "metric", "window", "mode", "enabled")
    list_select_related = ("project", "agent__project", "created_by_key__agent__project", "created_by_user")
    fields = ("subject_type", "project", "agent", "metric", "window", "limit", "model", "mode", "enabled",
              "reason", "created_by")
    readonly_fields = ("created_by",)

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return CapChangeList

    @admin.display(description="current window: used + reserved / limit")
    def usage(self, cap: PolicyCap) -> str:
        ledger = getattr(cap, "current_ledger", None)
        if ledger is None:
            return "unused"
        return f"{ledger.used:g} + {ledger.reserved:g} / {ledger.limit_snapshot:g}"

    @admin.display(description="subject")
    def subject_label(self, cap: PolicyCap) -> str:
        return cap.subject_label

    @admin.display(description="created by")
    def created_by(self, cap: PolicyCap) -> str:
        """An agent may loosen or delete the caps it created; anything else is for operators."""
        if cap.created_by_key is not None:
            return f"agent {cap.created_by_key.agent} (key {cap.created_by_key.key_id})"
        if cap.created_by_user is not None:
            return f"user {cap.created_by_user.get_username()}"
        return "-"

    def save_model(self, request: HttpRequest, obj: PolicyCap, form: forms.Form, change: bool) -> None:
        result = services.cap_propose(actor=_actor(request), cap=obj, reason=form.cleaned_data.get("reason", ""))
        if isinstance(result, PendingCapChange):
            # An admin-only marker on the unsaved instance (not a model field), read by log_* and response_*.
            obj.pending_change = result  # type: ignore[attr-defined]  # nothing was saved: log and answer below say so instead

    # Django ignores what log_* return; None says no LogEntry was written for a proposal.
    def log_addition(self, request: HttpRequest, obj: PolicyCap, message: object) -> object:  # type: ignore[override]
        return None if hasattr(obj, "pending_change") else super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: PolicyCap, message: object) -> object:  # type: ignore[override]
        return None if hasattr(obj, "pending_change") else super().log_change(request, obj, message)

    def response_add(self, request: HttpRequest, obj: PolicyCap, post_url_continue: str | None = None) -> HttpResponse:
        if hasattr(obj, "pending_change"):
            return self._pending_response(request, obj.pending_change)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: PolicyCap) -> HttpResponse:
        if hasattr(obj, "pending_change"):
            return self._pending_response(request, obj.pending_change)
        return super().response_change(request, obj)

    def _pending_response(self, request: HttpRequest, change: PendingCapChange) -> HttpResponse:
        _pending_message(request, change)
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:policy_pendingcapchange_change",
                                            args=[change.pk]))

    def delete_model(self, request: HttpRequest, obj: PolicyCap) -> None:
        services.cap_delete(actor=_actor(request), cap=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PolicyCap]) -> None:
        for cap in queryset:
            services.cap_delete(actor=_actor(request), cap=cap)


class PendingCapChangeAdmin(ConfirmedActionsMixin, admin.ModelAdmin):
    """Cost caps waiting for a second staff member (REQUIRE_SECOND_APPROVAL_ABOVE_USD): approve or
    reject them with the actions; the one who asked cannot approve."""

    list_display = ("id", "requested_at", "requested_by", "target", "proposed_limit", "current_limit", "reason",
                    "state", "decided_by")
    list_filter = ("state",)
    list_select_related = ("requested_by", "decided_by", "cap")
    readonly_fields = ("cap", "creates", "proposed", "reason", "requested_by", "requested_at", "state", "decided_by",
                       "decided_at", "decision_reason")
    actions = ["approve", "reject"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # asked for by saving a cap

    def has_change_permission(self, request: HttpRequest, obj: PendingCapChange | None = None) -> bool:
        return obj is None and super().has_change_permission(request)  # decided by the actions only

    def has_delete_permission(self, request: HttpRequest, obj: PendingCapChange | None = None) -> bool:
        return False  # reject instead: the decision stays on record

    @admin.display(description="cap")
    def target(self, change: PendingCapChange) -> str:
        return "new cap" if change.creates and change.cap_id is None else f"cap#{change.cap_id}"

    @admin.display(description="proposed")
    def proposed_limit(self, change: PendingCapChange) -> str:
        p = change.proposed
        state = "" if p.get("enabled") and p.get("mode") == PolicyCap.Mode.ENFORCE else " (not enforced)"
        return f"{p.get('limit')} USD/{p.get('window')}{state}"

    @admin.display(description="now")
    def current_limit(self, change: PendingCapChange) -> str:
        return "-" if change.cap is None else f"{change.cap.limit:g} USD/{change.cap.window}"

    def _decide(self, request: HttpRequest, queryset: QuerySet, *, action: str, title: str, intro: str,
                service) -> HttpResponse | None:
        return self.confirm_action(
            request, queryset, action=action, title=title, intro=intro,
            apply=lambda change, data: service(actor=_actor(request), change_id=change.pk, reason=data["reason"]))

    @admin.action(description="Approve selected cap changes…", permissions=["change"])
    def approve(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._decide(request, queryset, action="approve", title="Approve cap changes",
                            intro="The proposed caps take effect at once. You cannot approve your own request.",
                            service=services.pending_cap_change_approve)

    @admin.action(description="Reject selected cap changes…", permissions=["change"])
    def reject(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._decide(request, queryset, action="reject", title="Reject cap changes",
                            intro="The caps stay as they are.", service=services.pending_cap_change_reject)


class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model", "input_usd_per_mtok", "output_usd_per_mtok", "effective_from")
    search_fields = ("model",)

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: forms.Form, change: bool) -> None:
        services.model_price_save(actor=_actor(request), price=obj)

    def has_delete_permission(self, request: HttpRequest, obj: ModelPrice | None = None) -> bool:
        return False  # add a newer price instead: old attempts keep the price they were charged


class ReasonFilter(admin.SimpleListFilter):
    title = "reason"
    parameter_name = "reason"
    KINDS = tuple(reason.value for reason in Reason)

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(k, k) for k in self.KINDS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        kind = self.value()
        if kind not in self.KINDS:
            return queryset
        # reasons are "kind" or "kind:detail"; match either, in denies and would-denies.
        matches = RawSQL("EXISTS (SELECT 1 FROM unnest(reasons || dry_run_would_deny) r "
                         "WHERE r = %s OR r LIKE %s)", [kind, f"{kind}:%"], output_field=BooleanField())
        return queryset.filter(matches)


class AdmissionDecisionAdmin(ReadOnlyModelAdmin):
    """Every deny and every dry-run would-deny, newest first."""

    list_display = ("created_at", "agent", "run", "model", "allowed", "reasons", "dry_run_would_deny",
                    "estimated_cost_usd")
    list_filter = ("allowed", ReasonFilter, "agent__project", "agent")
    list_select_related = ("agent__project", "run")
    search_fields = ("agent__name", "model")
    date_hierarchy = "created_at"


class UsageLedgerAdmin(ReadOnlyModelAdmin):
    list_display = ("cap", "window_start", "used", "reserved", "overrun", "limit_snapshot")
    list_filter = ("cap__metric", "cap__window")
    list_select_related = ("cap__project", "cap__agent__project")
    date_hierarchy = "window_start"


class ReservationAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "agent", "run", "model", "state", "estimated_cost_usd", "actual_cost_usd", "priced_by",
                    "created_at", "expires_at")
    list_filter = ("state",)
    list_select_related = ("agent__project", "run")
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Reservation]:
        priced = ModelPrice.objects.filter(model=OuterRef("model"), effective_from__lte=OuterRef("created_at"))
        return super().get_queryset(request).annotate(priced=Exists(priced))

    @admin.display(description="priced by")
    def priced_by(self, reservation: Reservation) -> str:
        """An unpriced model's costs are the agent's own estimate and report, not ours."""
        if reservation.priced:  # type: ignore[attr-defined]  # annotated by get_queryset above
            return "server"
        return "agent (unpriced model)" if reservation.estimated_cost_usd is not None else "unpriced, no cost"
