from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from apps.keys.apis import WhoAmIApi
from modeloman import health

handler404 = "modeloman.problems.not_found"
handler500 = "modeloman.problems.server_error"

api_v1 = [
    path("whoami", WhoAmIApi.as_view(), name="whoami"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
         name="schema"),
    path("api/v1/", include((api_v1, "api"))),
    path(settings.ADMIN_URL, admin.site.urls),
]
