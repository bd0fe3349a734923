"""Short shared caching for public leaderboard responses, with ETag / 304.

A rendered response is kept in the shared cache for LEADERBOARD_CACHE_SECONDS under a key
made of what selects it (page, window, name) — not the raw query string, so made-up
parameters cannot multiply the cache. Browsers and proxies may keep it as long
(`Cache-Control: public, max-age`), so an operator's change shows within two such periods
(a minute at the default 30 s). When the cache is unreachable the page is rendered anyway:
public reads stay up.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified

logger = logging.getLogger(__name__)

Built = tuple[int, bytes, str]  # status, body, content type


def _cache_get(key: str) -> Built | None:
    try:
        return cache.get(key)
    except Exception:  # noqa: BLE001  # any cache failure: render without it
        logger.warning("leaderboard cache unavailable (get)", exc_info=True)
        return None


def _cache_set(key: str, value: Built) -> None:
    try:
        cache.set(key, value, settings.LEADERBOARD_CACHE_SECONDS)
    except Exception:  # noqa: BLE001  # any cache failure: the response is still served
        logger.warning("leaderboard cache unavailable (set)", exc_info=True)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(request: HttpRequest, etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in candidates or "*" in candidates


def cached_response(request: HttpRequest, *, key: tuple[str, ...], build: Callable[[], Built]) -> HttpResponse:
    """The response for `key`, from the cache or `build()`; 304 without a body when the
    client's If-None-Match already names it."""
    cache_key = "leaderboard:" + hashlib.sha256("\x1f".join(key).encode()).hexdigest()
    built = _cache_get(cache_key)
    if built is None:
        built = build()
        _cache_set(cache_key, built)
    status, body, content_type = built
    etag = _etag(body)
    if status == 200 and _matches(request, etag):
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = HttpResponse(body, status=status, content_type=content_type)
    response["ETag"] = etag
    response["Cache-Control"] = f"public, max-age={settings.LEADERBOARD_CACHE_SECONDS}"
    response["Vary"] = "Accept-Encoding"
    return response
