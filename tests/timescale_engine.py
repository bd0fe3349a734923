"""The Timescale test run: `TIMESCALE_TESTS=1 pytest -m timescale` against tools/timescale.

That engine has one database and serves one connection at a time, so:
- tests marked `timescale` run only when TIMESCALE_TESTS=1, and then nothing else runs;
- the database is migrated in place instead of creating a test database (`django_db_setup`);
- the invalidation listener (a second connection) must stay off: AUTH_CACHE_ENABLED=false.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from pytest_django import DjangoDbBlocker

ENABLED = os.environ.get("TIMESCALE_TESTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marked = item.get_closest_marker("timescale") is not None
        if ENABLED and not marked:
            item.add_marker(pytest.mark.skip(reason="TIMESCALE_TESTS=1: only timescale-marked tests run"))
        elif not ENABLED and marked:
            item.add_marker(pytest.mark.skip(reason="needs the Timescale test engine: TIMESCALE_TESTS=1 "
                                                    "and DATABASE_URL pointing at tools/timescale"))


@pytest.fixture(scope="session", name="django_db_setup")
def migrate_in_place(django_db_blocker: DjangoDbBlocker) -> None:
    """Replaces pytest-django's: migrate the (only) database instead of creating test_<name>."""
    from django.core.management import call_command

    database = settings.DATABASES["default"]
    if database["HOST"] not in ("127.0.0.1", "localhost", "::1") or settings.AUTH_CACHE_ENABLED:
        raise pytest.UsageError("TIMESCALE_TESTS=1 migrates DATABASE_URL in place and flushes it between tests: "
                                "point it at the loopback test engine (tools/timescale) and set "
                                "AUTH_CACHE_ENABLED=false.")
    with django_db_blocker.unblock():
        call_command("migrate", interactive=False, verbosity=0)
