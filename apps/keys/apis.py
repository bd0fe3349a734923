from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from apps.gateway.access import Op
from apps.gateway.rest.request import AgentRequest
from apps.gateway.rest.serializers import rendered
from apps.gateway.rest.views import GatewayApi


class WhoAmIApi(GatewayApi):
    """The calling key: its id, agent, project and scopes."""

    operation = Op.WHO_AM_I

    class OutputSerializer(serializers.Serializer):
        key_id = serializers.CharField()
        agent = serializers.CharField(source="agent_name", allow_null=True)
        project = serializers.CharField(source="project_slug", allow_null=True)
        scopes = serializers.ListField(child=serializers.CharField())
        expires_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(responses=OutputSerializer)
    def get(self, request: AgentRequest) -> Response:
        principal = request.auth
        data = rendered(self.OutputSerializer, principal)
        data["scopes"] = sorted(principal.scopes)
        return Response(data)
