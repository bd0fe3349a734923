"""latency_percentile: p50/p95 from the rollups' cumulative latency histogram."""

import pytest

from apps.telemetry.rollups import LATENCY_BOUNDS_MS, LATENCY_COLUMNS, LATENCY_OVERFLOW_COLUMN, latency_percentile


def histogram(latencies: list[int]) -> dict[str, int]:
    row = {f"lat_le_{bound}": sum(value <= bound for value in latencies) for bound in LATENCY_BOUNDS_MS}
    return {**row, LATENCY_OVERFLOW_COLUMN: sum(value > LATENCY_BOUNDS_MS[-1] for value in latencies)}


def test_columns_are_the_log_spaced_bounds():
    assert LATENCY_COLUMNS[0] == "lat_le_50" and LATENCY_COLUMNS[-1] == "lat_le_51200"
    assert all(b == 2 * a for a, b in zip(LATENCY_BOUNDS_MS, LATENCY_BOUNDS_MS[1:], strict=False))


def test_interpolates_inside_the_bucket_of_the_rank():
    row = histogram([10] * 50 + [300] * 50)  # half in (0, 50], half in (200, 400]
    assert latency_percentile(row, 0.5) == 50  # the end of the first bucket
    assert latency_percentile(row, 0.75) == pytest.approx(300)  # halfway through (200, 400]
    assert latency_percentile(row, 1.0) == 400


@pytest.mark.parametrize("latencies", [[120] * 10, list(range(1, 2000, 7)), [5, 80, 700, 9000, 40000]])
@pytest.mark.parametrize("q", [0.5, 0.95])
def test_never_off_by_more_than_the_bucket_containing_the_true_value(latencies, q):
    true = sorted(latencies)[max(0, int(q * len(latencies) + 0.999999) - 1)]
    bucket_low = max([0, *[b for b in LATENCY_BOUNDS_MS if b < true]])
    bucket_high = min(b for b in LATENCY_BOUNDS_MS if b >= true)
    estimate = latency_percentile(histogram(latencies), q)
    assert estimate is not None and bucket_low <= estimate <= bucket_high


def test_sums_of_rows_work_like_one_row_and_objects_work_like_mappings():
    a, b = histogram([30, 30, 30]), histogram([3000])
    summed = {column: a[column] + b[column] for column in a}
    assert latency_percentile(summed, 0.95) == latency_percentile(histogram([30, 30, 30, 3000]), 0.95)

    class Row:
        pass

    row = Row()
    row.__dict__.update(summed)
    assert latency_percentile(row, 0.5) == latency_percentile(summed, 0.5)


def test_the_open_bucket_reports_its_lower_bound_and_empty_rows_report_none():
    assert latency_percentile(histogram([600_000]), 0.5) == 51200
    assert latency_percentile(histogram([]), 0.5) is None
    with pytest.raises(ValueError, match="q must be in"):
        latency_percentile(histogram([1]), 0)
