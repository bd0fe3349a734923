"""Shared set-up for benchmarks: Django on the configured database, helpers for figures."""

import os
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modeloman.settings.local")
# Loading millions of rows takes longer than a request may (DB_STATEMENT_TIMEOUT_MS, 5 s): the
# benchmarks get an hour, as maintenance commands do (servers they start inherit it; a timeout
# never fires in a healthy run, so the figures are the same).
os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "3600000")

import django  # noqa: E402

django.setup()


@contextmanager
def throwaway_database(name: str = "modeloman_bench") -> Iterator[None]:
    """Create and migrate a scratch database for the benchmark, and drop it afterwards."""
    from django.db import connection, connections

    from modeloman.invalidation import listener

    connection.settings_dict["TEST"]["NAME"] = name
    original = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        yield
    finally:
        listener.stop()
        with connection.cursor() as cursor:  # worker threads' connections
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = %s AND pid <> pg_backend_pid()", [connection.settings_dict["NAME"]])
        connections.close_all()
        connection.creation.destroy_test_db(original, verbosity=0)


def summarize(samples_ns: list[int]) -> dict[str, float]:
    """Median and p95 in microseconds."""
    ordered = sorted(samples_ns)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {"median_us": statistics.median(ordered) / 1000, "p95_us": p95 / 1000, "n": len(ordered)}


def row(label: str, figures: dict[str, float]) -> str:
    return f"{label:<44} median {figures['median_us']:>9.1f} µs   p95 {figures['p95_us']:>9.1f} µs   (n={figures['n']})"
