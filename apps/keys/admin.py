"""Operator screens for projects, agents and API keys.

Every write goes through `apps.keys.services` (validation, audit, invalidation). Plaintext
tokens are rendered straight into the response that follows issuing or rotating — never
put in messages, sessions or cookies — and digests are never displayed.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from apps.audit.services import Actor
from apps.gateway.access import Scope
from apps.gateway.errors import DomainError
from apps.keys import services
from apps.keys.models import RATE_VALIDATOR, Agent, ApiKey, Project
from modeloman.admin_actions import ConfirmedActionsMixin, ReasonForm
from modeloman.durations import parse_duration

SCOPE_CHOICES = [(s.value, s.value) for s in Scope]


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user)


class DurationField(forms.CharField):
    # Text in (CharField's cleaning), a timedelta out: narrower than CharField's str on purpose.
    def to_python(self, value: str | None) -> dt.timedelta | None:  # type: ignore[override]
        value = super().to_python(value)
        if not value:
            return None
        try:
            return parse_duration(value)
        except ValueError as error:
            raise forms.ValidationError(str(error), code="invalid_duration") from error


# --- projects and agents ---------------------------------------------------------------


class ProjectAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "public_name", "leaderboard_opt_in", "created_at")
    list_filter = ("leaderboard_opt_in",)
    search_fields = ("slug", "name", "public_name")
    readonly_fields = ("created_at",)

    def save_model(self, request: HttpRequest, obj: Project, form: forms.Form, change: bool) -> None:
        services.project_save(actor=_actor(request), project=obj)

    def has_delete_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return False  # projects carry audit history; there is nothing to gain from deleting one


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ("key_id", "name", "status_label", "scopes", "expires_at", "last_used_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    @admin.display(description="status")
    def status_label(self, obj: ApiKey) -> str:
        return obj.status


class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "status", "created_at")
    list_filter = ("status", "project")
    list_select_related = ("project",)
    search_fields = ("name", "project__slug")
    readonly_fields = ("created_at",)
    inlines = [ApiKeyInline]

    def save_model(self, request: HttpRequest, obj: Agent, form: forms.Form, change: bool) -> None:
        services.agent_save(actor=_actor(request), agent=obj)

    def has_delete_permission(self, request: HttpRequest, obj: Agent | None = None) -> bool:
        return False  # disable an agent instead; its keys and audit history stay


# --- API keys ----------------------------------------------------------------------------


class ApiKeyIssueForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.select_related("project"), required=False,
                                   help_text="Leave empty for an operator automation key.")
    name = forms.CharField(max_length=100, required=False)
    scopes = forms.MultipleChoiceField(choices=SCOPE_CHOICES, widget=forms.CheckboxSelectMultiple)
    expires_in = DurationField(required=False, help_text="e.g. 90d, 12h. Empty: never expires.")


class RotateForm(forms.Form):
    grace = DurationField(initial="24h", help_text="How long the old key keeps working, e.g. 24h.")


class ExpiryForm(forms.Form):
    expires_in = DurationField(help_text="New expiry, counted from now, e.g. 90d.")


class RateLimitsForm(forms.Form):
    rate_limit_get = forms.CharField(
        label="Reads", max_length=20, required=False, validators=[RATE_VALIDATOR],
        help_text="e.g. 6000/m. Empty: the default (RATE_LIMIT_GET).")
    rate_limit_mutation = forms.CharField(
        label="Writes", max_length=20, required=False, validators=[RATE_VALIDATOR],
        help_text="e.g. 600/m. Empty: the default (RATE_LIMIT_MUTATION).")


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(ApiKey.Status.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        status = self.value()
        if status in ApiKey.Status.values:
            return queryset & ApiKey.objects.with_status(status, timezone.now())
        return queryset


class ScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return SCOPE_CHOICES

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() in dict(SCOPE_CHOICES):
            return queryset.filter(scopes__contains=[self.value()])
        return queryset


class ApiKeyAdmin(ConfirmedActionsMixin, admin.ModelAdmin):
    list_display = ("key_id", "name", "agent", "status_label", "scope_list", "expires_at",
                    "last_used_at", "created_at")
    list_filter = (StatusFilter, "agent__project", ScopeFilter)
    list_select_related = ("agent__project",)
    search_fields = ("key_id", "name", "agent__name")
    fields = ("key_id", "name", "agent", "status_label", "scope_list", "expires_at", "grace_until",
              "rotated_from", "revoked_at", "revoked_reason", "rate_limit_get", "rate_limit_mutation",
              "last_used_at", "created_at", "created_by")
    readonly_fields = fields  # changes go through the actions below, which audit them
    actions = ["revoke_keys", "rotate_keys", "extend_expiry", "set_rate_limits"]

    @admin.display(description="status")
    def status_label(self, obj: ApiKey) -> str:
        return obj.status

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # keys are revoked, never deleted: audit rows point at them

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiKeyIssueForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            expires_at = timezone.now() + data["expires_in"] if data["expires_in"] else None
            try:
                issued = services.api_key_create(actor=_actor(request), agent=data["agent"],
                                                 scopes=data["scopes"], expires_at=expires_at,
                                                 name=data["name"])
            except DomainError as error:
                form.add_error(None, error.detail)
            else:
                return self._show_tokens(request, [issued], title="API key issued")
        return self.render_admin_page(request, "admin/keys/apikey/issue.html", title="Issue an API key", form=form)

    # --- actions: each asks for confirmation (and a reason or duration) first ------------

    @admin.action(description="Revoke selected keys…", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        return self.confirm_action(
            request, queryset, form_class=ReasonForm, action="revoke_keys", title="Revoke API keys",
            intro="Revocation is permanent and takes effect everywhere within a second.",
            apply=lambda key, data: services.api_key_revoke(actor=_actor(request), api_key=key,
                                                            reason=data["reason"]),
        )

    @admin.action(description="Rotate selected keys…", permissions=["change"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        return self.confirm_action(
            request, queryset, form_class=RotateForm, action="rotate_keys", title="Rotate API keys",
            intro="Each key gets a successor with the same agent and scopes. The old key keeps "
                  "working until the grace period ends.",
            apply=lambda key, data: services.api_key_rotate(actor=_actor(request), api_key=key,
                                                            grace=data["grace"]),
            on_done=lambda issued: self._show_tokens(request, issued, title="Keys rotated") if issued else None,
        )

    @admin.action(description="Change expiry of selected keys…", permissions=["change"])
    def extend_expiry(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        return self.confirm_action(
            request, queryset, form_class=ExpiryForm, action="extend_expiry", title="Change key expiry",
            intro="The new expiry is counted from now.",
            apply=lambda key, data: services.api_key_set_expiry(
                actor=_actor(request), api_key=key, expires_at=timezone.now() + data["expires_in"]),
        )

    @admin.action(description="Set rate limits of selected keys…", permissions=["change"])
    def set_rate_limits(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        return self.confirm_action(
            request, queryset, form_class=RateLimitsForm, action="set_rate_limits", title="Set rate limits",
            intro="Calls allowed per period for these keys, e.g. 6000/m or 100000/h, in place of the "
                  "defaults; empty restores the default. Takes effect everywhere within a second.",
            apply=lambda key, data: services.api_key_set_rate_limits(
                actor=_actor(request), api_key=key, rate_limit_get=data["rate_limit_get"],
                rate_limit_mutation=data["rate_limit_mutation"]),
        )

    def _show_tokens(self, request: HttpRequest, issued: list[services.IssuedKey], *, title: str) -> HttpResponse:
        response = self.render_admin_page(request, "admin/keys/apikey/tokens.html", title=title, issued=issued)
        response["Cache-Control"] = "no-store"
        return response
