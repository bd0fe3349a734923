"""Reading the Prometheus text format in tests: one sample's value, by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels, or 0 when it has not been recorded yet."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)
