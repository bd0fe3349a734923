"""Reads for policy: the effective policy of an agent and model prices, both served from
process caches that `broadcast()` invalidates everywhere."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db.models import Q

from apps.gateway.errors import Forbidden, NotFound
from apps.keys.models import Agent
from apps.policy.models import ModelPrice, Policy, PolicyCap, SubjectType, UsageLedger
from modeloman.invalidation import ProcessCache

if TYPE_CHECKING:
    from apps.gateway.auth import Principal

MILLION = Decimal(1_000_000)
DEFAULT_CAPS_PAGE, MAX_CAPS_PAGE = 50, 200
_LEVEL_ORDER: dict[str, int] = {SubjectType.GLOBAL: 0, SubjectType.PROJECT: 1, SubjectType.AGENT: 2}


@dataclass(frozen=True, slots=True)
class LevelPolicy:
    level: str
    kill_switch: bool
    dry_run: bool
    allowed_models: frozenset[str]
    allow_unpriced_models: bool | None
    max_tokens_per_attempt: int | None
    max_cost_per_attempt: Decimal | None
    max_concurrent_runs: int | None


@dataclass(frozen=True, slots=True)
class CapRule:
    id: int
    level: str
    metric: str
    window: str
    limit: Decimal
    model: str
    enforce: bool  # False: the cap (or its level) is in dry-run

    def applies_to(self, model: str) -> bool:
        return not self.model or self.model == model


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    agent_id: int
    project_id: int
    agent_status: str
    levels: tuple[LevelPolicy, ...]  # global, project, agent — those that exist
    caps: tuple[CapRule, ...]  # enabled caps, in id order (the lock order)

    @property
    def kill_switch_levels(self) -> list[str]:
        return [lvl.level for lvl in self.levels if lvl.kill_switch]

    @property
    def allow_unpriced_models(self) -> bool:
        """Most restrictive wins: any explicit no → no; else any explicit yes → yes; else no."""
        votes = [lvl.allow_unpriced_models for lvl in self.levels if lvl.allow_unpriced_models is not None]
        return bool(votes) and all(votes)

    def cost_capped(self, model: str) -> bool:
        """Whether an enforced cost cap counts `model`: then its cost must never be taken as $0."""
        return any(c.enforce and c.metric == PolicyCap.Metric.COST_USD and c.applies_to(model) for c in self.caps)

    def merged(self) -> dict:
        """The merged view shown to agents: the most restrictive value of every rule."""
        def smallest(values):
            present = [v for v in values if v is not None]
            return min(present) if present else None

        allowed: frozenset[str] | None = None
        for lvl in self.levels:
            if lvl.allowed_models:
                allowed = lvl.allowed_models if allowed is None else allowed & lvl.allowed_models
        return {
            "kill_switch": bool(self.kill_switch_levels),
            "kill_switch_levels": self.kill_switch_levels,
            "dry_run_levels": [lvl.level for lvl in self.levels if lvl.dry_run],
            "allowed_models": sorted(allowed) if allowed is not None else None,
            "allow_unpriced_models": self.allow_unpriced_models,
            "max_tokens_per_attempt": smallest(lvl.max_tokens_per_attempt for lvl in self.levels),
            "max_cost_per_attempt": smallest(lvl.max_cost_per_attempt for lvl in self.levels),
            "max_concurrent_runs": smallest(lvl.max_concurrent_runs for lvl in self.levels),
        }


_policies = ProcessCache("effective-policy")
_prices = ProcessCache("model-prices")


def _subject_filter(agent: Agent) -> Q:
    return (Q(subject_type=SubjectType.GLOBAL) | Q(subject_type=SubjectType.PROJECT, project_id=agent.project_id)
            | Q(subject_type=SubjectType.AGENT, agent_id=agent.pk))


def _load_effective_policy(agent_id: int) -> EffectivePolicy | None:
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None:
        return None
    policies = sorted(Policy.objects.filter(_subject_filter(agent)), key=lambda p: _LEVEL_ORDER[p.subject_type])
    levels = tuple(
        LevelPolicy(
            level=p.subject_type, kill_switch=p.kill_switch, dry_run=p.dry_run,
            allowed_models=frozenset(p.allowed_models), allow_unpriced_models=p.allow_unpriced_models,
            max_tokens_per_attempt=p.max_tokens_per_attempt, max_cost_per_attempt=p.max_cost_per_attempt,
            max_concurrent_runs=p.max_concurrent_runs,
        )
        for p in policies
    )
    dry_levels = {lvl.level for lvl in levels if lvl.dry_run}
    caps = tuple(
        CapRule(id=c.pk, level=c.subject_type, metric=c.metric, window=c.window, limit=c.limit, model=c.model,
                enforce=c.mode == PolicyCap.Mode.ENFORCE and c.subject_type not in dry_levels)
        for c in PolicyCap.objects.filter(_subject_filter(agent), enabled=True).order_by("id")
    )
    return EffectivePolicy(agent_id=agent.pk, project_id=agent.project_id, agent_status=agent.status,
                           levels=levels, caps=caps)


def effective_policy(agent_id: int) -> EffectivePolicy | None:
    policy = _policies.get(agent_id)
    if policy is None:
        generation = _policies.generation()
        policy = _load_effective_policy(agent_id)
        if policy is not None:
            _policies.put(agent_id, policy, generation)
    return policy


@dataclass(frozen=True, slots=True)
class Price:
    effective_from: dt.datetime
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        total = input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        return (total / MILLION).quantize(Decimal("0.000001"))


def price_history(model: str) -> tuple[Price, ...]:
    """Every price of `model`, newest first (empty: unpriced)."""
    history = _prices.get(model)
    if history is None:
        generation = _prices.generation()
        history = tuple(
            Price(p.effective_from, p.input_usd_per_mtok, p.output_usd_per_mtok)
            for p in ModelPrice.objects.filter(model=model).order_by("-effective_from")
        )
        _prices.put(model, history, generation)
    return history


def price_at(history: tuple[Price, ...], at: dt.datetime) -> Price | None:
    """The price in force at `at` (newest first, so usually the first one); None if unpriced then."""
    for price in history:  # a plain loop: ingest calls this once per attempt
        if price.effective_from <= at:
            return price
    return None


def price_for(model: str, at: dt.datetime) -> Price | None:
    """The price in force for `model` at `at`, or None if the model is unpriced."""
    return price_at(price_history(model), at)


def agent_of(principal: Principal) -> Agent:
    """The calling key's agent (with its project); operator keys have none."""
    if principal.agent_id is None:
        raise Forbidden("Only agent keys have a policy.", code="not_an_agent")
    agent = Agent.objects.select_related("project").filter(pk=principal.agent_id).first()
    if agent is None:
        raise NotFound("Agent not found.")
    return agent


@dataclass(frozen=True)
class AgentPolicyView:
    """What an agent is shown of its policy (GetPolicy): the merged rules, each level's row and
    every cap that applies to it."""

    agent: str
    project: str
    effective: dict
    levels: list[Policy]
    caps: list[PolicyCap]


def agent_policy_view(*, principal: Principal) -> AgentPolicyView:
    agent = agent_of(principal)
    policy = effective_policy(agent.pk)
    if policy is None:
        raise NotFound("Agent not found.")
    return AgentPolicyView(agent=agent.name, project=agent.project.slug, effective=policy.merged(),
                           levels=policies_for_agent(agent), caps=list(caps_for_agent(agent)))


def agent_caps_with_usage(*, principal: Principal, limit: int = DEFAULT_CAPS_PAGE, after: int = 0,
                          now: dt.datetime | None = None) -> tuple[list[PolicyCap], int | None]:
    """ListPolicyCaps: one page of the caps that apply to the calling agent, each with `used` and
    `reserved` of its current window, and the `after` of the next page (None on the last)."""
    caps, next_after = caps_page_for_agent(agent_of(principal), limit=limit, after=after)
    usage = current_usage(caps, now)
    for cap in caps:
        ledger = usage.get(cap.pk)
        cap.used, cap.reserved = (ledger.used, ledger.reserved) if ledger else (Decimal(0), Decimal(0))
    return caps, next_after


def policies_for_agent(agent: Agent) -> list[Policy]:
    """The policy rows that apply to an agent, global first."""
    return sorted(Policy.objects.filter(_subject_filter(agent)), key=lambda p: _LEVEL_ORDER[p.subject_type])


def caps_for_agent(agent: Agent):
    """Every cap (enabled or not) that applies to an agent: global, its project's, its own."""
    return PolicyCap.objects.filter(_subject_filter(agent)).order_by("id")


def caps_page_for_agent(agent: Agent, *, limit: int = DEFAULT_CAPS_PAGE, after: int = 0
                        ) -> tuple[list[PolicyCap], int | None]:
    """One page of `caps_for_agent`, in id order after cap id `after`, and the `after` of the
    next page (None on the last). Keyset paging: stable while caps are added or removed."""
    caps = list(caps_for_agent(agent).filter(pk__gt=after)[: limit + 1])
    if len(caps) > limit:
        return caps[:limit], caps[limit - 1].pk
    return caps, None


def current_usage(caps, now: dt.datetime | None = None) -> dict[int, UsageLedger]:
    """The ledger row of each cap's current window, in one query."""
    from django.utils import timezone

    from apps.policy.windows import window_start

    now = now or timezone.now()
    wanted = Q(pk__in=[])
    for cap in caps:
        wanted |= Q(cap_id=cap.pk, window_start=window_start(cap.window, now))
    return {ledger.cap_id: ledger for ledger in UsageLedger.objects.filter(wanted)}
