"""The leaderboard as public JSON: the same boards as the pages, from the same selectors."""

from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request

from apps.gateway.access import Op
from apps.gateway.rest.views import GatewayApi
from apps.leaderboard import selectors
from apps.leaderboard.caching import Built, cached_response


class LeaderboardEntrySerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    name = serializers.CharField(help_text="Model, prompt name or suite.")
    version = serializers.CharField(required=False, help_text="prompts: the prompt version.")
    project = serializers.CharField(required=False, help_text="prompts: the project's public name.")
    model = serializers.CharField(required=False, help_text="suites: the model ranked on this suite.")
    attempts = serializers.IntegerField(required=False, help_text="models, prompts.")
    successes = serializers.IntegerField(required=False, help_text="models, prompts.")
    tasks = serializers.IntegerField(required=False, help_text="suites: benchmark tasks.")
    passed = serializers.IntegerField(required=False, help_text="suites: tasks passed.")
    runs = serializers.IntegerField(required=False, help_text="suites: benchmark runs.")
    mean_score = serializers.FloatField(required=False, allow_null=True)
    success_rate = serializers.FloatField(allow_null=True)
    success_rate_ci95 = serializers.ListField(child=serializers.FloatField(), allow_null=True,
                                              help_text="95% Wilson interval [low, high].")
    cost_per_success_usd = serializers.CharField(required=False, allow_null=True,
                                                 help_text="Computed cost of all attempts / successes.")
    cost_partial = serializers.BooleanField(required=False, help_text="Some attempts had no price.")
    latency_p50_ms = serializers.IntegerField(required=False, allow_null=True)
    latency_p95_ms = serializers.IntegerField(required=False, allow_null=True)
    trend = serializers.ListField(child=serializers.FloatField(allow_null=True),
                                  help_text="Success rate per bucket (hour for 24h, else day), oldest first.")

class LeaderboardSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="models, prompts or suites.")
    window = serializers.CharField(help_text="24h, 7d or 30d.")
    generated_at = serializers.DateTimeField()
    min_samples = serializers.IntegerField()
    demo = serializers.BooleanField(help_text="Some of the data is demo data (seed_demo).")
    buckets = serializers.ListField(child=serializers.DateTimeField())
    entries = LeaderboardEntrySerializer(many=True)


class LeaderboardApi(GatewayApi):
    """Public leaderboard: models, prompt versions or benchmark suites over a window,
    ranked by the lower bound of the 95% Wilson interval of the success (pass) rate."""

    operation = Op.GET_LEADERBOARD
    authentication_classes: list = []  # public: a key, valid or not, changes nothing

    @extend_schema(
        parameters=[
            OpenApiParameter("window", str, enum=list(selectors.WINDOWS), default=selectors.DEFAULT_WINDOW,
                             description="The time window."),
            OpenApiParameter("kind", str, enum=list(selectors.KINDS), default="models",
                             description="What is ranked."),
        ],
        responses=LeaderboardSerializer,
        auth=[],
    )
    def get(self, request: Request) -> HttpResponse:
        kind, window = selectors.public_board_params(kind=request.query_params.get("kind"),
                                                     window=request.query_params.get("window"))

        def build() -> Built:
            body = selectors.public_board(kind=kind, window=window)
            return 200, json.dumps(body, cls=DjangoJSONEncoder).encode(), "application/json"

        return cached_response(request, key=("api", kind, window), build=build)
