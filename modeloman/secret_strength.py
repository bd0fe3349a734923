"""How strong a production secret must be. Pure, so that production settings apply it at import
and a test can hold it against Django's own deploy check (security.W009)."""

from __future__ import annotations

WEAK_MARKERS = ("insecure", "change-me", "changeme", "example", "secret-key")
SECRET_KEY_MIN_LENGTH = 50  # Django's W009 warns below 50: the two checks must agree
PEPPER_MIN_LENGTH = 32
MIN_DISTINCT_CHARACTERS = 10  # W009 asks for 5


def secret_weakness(value: str, *, min_length: int) -> str | None:
    """Why `value` is not a usable secret, or None when it is."""
    if not value:
        return "missing"
    if len(value) < min_length:
        return f"shorter than {min_length} characters"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"fewer than {MIN_DISTINCT_CHARACTERS} distinct characters"
    if any(marker in value.lower() for marker in WEAK_MARKERS):
        return "a placeholder or development value"
    return None
