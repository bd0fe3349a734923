"""Test data. Keys are issued through the real service so digests are real."""

from typing import Any

import factory

from apps.audit.services import Actor
from apps.keys import services
from apps.keys.models import Agent, Project

TEST_ACTOR = Actor.system("tests")


class ProjectFactory(factory.django.DjangoModelFactory[Project]):
    class Meta:
        model = Project

    slug = factory.Sequence(lambda n: f"project-{n}")
    name = factory.LazyAttribute(lambda p: p.slug.title())


class AgentFactory(factory.django.DjangoModelFactory[Agent]):
    class Meta:
        model = Agent

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"agent-{n}")


def issue_key(agent=None, scopes=("tasks:write",), **kwargs) -> services.IssuedKey:
    agent = agent or AgentFactory.create()
    return services.api_key_create(actor=TEST_ACTOR, agent=agent, scopes=list(scopes), **kwargs)


def make_cap(*, subject=None, metric="cost_usd", window="day", limit="100", model="", mode="enforce"):
    """A cap on an agent, a project or (subject=None) everything, through the audited service."""
    from decimal import Decimal

    from apps.keys.models import Agent, Project
    from apps.policy import services as policy_services
    from apps.policy.models import PolicyCap

    kwargs: dict[str, Any] = {"subject_type": "global"}
    if isinstance(subject, Agent):
        kwargs = {"subject_type": "agent", "agent": subject}
    elif isinstance(subject, Project):
        kwargs = {"subject_type": "project", "project": subject}
    cap = PolicyCap(metric=metric, window=window, limit=Decimal(limit), model=model, mode=mode, **kwargs)
    return policy_services.cap_save(actor=TEST_ACTOR, cap=cap)


def make_price(model="gpt-test", input_per_mtok="1", output_per_mtok="2"):
    import datetime as dt
    from decimal import Decimal

    from apps.policy import services as policy_services
    from apps.policy.models import ModelPrice

    price = ModelPrice(model=model, input_usd_per_mtok=Decimal(input_per_mtok),
                       output_usd_per_mtok=Decimal(output_per_mtok),
                       effective_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    return policy_services.model_price_save(actor=TEST_ACTOR, price=price)
