"""REST for the state export (`admin:read`)."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from apps.export import selectors
from apps.gateway.access import Op
from apps.gateway.rest.views import GatewayApi


class ExportApi(GatewayApi):
    """Everything an operator needs to audit or move an installation, streamed as JSON.
    Keys appear without digests; telemetry appears as run summaries."""

    operation = Op.EXPORT_STATE

    @extend_schema(responses=dict)
    def get(self, request: Request) -> StreamingHttpResponse:
        response = StreamingHttpResponse(selectors.export_stream(), content_type="application/json")
        response["Cache-Control"] = "no-store"
        return response
