"""Shared set-up for benchmarks: Django on the configured database, helpers for figures."""

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modeloman.settings.local")

import django  # noqa: E402

django.setup()


def summarize(samples_ns: list[int]) -> dict[str, float]:
    """Median and p95 in microseconds."""
    ordered = sorted(samples_ns)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {"median_us": statistics.median(ordered) / 1000, "p95_us": p95 / 1000, "n": len(ordered)}


def row(label: str, figures: dict[str, float]) -> str:
    return f"{label:<44} median {figures['median_us']:>9.1f} µs   p95 {figures['p95_us']:>9.1f} µs   (n={figures['n']})"
