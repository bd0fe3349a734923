from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from apps.keys.apis import WhoAmIApi
from apps.policy.apis import AdmissionsApi, CapDetailApi, CapsApi, PolicyApi
from modeloman import health

handler404 = "modeloman.problems.not_found"
handler500 = "modeloman.problems.server_error"

api_v1 = [
    path("whoami", WhoAmIApi.as_view(), name="whoami"),
    path("admissions", AdmissionsApi.as_view(), name="admissions"),
    path("policy", PolicyApi.as_view(), name="policy"),
    path("policy/caps", CapsApi.as_view(), name="policy-caps"),
    path("policy/caps/<int:cap_id>", CapDetailApi.as_view(), name="policy-cap"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
         name="schema"),
    path("api/v1/", include((api_v1, "api"))),
    path(settings.ADMIN_URL, admin.site.urls),
]
