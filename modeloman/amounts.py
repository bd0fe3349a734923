"""Amounts on the wire (USD, tokens, requests): decimal strings such as "12.50".

JSON numbers are binary floats: 0.1 arrives as 0.1000000000000000055..., and a client cannot
tell which digits the server kept. So amounts travel as strings, and one regular expression is
the whole rule for a string (digits, places, no sign, no exponent, no leading zeros, no
surrounding space): the server matches it, and the OpenAPI document publishes the same pattern,
so a client, a fuzzer and the server agree on every string.
"""

from __future__ import annotations


def decimal_pattern(*, whole_digits: int, places: int, positive: bool = False, include_power: bool = False) -> str:
    """A fully anchored pattern (`^...\\Z`; JSON Schema spells the end `$`) of non-negative
    decimals with at most `whole_digits` digits before the point and `places` after it.
    `positive` leaves out every spelling of zero. `include_power` also admits exactly
    10**whole_digits (a limit that is inclusive, such as 1000000)."""
    fraction = rf"(?:\.[0-9]{{1,{places}}})?"
    nonzero_whole = rf"[1-9][0-9]{{0,{whole_digits - 1}}}{fraction}"
    if positive:
        # 0.000001 ... 0.999999: some digit after the point is not zero.
        tails = ["0" * zeros + "[1-9]" + (f"[0-9]{{0,{places - zeros - 1}}}" if zeros < places - 1 else "")
                 for zeros in range(places)]
        small = rf"0\.(?:{'|'.join(tails)})"
        alternatives = [nonzero_whole, small]
    else:
        alternatives = [rf"0{fraction}", nonzero_whole]
    if include_power:
        alternatives.append(rf"1{'0' * whole_digits}(?:\.0{{1,{places}}})?")
    return "^(?:" + "|".join(alternatives) + r")\Z"
