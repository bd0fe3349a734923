"""Model names are whole-string matches: a trailing newline (which `$` lets through) is refused
by the API, by model validation, and by the database itself."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.audit.models import AuditEvent
from apps.policy import services
from apps.policy.models import ModelPrice, Policy, PolicyCap
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap

pytestmark = pytest.mark.django_db
NEWLINE_NAME = "gpt-test\n"


def rows():
    return tuple(m.objects.count() for m in (ModelPrice, Policy, PolicyCap, AuditEvent))


@pytest.mark.parametrize(("url", "method", "body"), [
    ("/api/v1/policy", "put", {"subject": "agent", "allowed_models": [NEWLINE_NAME]}),
    ("/api/v1/policy/caps", "post", {"subject": "agent", "metric": "tokens", "window": "day", "limit": "5",
                                     "model": NEWLINE_NAME}),
    ("/api/v1/admissions", "post", {"model": NEWLINE_NAME, "estimated_input_tokens": 1,
                                    "estimated_output_tokens": 1}),
])
def test_the_api_refuses_a_model_name_with_a_trailing_newline(api_client, bearer, url, method, body):
    token = issue_key(scopes=["policy:write", "tasks:write"]).token
    before = rows()
    response = getattr(api_client, method)(url, body, format="json", **bearer(token))
    assert (response.status_code, response.json()["code"]) == (400, "validation_error")
    assert rows() == before


def test_prices_caps_and_policies_refuse_a_trailing_newline_in_validation():
    price = ModelPrice(model=NEWLINE_NAME, input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(1),
                       effective_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ValidationError):
        services.model_price_save(actor=TEST_ACTOR, price=price)
    with pytest.raises(ValidationError):
        make_cap(model=NEWLINE_NAME)
    with pytest.raises(ValidationError):
        services.policy_set(actor=TEST_ACTOR, subject_type="global", allowed_models=["ok", NEWLINE_NAME])
    assert rows() == (0, 0, 0, 0)


@pytest.mark.parametrize("write", [
    lambda: ModelPrice.objects.bulk_create([ModelPrice(model=NEWLINE_NAME, input_usd_per_mtok=1,
                                                       output_usd_per_mtok=1)]),
    lambda: PolicyCap.objects.bulk_create([PolicyCap(subject_type="global", metric="tokens", window="day",
                                                     limit=5, model=NEWLINE_NAME)]),
    lambda: Policy.objects.bulk_create([Policy(subject_type="global", allowed_models=["ok", NEWLINE_NAME])]),
    lambda: Policy.objects.bulk_create([Policy(subject_type="agent", agent=AgentFactory.create(),
                                               allowed_models=["ok", None])]),
])
def test_the_database_refuses_a_trailing_newline_even_past_the_validators(write):
    with pytest.raises(IntegrityError), transaction.atomic():
        write()


def test_the_database_still_takes_valid_names_and_empty_lists():
    ModelPrice.objects.bulk_create([ModelPrice(model="org/model-1.5:beta@2+x", input_usd_per_mtok=1,
                                               output_usd_per_mtok=1)])
    PolicyCap.objects.bulk_create([PolicyCap(subject_type="global", metric="tokens", window="day", limit=5)])
    Policy.objects.bulk_create([Policy(subject_type="global", allowed_models=[]),
                                Policy(subject_type="agent", agent=AgentFactory.create(), allowed_models=["a", "b.c"])])
    assert (ModelPrice.objects.count(), PolicyCap.objects.count(), Policy.objects.count()) == (1, 1, 2)
