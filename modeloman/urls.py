from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from apps.export.apis import ExportApi
from apps.gateway.rest.observe import metrics_view
from apps.keys.apis import WhoAmIApi
from apps.leaderboard.apis import LeaderboardApi
from apps.policy.apis import AdmissionsApi, CapDetailApi, CapsApi, PolicyApi
from apps.telemetry.apis import (
    AttemptsApi,
    BenchmarksApi,
    RunDetailApi,
    RunEventsApi,
    RunFinishApi,
    RunsApi,
)
from modeloman import health

handler404 = "apps.gateway.rest.problems.not_found"
handler500 = "apps.gateway.rest.problems.server_error"

api_v1 = [
    path("whoami", WhoAmIApi.as_view(), name="whoami"),
    path("admissions", AdmissionsApi.as_view(), name="admissions"),
    path("policy", PolicyApi.as_view(), name="policy"),
    path("policy/caps", CapsApi.as_view(), name="policy-caps"),
    path("policy/caps/<int:cap_id>", CapDetailApi.as_view(), name="policy-cap"),
    path("runs", RunsApi.as_view(), name="runs"),
    path("runs/<uuid:run_id>", RunDetailApi.as_view(), name="run"),
    path("runs/<uuid:run_id>/finish", RunFinishApi.as_view(), name="run-finish"),
    path("runs/<uuid:run_id>/events", RunEventsApi.as_view(), name="run-events"),
    path("attempts", AttemptsApi.as_view(), name="attempts"),
    path("benchmarks", BenchmarksApi.as_view(), name="benchmarks"),
    path("export", ExportApi.as_view(), name="export"),
    path("leaderboard", LeaderboardApi.as_view(), name="leaderboard"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
         name="schema"),
    path("api/v1/", include((api_v1, "api"))),
    path(settings.ADMIN_URL, admin.site.urls),
    path("", include("apps.leaderboard.urls")),
]
