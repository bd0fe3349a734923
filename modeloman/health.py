"""Liveness and readiness. Plain Django views: no authentication, no session, no DB for /healthz."""

import logging

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from apps.gateway.access import Op
from apps.gateway.rest.public import public_read

logger = logging.getLogger(__name__)


@public_read(Op.HEALTH)
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})



@public_read(Op.HEALTH)
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": "ok", "cache": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        logger.exception("readyz: database unreachable")
        checks["database"] = "unavailable"
    try:
        cache.set("readyz", "1", timeout=5)
        if cache.get("readyz") != "1":
            raise RuntimeError("cache round-trip failed")
    except Exception:
        logger.exception("readyz: cache unreachable")
        checks["cache"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)

