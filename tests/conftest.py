import uuid

import pytest
from rest_framework.test import APIClient

from modeloman.invalidation import listener
from tests import timescale_engine

# Timescale-marked tests run only against the Timescale test engine (tests/timescale_engine.py),
# which is migrated in place rather than copied into a test database.
pytest_collection_modifyitems = timescale_engine.pytest_collection_modifyitems
if timescale_engine.ENABLED:
    django_db_setup = timescale_engine.migrate_in_place


@pytest.fixture(scope="session", autouse=True)
def _invalidation_listener(django_db_setup, django_db_blocker):
    """The listener holds a connection to the test database; close it before teardown."""
    yield
    listener.stop()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def bearer():
    """Headers for an agent call: the key, and a fresh Idempotency-Key unless one is given."""

    def _headers(token: str, idempotency_key: str | None = None) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_IDEMPOTENCY_KEY": idempotency_key or uuid.uuid4().hex}

    return _headers

