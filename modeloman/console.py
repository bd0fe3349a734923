"""The operator's console: the admin index (modeloman/admin_site.py) answers "what is happening
now?" before "which table do I open?".

Every read here is bounded (a LIMIT, a window of the last hour, indexed columns), so the index
page stays fast whatever the size of the tables behind it. The global kill switch is one click away:
a confirmation page with a reason, then the same audited service as everywhere else (`policy_set`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from django import forms
from django.contrib import messages
from django.db.models import DecimalField, ExpressionWrapper, F, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from apps.audit.services import Actor
from apps.gateway import metrics
from apps.keys.models import ApiKey
from apps.policy.models import AdmissionDecision, Policy, PolicyCap, Reservation, SubjectType, UsageLedger
from apps.policy.services import policy_set
from apps.policy.windows import window_start

LAST_HOUR = dt.timedelta(hours=1)
COUNT_LIMIT = 10_000  # "10,000+" beyond this: counting further is not worth a slow index page
REASON_SAMPLE = 2_000  # denial reasons are tallied over the latest this many denials of the hour
TOP = 10


@dataclass
class BoundedCount:
    value: int
    more: bool  # the real number is larger

    def __str__(self) -> str:
        return f"{self.value:,}+" if self.more else f"{self.value:,}"


def _bounded_count(queryset) -> BoundedCount:
    value = queryset[: COUNT_LIMIT + 1].count()  # COUNT(*) over a LIMITed subquery
    return BoundedCount(min(value, COUNT_LIMIT), value > COUNT_LIMIT)


@dataclass
class Admissions:
    admitted: BoundedCount  # admissions that reserved budget (plain allows without caps are not stored)
    denied: BoundedCount
    would_deny: BoundedCount  # allowed, but a dry-run rule or cap would have denied
    reasons: list[tuple[str, int]] = field(default_factory=list)
    reasons_sampled: bool = False


def admissions_last_hour(now: dt.datetime) -> Admissions:
    since = now - LAST_HOUR
    decisions = AdmissionDecision.objects.filter(created_at__gte=since)
    latest = list(decisions.filter(allowed=False).order_by("-created_at").values_list("reasons", flat=True)
                  [:REASON_SAMPLE + 1])
    tally = Counter(metrics.reason_family(r) for reasons in latest[:REASON_SAMPLE] for r in set(reasons))
    return Admissions(
        admitted=_bounded_count(Reservation.objects.filter(created_at__gte=since)),
        denied=_bounded_count(decisions.filter(allowed=False)),
        would_deny=_bounded_count(decisions.filter(allowed=True)),
        reasons=tally.most_common(), reasons_sampled=len(latest) > REASON_SAMPLE,
    )


@dataclass
class Spender:
    cap: PolicyCap
    window_start: dt.datetime
    used: object
    reserved: object
    limit: object
    percent: float


def top_spenders(now: dt.datetime, *, limit: int = TOP) -> list[Spender]:
    """The cap windows in progress, fullest first (used + reserved against the limit)."""
    current = Q()
    for window in PolicyCap.Window.values:
        current |= Q(cap__window=window, window_start=window_start(window, now))
    fill = ExpressionWrapper((F("used") + F("reserved")) / F("limit_snapshot"),
                             output_field=DecimalField(max_digits=30, decimal_places=6))
    rows = (UsageLedger.objects.filter(current, cap__enabled=True).annotate(fill=fill)
            .select_related("cap__project", "cap__agent__project").order_by("-fill", "cap_id")[:limit])
    return [Spender(cap=row.cap, window_start=row.window_start, used=row.used, reserved=row.reserved,
                    limit=row.limit_snapshot, percent=float(row.fill) * 100) for row in rows]


def rate_limited_keys() -> list[tuple[str, dt.datetime, ApiKey | None]]:
    recent = metrics.recently_rate_limited_keys(limit=TOP)
    keys = {k.key_id: k for k in ApiKey.objects.filter(key_id__in=[key_id for key_id, _ in recent])
            .select_related("agent__project")}
    return [(key_id, at, keys.get(key_id)) for key_id, at in recent]


def active_kill_switches(*, limit: int = 50) -> list[Policy]:
    return list(Policy.objects.filter(kill_switch=True).select_related("project", "agent__project")
                .order_by("subject_type", "id")[:limit])


def console_context(now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    switches = active_kill_switches()
    return {
        "console_now": now,
        "admissions": admissions_last_hour(now),
        "spenders": top_spenders(now),
        "rate_limited": rate_limited_keys(),
        "kill_switches": switches,
        "global_kill_switch": next((p for p in switches if p.subject_type == SubjectType.GLOBAL), None),
    }


# --- the global kill switch ----------------------------------------------------------------------------


class KillSwitchForm(forms.Form):
    engage = forms.BooleanField(required=False, widget=forms.HiddenInput)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                             help_text="Recorded in the audit trail with your name.")


def global_kill_switch_view(request: HttpRequest, site) -> HttpResponse:
    """Engage (or release) the global kill switch, after a confirmation page with a reason."""
    current = Policy.objects.filter(subject_type=SubjectType.GLOBAL).first()
    engaged = bool(current and current.kill_switch)
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        form = KillSwitchForm(request.POST)
        if form.is_valid():
            engage = form.cleaned_data["engage"]
            policy_set(actor=Actor.for_user(request.user), subject_type=SubjectType.GLOBAL, kill_switch=engage,
                       reason=form.cleaned_data["reason"])
            messages.success(request, "Global kill switch engaged: every admission is denied." if engage
                             else "Global kill switch released: admissions follow the remaining rules.")
            return HttpResponseRedirect(reverse("admin:index", current_app=site.name))
    else:
        form = KillSwitchForm(initial={"engage": not engaged})
    engage = bool(form["engage"].value())
    return TemplateResponse(request, "admin/kill_switch_confirm.html", {
        **site.each_context(request), "title": "Engage the global kill switch" if engage
        else "Release the global kill switch", "form": form, "engage": engage, "engaged": engaged,
    })
