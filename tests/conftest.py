import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from rest_framework.test import APIClient

from modeloman.invalidation import listener
from tests import timescale_engine
from tests.processes import grpcserve

# Timescale-marked tests run only against the Timescale test engine (tests/timescale_engine.py),
# which is migrated in place rather than copied into a test database.
pytest_collection_modifyitems = timescale_engine.pytest_collection_modifyitems
if timescale_engine.ENABLED:
    django_db_setup = timescale_engine.migrate_in_place


@receiver(connection_created)
def _allow_audit_truncate(sender, connection, **kwargs):
    """Transactional tests reset the database by truncating every table; the audit table refuses
    TRUNCATE unless the session says so (migration audit 0002 explains why that is safe). A SET
    rather than a startup option: the TimescaleDB test engine ignores startup options."""
    with connection.cursor() as cursor:
        cursor.execute("SET modeloman.allow_audit_truncate = on")


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


@pytest.fixture(scope="module")
def server(django_db_setup):
    """A real `manage.py grpcserve` on a free loopback port, one per test module: its address. A
    module that needs other settings defines its own (tests/gateway/test_grpc_signing.py)."""
    with grpcserve() as (_, address):
        yield address


@pytest.fixture(scope="session", autouse=True)
def _metrics_directory():
    """The test run's own metrics files (modeloman/settings/test.py) go when the run ends."""
    yield
    directory = Path(settings.METRICS_DIR)
    if directory.name.startswith("modeloman-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)
