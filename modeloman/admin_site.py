"""The operators' door: one AdminSite, and the one place that says which admin serves which model.

Apps define their ModelAdmin classes and register nothing; the screens that combine apps (a
project's or agent's page with its policy and caps) are composed in the app that adds to them
(apps.policy.admin) and registered here, once. Login lockout and OTP hang on `ModeloManAdminSite`.
`ModeloManAdminConfig` replaces django.contrib.admin in INSTALLED_APPS, so `admin.site` is this
site (django.contrib.auth still registers its User and Group on it).
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path


class ModeloManAdminSite(admin.AdminSite):
    """Password and TOTP code in one login form (modeloman.admin_security); TOTP devices are never
    registered here: they are enrolled only by the audited `enrol_otp_device` command.

    The index is the operator's console (modeloman/console.py), with the global kill switch one
    click away; "view site" leads to the public leaderboard."""

    login_template = "admin/otp_login.html"
    index_template = "admin/console.html"
    site_header = "ModeloMan"
    site_title = "ModeloMan operators"
    index_title = "Console"
    site_url = "/"

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)
        from modeloman.admin_security import AdminLoginForm

        self.login_form = AdminLoginForm

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from modeloman.console import console_context

        return super().index(request, {**console_context(), **(extra_context or {})})

    def get_urls(self) -> list:
        return [path("kill-switch/", self.admin_view(self.global_kill_switch), name="global_kill_switch"),
                *super().get_urls()]

    def global_kill_switch(self, request: HttpRequest) -> HttpResponse:
        from modeloman.console import global_kill_switch_view

        if not request.user.has_perm("policy.change_policy"):
            raise PermissionDenied
        return global_kill_switch_view(request, self)


class ModeloManAdminConfig(AdminConfig):
    default_site = "modeloman.admin_site.ModeloManAdminSite"

    def ready(self) -> None:
        super().ready()  # autodiscover: contrib apps register on admin.site (this site)
        register_models(admin.site)


def register_models(site: admin.AdminSite) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from apps.audit.admin import AuditEventAdmin
    from apps.audit.models import AuditEvent
    from apps.keys.admin import ApiKeyAdmin
    from apps.keys.models import Agent, ApiKey, Project
    from apps.leaderboard.admin import HiddenEntryAdmin
    from apps.leaderboard.models import HiddenEntry
    from apps.policy.admin import (
        AdmissionDecisionAdmin,
        AgentWithPolicyAdmin,
        ModelPriceAdmin,
        PendingCapChangeAdmin,
        PolicyAdmin,
        PolicyCapAdmin,
        ProjectWithPolicyAdmin,
        ReservationAdmin,
        UsageLedgerAdmin,
    )
    from apps.policy.models import (
        AdmissionDecision,
        ModelPrice,
        PendingCapChange,
        Policy,
        PolicyCap,
        Reservation,
        UsageLedger,
    )
    from apps.telemetry.admin import (
        BenchmarkAdmin,
        BenchmarkDailyAdmin,
        PromptAttemptAdmin,
        PromptAttemptHourlyAdmin,
        RunAdmin,
        RunEventAdmin,
    )
    from apps.telemetry.models import Run
    from apps.telemetry.timeseries import Benchmark, BenchmarkDaily, PromptAttempt, PromptAttemptHourly, RunEvent

    # django-otp's autodiscovered admin would let a staff member add a second factor to any account
    # from a page; devices are enrolled only by the audited command.
    if site.is_registered(TOTPDevice):
        site.unregister(TOTPDevice)
    site.register(Project, ProjectWithPolicyAdmin)  # apps.keys' ProjectAdmin + policy inlines and switches
    site.register(Agent, AgentWithPolicyAdmin)  # apps.keys' AgentAdmin + policy inlines and switches
    site.register(ApiKey, ApiKeyAdmin)
    site.register(Policy, PolicyAdmin)
    site.register(PolicyCap, PolicyCapAdmin)
    site.register(PendingCapChange, PendingCapChangeAdmin)
    site.register(ModelPrice, ModelPriceAdmin)
    site.register(AdmissionDecision, AdmissionDecisionAdmin)
    site.register(UsageLedger, UsageLedgerAdmin)
    site.register(Reservation, ReservationAdmin)
    site.register(Run, RunAdmin)
    site.register(PromptAttempt, PromptAttemptAdmin)
    site.register(RunEvent, RunEventAdmin)
    site.register(Benchmark, BenchmarkAdmin)
    site.register(PromptAttemptHourly, PromptAttemptHourlyAdmin)
    site.register(BenchmarkDaily, BenchmarkDailyAdmin)
    site.register(HiddenEntry, HiddenEntryAdmin)
    site.register(AuditEvent, AuditEventAdmin)
