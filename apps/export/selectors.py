"""The streamed state export: projects, agents, keys (never digests), policy, caps, run summaries."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from apps.keys.models import Agent, ApiKey, Project
from apps.policy.models import Policy, PolicyCap
from apps.telemetry.models import Run

_encoder = DjangoJSONEncoder(separators=(",", ":"))
EXPORT_SECTIONS = {
    "projects": (Project.objects.order_by("pk"), ("id", "slug", "name", "public_name", "leaderboard_opt_in",
                                                  "created_at")),
    "agents": (Agent.objects.order_by("pk"), ("id", "project_id", "name", "status", "created_at")),
    # Never the digest.
    "api_keys": (ApiKey.objects.order_by("pk"), ("id", "key_id", "name", "agent_id", "scopes", "expires_at",
                                                 "revoked_at", "revoked_reason", "rotated_from_id", "grace_until",
                                                 "last_used_at", "created_at", "created_by")),
    "policies": (Policy.objects.order_by("pk"), ("id", "subject_type", "project_id", "agent_id", "kill_switch",
                                                 "kill_switch_reason", "dry_run", "allowed_models",
                                                 "allow_unpriced_models", "max_tokens_per_attempt",
                                                 "max_cost_per_attempt", "max_concurrent_runs", "updated_at")),
    "caps": (PolicyCap.objects.order_by("pk"), ("id", "subject_type", "project_id", "agent_id", "metric", "window",
                                                "limit", "model", "mode", "enabled")),
    "runs": (Run.objects.order_by("started_at", "pk"), ("id", "agent_id", "project_id", "task", "status",
                                                         "started_at", "finished_at", "attempts", "input_tokens",
                                                         "output_tokens", "cost_usd")),
}


def _array(rows: Iterable[dict]) -> Iterator[str]:
    yield "["
    first = True
    for row in rows:
        yield ("" if first else ",") + _encoder.encode(row)
        first = False
    yield "]"


def export_sections() -> Iterator[tuple[str, Iterator[dict]]]:
    """Each section's name and its rows (dicts of the exported fields), fetched in chunks, in order."""
    for name, (queryset, fields) in EXPORT_SECTIONS.items():
        yield name, queryset.values(*fields).iterator(chunk_size=2000)


def export_stream() -> Iterator[str]:
    """The export as a stream of JSON text: one object, one array per section (REST)."""
    yield '{"exported_at":' + json.dumps(timezone.now().isoformat())
    for name, rows in export_sections():
        yield f',"{name}":'
        yield from _array(rows)
    yield "}"
