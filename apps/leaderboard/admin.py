"""Operators hide a model, prompt or suite from the public board; every change is audited."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.audit.services import Actor
from apps.leaderboard import services
from apps.leaderboard.models import HiddenEntry


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user)


class HiddenEntryAdmin(admin.ModelAdmin):
    list_display = ("kind", "name", "reason", "created_by", "created_at")
    list_filter = ("kind",)
    search_fields = ("name",)
    readonly_fields = ("created_by", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: HiddenEntry | None = None) -> tuple[str, ...]:
        # What is hidden is fixed once saved: unhide it and hide something else instead.
        return (*self.readonly_fields, "kind", "name") if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: HiddenEntry, form: forms.Form, change: bool) -> None:
        services.hidden_entry_save(actor=_actor(request), entry=obj)

    def delete_model(self, request: HttpRequest, obj: HiddenEntry) -> None:
        services.hidden_entry_delete(actor=_actor(request), entry=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[HiddenEntry]) -> None:
        for entry in queryset:
            services.hidden_entry_delete(actor=_actor(request), entry=entry)
