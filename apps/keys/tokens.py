"""Token format: `mmk_<key_id:12 base62>_<secret:32 base62><checksum:6 base62 CRC32>`.

The checksum lets us reject typos and forgeries-by-mutation without touching the database;
the secret is only ever stored as an HMAC-SHA256 digest under a server-side pepper.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
PREFIX = "mmk_"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH
_TOKEN_RE = re.compile(r"mmk_([0-9A-Za-z]{12})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    key_id: str
    secret: str


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def token_for(key_id: str, secret: str) -> str:
    body = f"{PREFIX}{key_id}_{secret}"
    return body + checksum(body)


def generate() -> tuple[str, str, str]:
    """A fresh (key_id, secret, token)."""
    key_id, secret = _random_base62(KEY_ID_LENGTH), _random_base62(SECRET_LENGTH)
    return key_id, secret, token_for(key_id, secret)


def parse(token: str) -> ParsedToken | None:
    """The token's parts, or None if its shape or checksum is wrong. Pure; no I/O."""
    if len(token) != TOKEN_LENGTH:
        return None
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    key_id, secret, check = match.groups()
    if not hmac.compare_digest(check, checksum(token[: -CHECKSUM_LENGTH])):
        return None
    return ParsedToken(key_id=key_id, secret=secret)


def digest(key_id: str, secret: str, pepper: str) -> str:
    """HMAC-SHA256 of the key id and secret under the pepper, as 64 hex characters."""
    message = f"{key_id}.{secret}".encode("ascii")
    return hmac.new(pepper.encode("utf-8"), message, hashlib.sha256).hexdigest()
