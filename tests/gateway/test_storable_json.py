"""What a stored response is written as: `storable_json(body)` is `json.dumps(sanitize(body))`,
and skips the walk only where the walk would change nothing (apps/gateway/idempotency.py)."""

import json
import math
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.gateway import idempotency
from apps.gateway.idempotency import sanitize, storable_json

TOKEN = "mmk_" + "a" * 12 + "_" + "b" * 38
# Text near every rule: secret names (with a long s and a Kelvin sign, which match only when case is
# folded), tokens and near-tokens, NUL, escapes, non-ASCII, and plain words.
PIECES = ["token", "Secret", "ſecret", "api_key", "api-Key", "apiKey", "authorization", "digest", "password",
          "x_token", "tokens", "mmk_", TOKEN, "\x00", "\\u0000", "\\", '"', "é", "\n", "ok", "id", "_", "-", " "]
text = st.lists(st.sampled_from(PIECES), max_size=4).map("".join) | st.text(max_size=8)
keys = text | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
bodies = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=20)


@settings(max_examples=1500, deadline=None)
@given(bodies)
def test_it_is_what_the_walk_writes(body):
    assert storable_json(body) == json.dumps(sanitize(body))


def test_keys_json_cannot_write_and_special_floats_are_written_as_the_walk_writes_them():
    for body in ({(1, 2): "tuple key"}, {math.inf: 1}, {"x": [math.nan, -math.inf]}):
        assert storable_json(body) == json.dumps(sanitize(body))
    assert json.loads(storable_json({(1, 2): TOKEN})) == {"(1, 2)": "[redacted]"}


def test_a_response_with_nothing_to_sanitize_is_not_walked_and_one_with_something_is():
    admission = {"allowed": True, "reasons": [], "reservation_id": "4d98166c-4b40-4d2e-be5f-ad3c9b12cbbe",
                 "caps": [{"cap_id": 1, "metric": "cost_usd", "limit": "10.000000"}]}
    with mock.patch.object(idempotency, "sanitize", wraps=sanitize) as walk:
        assert storable_json(admission) == json.dumps(admission)
        assert walk.call_count == 0
        assert json.loads(storable_json({"note": f"leaked {TOKEN}", "ſecret": "x"})) == {
            "note": "leaked [redacted]", "ſecret": "[redacted]"}
        assert walk.call_count > 0
