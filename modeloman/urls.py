from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from apps.keys.apis import WhoAmIApi
from apps.policy.apis import AdmissionsApi, CapDetailApi, CapsApi, PolicyApi
from apps.telemetry.apis import (
    AttemptsApi,
    BenchmarksApi,
    ExportApi,
    RunDetailApi,
    RunEventsApi,
    RunFinishApi,
    RunsApi,
)
from modeloman import health
from modeloman.admin_security import secure_admin_site

handler404 = "modeloman.problems.not_found"
handler500 = "modeloman.problems.server_error"

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
]

secure_admin_site(admin.site)

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
         name="schema"),
    path("api/v1/", include((api_v1, "api"))),
    path(settings.ADMIN_URL, admin.site.urls),
]
