"""Small conversions between Python values and protobuf well-known types, shared by the apps' rpc.py."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(moment: dt.datetime | None) -> Timestamp | None:
    """A Timestamp, or None (the field stays unset) for a missing time."""
    if moment is None:
        return None
    value = Timestamp()
    value.FromDatetime(moment)
    return value
