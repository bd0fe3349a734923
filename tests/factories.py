"""Test data. Keys are issued through the real service so digests are real."""

import factory

from apps.audit.services import Actor
from apps.keys import services
from apps.keys.models import Agent, Project

TEST_ACTOR = Actor.system("tests")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    slug = factory.Sequence(lambda n: f"project-{n}")
    name = factory.LazyAttribute(lambda p: p.slug.title())


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"agent-{n}")


def issue_key(agent=None, scopes=("tasks:write",), **kwargs) -> services.IssuedKey:
    agent = agent or AgentFactory()
    return services.api_key_create(actor=TEST_ACTOR, agent=agent, scopes=list(scopes), **kwargs)
