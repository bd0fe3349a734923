"""Agent names and per-key rates are whole-string matches: Python's `$` also matches before a final
newline, so "bot\n" would be a second agent that looks like "bot" everywhere it is shown."""

import pytest
from django.core.exceptions import ValidationError

from apps.audit.models import AuditEvent
from apps.keys import services
from apps.keys.models import RATE_VALIDATOR, Agent
from tests.factories import TEST_ACTOR, ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", ["bot\n", "bot\r\n", "\nbot", "bot ", "", "-bot", "b" * 101])
def test_an_agent_name_with_anything_around_it_is_refused_and_nothing_is_written(name):
    project = ProjectFactory.create()
    with pytest.raises(ValidationError) as refused:
        services.agent_save(actor=TEST_ACTOR, agent=Agent(project=project, name=name))
    assert "name" in refused.value.message_dict
    assert not Agent.objects.exists()
    assert not AuditEvent.objects.filter(action="agent.create").exists()


def test_a_valid_agent_name_is_kept_as_sent():
    agent = services.agent_save(actor=TEST_ACTOR, agent=Agent(project=ProjectFactory.create(), name="bot-1.a_b"))
    assert Agent.objects.get(pk=agent.pk).name == "bot-1.a_b"


@pytest.mark.parametrize("rate", ["600/m\n", "600/m ", "0/m", "600/x", "600"])
def test_a_rate_is_a_whole_string(rate):
    with pytest.raises(ValidationError):
        RATE_VALIDATOR(rate)


@pytest.mark.parametrize("rate", ["600/m", "6000/h", "100/10s", "1/d"])
def test_a_well_formed_rate_passes(rate):
    RATE_VALIDATOR(rate)
