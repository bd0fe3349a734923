"""Shared admin pieces: one-way actions with a confirmation page (like Django's own
`delete_selected`) and read-only admins for service-written records."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from apps.gateway.errors import DomainError

if TYPE_CHECKING:
    # Mixins for ModelAdmin subclasses: the type checker sees the ModelAdmin API they call.
    ModelAdminMixin = admin.ModelAdmin
else:
    ModelAdminMixin = object

_M = TypeVar("_M", bound=Model)


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)


class ConfirmedActionsMixin(ModelAdminMixin):
    """`confirm_action(...)` shows a confirmation form first; on "yes" it applies the service
    to each selected object and reports per-object failures."""

    confirmation_template = "admin/confirm_action.html"

    def confirm_action(self, request: HttpRequest, queryset: QuerySet[_M], *, action: str, title: str, intro: str,
                       apply: Callable[[_M, dict[str, Any]], object], form_class: type[forms.Form] = ReasonForm,
                       on_done: Callable[[list], HttpResponse | None] | None = None) -> HttpResponse | None:
        form = form_class(request.POST if request.POST.get("confirm") == "yes" else None)
        if form.is_bound and form.is_valid():
            results = []
            for obj in queryset:
                try:
                    results.append(apply(obj, form.cleaned_data))
                except DomainError as error:
                    self.message_user(request, f"{obj}: {error.detail}", messages.ERROR)
            if on_done is not None:
                return on_done(results)
            if results:
                self.message_user(request, f"{title}: {len(results)} done.", messages.SUCCESS)
            return None
        return self.render_admin_page(request, self.confirmation_template, title=title, form=form, objects=queryset,
                                      action=action, intro=intro, action_checkbox_name=helpers.ACTION_CHECKBOX_NAME)

    def render_admin_page(self, request: HttpRequest, template: str, **context: object) -> TemplateResponse:
        return TemplateResponse(request, template, {
            **self.admin_site.each_context(request), "opts": self.model._meta, **context,
        })


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """For records written only by services (audit, decisions, ledgers, telemetry): operators
    read them; nobody adds, edits or deletes them here. No full COUNT(*) on big tables."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
