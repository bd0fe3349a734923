"""The request-signing algorithm for high-risk writes (SetPolicy, UpsertPolicyCap, DeletePolicyCap).

Pure and standard-library only, so that an agent client uses this very code (import it, or copy
this file): `sign_request(...)` returns the three headers to send. The server's check, with its
clock, nonce store and per-key secrets, is `apps.gateway.signing`.

The canonical request is six lines joined by "\\n" (no trailing newline), UTF-8 encoded:

    MM-HMAC-SHA256-v1
    <METHOD>           upper case: PUT, POST, DELETE (gRPC: POST)
    <path>             REST: the path as sent, e.g. /api/v1/policy/caps/12, plus "?<query>" when
                       the query string is not empty; gRPC: /modeloman.v1.ControlPlane/SetPolicy
    <timestamp>        Unix time in whole seconds, decimal, as sent in X-MM-Timestamp
    <nonce>            as sent in X-MM-Nonce: 16-128 of A-Z a-z 0-9 _ -, fresh for every request
    <body sha256>      lowercase hex SHA-256 of the body bytes exactly as sent (gRPC: the
                       serialized request message); an empty body hashes b""

and X-MM-Signature is the lowercase hex HMAC-SHA256 of it, keyed with the UTF-8 bytes of the
key's signing secret (the whole `mms_...` string shown with the key).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

SCHEME = "MM-HMAC-SHA256-v1"
TIMESTAMP_HEADER = "X-MM-Timestamp"
NONCE_HEADER = "X-MM-Nonce"
SIGNATURE_HEADER = "X-MM-Signature"

TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")


def canonical_request(*, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes that are signed (see the module docstring)."""
    return "\n".join(
        (SCHEME, method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest())
    ).encode("utf-8")


def signature_for(*, signing_secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The X-MM-Signature value for these request parts."""
    message = canonical_request(method=method, path=path, timestamp=timestamp, nonce=nonce, body=body)
    return hmac.new(signing_secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign_request(*, signing_secret: str, method: str, path: str, body: bytes = b"",
                 timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """The three headers (gRPC: metadata, lower-cased) that sign one request. Call it once per
    request sent, retries included: a nonce is accepted once."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(24)
    signature = signature_for(signing_secret=signing_secret, method=method, path=path, timestamp=stamp,
                              nonce=nonce, body=body)
    return {TIMESTAMP_HEADER: stamp, NONCE_HEADER: nonce, SIGNATURE_HEADER: signature}
