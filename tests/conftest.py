import uuid

import pytest
from rest_framework.test import APIClient

from modeloman.invalidation import listener


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
