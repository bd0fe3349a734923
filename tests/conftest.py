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
    def _headers(token: str) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    return _headers
