"""Changes to an agent or project that the cached principal and effective policy depend on
take effect at once: they broadcast like revocation does."""

import pytest

from apps.audit.models import AuditEvent
from apps.keys import services
from apps.policy import services as policy_services
from modeloman.invalidation import listener
from tests.factories import TEST_ACTOR, ProjectFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db
WHOAMI, ADMISSIONS = "/api/v1/whoami", "/api/v1/admissions"
BODY = {"model": "gpt-test", "estimated_input_tokens": 10, "estimated_output_tokens": 0}


def test_moving_an_agent_to_another_project_applies_the_new_projects_policy_at_once(api_client, bearer):
    assert listener.wait_until_healthy()  # caches are live, as in a server
    make_price("gpt-test")
    issued = issue_key(scopes=["tasks:write"])
    agent = issued.api_key.agent
    assert agent is not None
    old_project, new_project = agent.project, ProjectFactory.create()
    policy_services.policy_set(actor=TEST_ACTOR, subject_type="project", project=old_project, kill_switch=True,
                               reason="old project stopped")
    new_cap = make_cap(subject=new_project, metric="tokens", limit="5")
    for _ in range(2):  # principal and effective policy are now cached
        assert api_client.get(WHOAMI, **bearer(issued.token)).json()["project"] == old_project.slug
        assert api_client.post(ADMISSIONS, BODY, format="json", **bearer(issued.token)).json()["reasons"] == [
            "kill_switch"]

    agent.project = new_project
    services.agent_save(actor=TEST_ACTOR, agent=agent)

    assert api_client.get(WHOAMI, **bearer(issued.token)).json()["project"] == new_project.slug
    answer = api_client.post(ADMISSIONS, BODY, format="json", **bearer(issued.token)).json()
    assert (answer["allowed"], answer["reasons"]) == (False, [f"cap_exceeded:{new_cap.pk}"])
    moved = AuditEvent.objects.get(action="agent.update", target_id=str(agent.pk))
    assert moved.before is not None
    assert moved.after is not None
    assert (moved.before["project"], moved.after["project"]) == (old_project.pk, new_project.pk)


def test_renaming_a_project_or_agent_shows_in_whoami_at_once(api_client, bearer):
    assert listener.wait_until_healthy()
    issued = issue_key()
    agent = issued.api_key.agent
    assert agent is not None
    assert api_client.get(WHOAMI, **bearer(issued.token)).status_code == 200  # cached

    agent.name = "renamed-agent"
    services.agent_save(actor=TEST_ACTOR, agent=agent)
    project = agent.project
    project.slug = "renamed-project"
    services.project_save(actor=TEST_ACTOR, project=project)

    who = api_client.get(WHOAMI, **bearer(issued.token)).json()
    assert (who["agent"], who["project"]) == ("renamed-agent", "renamed-project")
