"""The admission's answer is written out by hand (`admission_document`, the hot path) and described
by `AdmissionsApi.OutputSerializer` (the OpenAPI schema): both must give the same document."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from apps.gateway.rest.serializers import rendered
from apps.policy.apis import AdmissionsApi, admission_document
from apps.policy.ledger import Admission, CapStatus, Reason

MIDNIGHT = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
ODD_MOMENT = dt.datetime(2026, 11, 1, 5, 30, 0, 123456, tzinfo=dt.UTC)
ONE_AM_IN_PARIS = dt.datetime(2026, 11, 30, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))  # midnight UTC


def cap(cap_id: int, limit: str, used: str, reserved: str, *, start: dt.datetime = MIDNIGHT, mode: str = "enforce",
        metric: str = "cost_usd") -> CapStatus:
    return CapStatus(cap_id=cap_id, metric=metric, window="day", window_start=start, mode=mode,
                     limit=Decimal(limit), used=Decimal(used), reserved=Decimal(reserved))


ADMISSIONS = [
    Admission(allowed=True, reservation_id=uuid.uuid4(), estimated_cost_usd=Decimal("0.0002"),
              caps=[cap(1, "1000000000", "0", "0.0002"), cap(7, "5", "1", "4", metric="requests")]),
    Admission(allowed=False, reasons=[Reason.CAP_EXCEEDED.of(3)], estimated_cost_usd=Decimal("12.3456789"),
              caps=[cap(3, "10", "9.999999", "0.000001")]),  # remaining 0; a cost rounded to six places
    Admission(allowed=False, reasons=[Reason.KILL_SWITCH, Reason.UNPRICED_MODEL], estimated_cost_usd=None),
    Admission(allowed=True, dry_run_would_deny=[Reason.CAP_EXCEEDED.of(9)], reservation_id=None,
              estimated_cost_usd=Decimal(0),
              caps=[cap(9, "1", "2", "0", mode="dry_run", start=ODD_MOMENT)]),  # used over its limit
    Admission(allowed=True, estimated_cost_usd=Decimal("999999999999.999999"),
              caps=[cap(2, "1E+3", "0E-6", "0", start=ONE_AM_IN_PARIS)]),
]


@pytest.mark.parametrize("admission", ADMISSIONS)
def test_the_written_out_document_is_the_serializers(admission):
    assert admission_document(admission) == rendered(AdmissionsApi.OutputSerializer, admission)
