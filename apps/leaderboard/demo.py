"""Demo data for the leaderboard (`manage.py seed_demo`).

Realistic-looking traffic over the last N days — several models, prompts with versions that
got better (or did not), benchmark suites, failures, costs and latencies, and one project
that has not opted in — written through the same services as agents' data: keys issued by
api_key_create, tokens verified by authenticate_token, attempts by attempts_record (prices
and costs computed server-side), benchmarks by benchmark_record. Every project it makes is
registered in DemoProject (the board then says it shows demo data) and every attempt carries
the attribute demo=true.

`demo_clear` removes the demo telemetry (raw rows and their rollups) and runs, revokes the
demo keys, disables the demo agents and opts the demo projects out. The project, agent and
key rows themselves stay: the append-only audit trail refers to them.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import Actor
from apps.gateway.auth import authenticate_token
from apps.gateway.errors import Conflict
from apps.keys import services as key_services
from apps.keys.models import Agent, ApiKey, Project
from apps.leaderboard.models import DemoProject
from apps.policy import services as policy_services
from apps.policy.models import ModelPrice
from apps.telemetry import services as telemetry
from apps.telemetry.models import Run
from apps.telemetry.rollups import rollups_refresh
from apps.telemetry.timescale import timescale_enabled
from apps.telemetry.validation import AttemptIn, BenchmarkIn

ACTOR = Actor.system("seed_demo")


@dataclass(frozen=True)
class DemoModel:
    name: str
    success: float  # base probability of success
    latency_ms: int  # median
    input_usd_per_mtok: str
    output_usd_per_mtok: str
    weight: float = 1.0  # share of traffic


MODELS = (
    DemoModel("claude-3-5-sonnet", 0.93, 1100, "3", "15"),
    DemoModel("gpt-4o", 0.91, 900, "2.5", "10"),
    DemoModel("gemini-1.5-pro", 0.88, 1300, "1.25", "5"),
    DemoModel("qwen2.5-72b-instruct", 0.85, 650, "0.4", "1.2"),
    DemoModel("llama-3.1-70b-instruct", 0.82, 700, "0.6", "0.6"),
    DemoModel("mistral-large", 0.78, 800, "2", "6"),
    DemoModel("phi-3-mini", 0.70, 300, "0.1", "0.1", weight=0.004),  # too few attempts: never shown
)


@dataclass(frozen=True)
class DemoPrompt:
    name: str
    version: str
    first_day: int  # days ago the version went live
    last_day: int  # days ago it was retired (0: still live)
    lift: float  # added to the model's success probability


@dataclass(frozen=True)
class DemoProjectSpec:
    slug: str
    name: str
    public_name: str
    opt_in: bool
    agents: tuple[str, ...]
    prompts: tuple[DemoPrompt, ...]
    share: float  # of the daily attempts


PROJECTS = (
    DemoProjectSpec("demo-acme", "Acme Research (demo)", "Acme Research", True, ("demo-planner", "demo-writer"), (
        DemoPrompt("summarize", "v1", 30, 18, -0.06),
        DemoPrompt("summarize", "v2", 20, 8, 0.0),
        DemoPrompt("summarize", "v3", 10, 0, 0.04),
    ), 0.45),
    DemoProjectSpec("demo-orbit", "Orbit Labs (demo)", "Orbit Labs", True, ("demo-triage-bot", "demo-extractor"), (
        DemoPrompt("extract-invoice", "v1", 30, 0, -0.08),
        DemoPrompt("extract-invoice", "v2", 14, 0, 0.0),
        DemoPrompt("triage", "v1", 30, 0, -0.02),
        DemoPrompt("triage", "v2", 12, 0, -0.02),  # a rewrite that changed nothing
    ), 0.40),
    DemoProjectSpec("demo-skunkworks", "Skunkworks (demo, private)", "Skunkworks", False, ("demo-stealth",), (
        DemoPrompt("secret-sauce", "v1", 30, 0, 0.05),
    ), 0.15),
)

SUITES = (("humaneval-lite", 164, 0.0), ("gsm8k-sample", 200, -0.05), ("doc-qa", 50, 0.03))


def _projects(*, create: bool) -> list[tuple[DemoProjectSpec, Project]]:
    out = []
    for spec in PROJECTS:
        project = Project.objects.filter(slug=spec.slug).first()
        if project is not None and not DemoProject.objects.filter(project=project).exists():
            raise Conflict(f"A project with the slug {spec.slug!r} exists and was not made by seed_demo.",
                           code="demo_slug_taken")
        if project is None:
            if not create:
                continue
            project = Project(slug=spec.slug)
        project.name, project.public_name, project.leaderboard_opt_in = spec.name, spec.public_name, spec.opt_in
        key_services.project_save(actor=ACTOR, project=project)
        DemoProject.objects.get_or_create(project=project)
        out.append((spec, project))
    return out


def _principal(project: Project, agent_name: str):
    agent = Agent.objects.filter(project=project, name=agent_name).first() or Agent(project=project, name=agent_name)
    if agent._state.adding or agent.status != Agent.Status.ACTIVE:
        agent.status = Agent.Status.ACTIVE
        key_services.agent_save(actor=ACTOR, agent=agent)
    issued = key_services.api_key_create(actor=ACTOR, agent=agent, scopes=["tasks:write", "telemetry:write"],
                                         name="seed_demo")
    return authenticate_token(issued.token)


def _ensure_prices(now: dt.datetime) -> None:
    for model in MODELS:
        if not ModelPrice.objects.filter(model=model.name).exists():
            policy_services.model_price_save(actor=ACTOR, price=ModelPrice(
                model=model.name, input_usd_per_mtok=Decimal(model.input_usd_per_mtok),
                output_usd_per_mtok=Decimal(model.output_usd_per_mtok), effective_from=now - dt.timedelta(days=400)))


def demo_seed(*, days: int = 30, attempts_per_day: int = 2000, seed: int = 7,
              now: dt.datetime | None = None) -> dict[str, int]:
    """Load the demo; replaces earlier demo telemetry. Returns counts for the command's output."""
    now = now or timezone.now()
    rng = random.Random(seed)  # noqa: S311  # demo data, reproducible by seed; nothing secret
    demo_clear(quiet=True)
    _ensure_prices(now)
    counts = {"attempts": 0, "benchmarks": 0, "projects": 0}
    oldest = now - dt.timedelta(days=days) + dt.timedelta(minutes=5)
    weights = [model.weight for model in MODELS]
    for spec, project in _projects(create=True):
        counts["projects"] += 1
        for agent_name in spec.agents:
            principal = _principal(project, agent_name)
            run = telemetry.run_start(principal=principal, task="demo traffic", metadata={"demo": True})
            items: list[AttemptIn] = []
            per_agent_day = max(1, round(attempts_per_day * spec.share / len(spec.agents)))
            for day in range(days):
                live = [prompt for prompt in spec.prompts if prompt.last_day <= day < prompt.first_day]
                for _ in range(per_agent_day):
                    moment = now - dt.timedelta(days=day, seconds=rng.uniform(0, 86400))
                    if moment < oldest:
                        continue
                    model = rng.choices(MODELS, weights)[0]
                    prompt = rng.choice(live) if live else None
                    # Weekends are a little harder (different traffic), and so is the odd bad day.
                    p = model.success + (prompt.lift if prompt else 0) - (0.02 if moment.weekday() >= 5 else 0)
                    success = rng.random() < min(0.99, max(0.05, p))
                    latency = int(min(3_600_000, model.latency_ms * math.exp(rng.gauss(0, 0.55))))
                    items.append(AttemptIn(
                        model=model.name, success=success, input_tokens=rng.randint(300, 4000),
                        output_tokens=rng.randint(50, 900), latency_ms=latency if success else latency // 2,
                        time=moment, prompt_name=prompt.name if prompt else "",
                        prompt_version=prompt.version if prompt else "",
                        error_code="" if success else rng.choice(["timeout", "invalid_output", "refused"]),
                        run_id=run.pk, attributes={"demo": True}))
                    if len(items) == 1000:
                        telemetry.attempts_record(principal=principal, items=items, batch=True)
                        counts["attempts"] += len(items)
                        items = []
            if items:
                telemetry.attempts_record(principal=principal, items=items, batch=True)
                counts["attempts"] += len(items)
            telemetry.run_finish(principal=principal, run_id=run.pk, status="succeeded", metadata=None)
        # One benchmark run per suite and model every day, reported by the project's first agent.
        principal = _principal(project, spec.agents[0])
        for day in range(days):
            moment = now - dt.timedelta(days=day, hours=rng.uniform(0, 23))
            if moment < oldest:
                continue
            for suite, tasks, difficulty in SUITES:
                for model in MODELS[:-1]:
                    if rng.random() > 0.5:  # each project runs each pair every other day or so
                        continue
                    passed = sum(rng.random() < model.success + difficulty - 0.1 for _ in range(tasks))
                    telemetry.benchmark_record(principal=principal, item=BenchmarkIn(
                        suite=suite, model=model.name, score=round(passed / tasks, 4), time=moment,
                        passed=passed, total=tasks, attributes={"demo": True}))
                    counts["benchmarks"] += 1
    _refresh()
    return counts


def _refresh() -> None:
    rollups_refresh(full=True, retention=dt.timedelta(days=settings.TELEMETRY_RETENTION_DAYS))


def demo_clear(*, quiet: bool = False) -> dict[str, int]:
    """Remove the demo telemetry and take the demo projects off the board."""
    project_ids = list(DemoProject.objects.values_list("project_id", flat=True))
    counts = {"projects": len(project_ids), "attempts": 0}
    if not project_ids:
        return counts
    with transaction.atomic():
        with connection.cursor() as cursor:
            for table in ("prompt_attempts", "run_events", "benchmarks"):
                cursor.execute(f"DELETE FROM {table} WHERE project_id = ANY(%s)", [project_ids])  # noqa: S608  # fixed names
                if table == "prompt_attempts":
                    counts["attempts"] = cursor.rowcount
            if not timescale_enabled():  # plain rollup tables keep buckets older than the raw data: delete them
                for table in ("prompt_attempts_hourly", "leaderboard_attempts_daily", "benchmarks_daily"):
                    cursor.execute(f"DELETE FROM {table} WHERE project_id = ANY(%s)", [project_ids])  # noqa: S608
        Run.objects.filter(project_id__in=project_ids).delete()
        for api_key in ApiKey.objects.filter(agent__project_id__in=project_ids, revoked_at__isnull=True):
            key_services.api_key_revoke(actor=ACTOR, api_key=api_key, reason="seed_demo --clear")
        for agent in Agent.objects.filter(project_id__in=project_ids).exclude(status=Agent.Status.DISABLED):
            agent.status = Agent.Status.DISABLED
            key_services.agent_save(actor=ACTOR, agent=agent)
        for project in Project.objects.filter(pk__in=project_ids, leaderboard_opt_in=True):
            project.leaderboard_opt_in = False
            key_services.project_save(actor=ACTOR, project=project)
    if timescale_enabled() and not quiet:
        _refresh()  # continuous aggregates forget the deleted rows when refreshed
    return counts
