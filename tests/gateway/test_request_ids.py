"""An inbound request id is kept only when it is 8-64 of A-Z a-z 0-9 . _ - and nothing else: it is
logged, echoed in a header / trailing metadata and stored in audit rows."""

import re

import pytest

from apps.gateway.identity import new_request_id

MINTED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("candidate", ["req-0123456789", "a" * 8, "A.b_c-" + "9" * 58])
def test_a_well_formed_id_is_kept(candidate):
    assert new_request_id(candidate) == candidate


@pytest.mark.parametrize("candidate", [None, "", "short", "req-0123456789\n", "req-0123456789\r\n", "\nreq-0123456789",
                                       "req 0123456789", "a" * 65, "mmk_0123456789ab", "MMK_0123456789ab"])
def test_anything_else_is_replaced_by_a_minted_id(candidate):
    assert MINTED.fullmatch(new_request_id(candidate))
