"""The shared cache (Redis): Django's backend, with one Redis client per connection pool and a
counter that takes one round trip.

- Django's Redis cache client builds a new `redis.Redis` object for every operation (its
  `get_client`); the object holds nothing per call, so it is made once per pool and reused.
- `RedisCache.count(key, ttl)` creates a counter at 0 that expires after `ttl` seconds if it is
  absent and increments it (`SET NX EX` then `INCR`, pipelined): one round trip, where the cache API
  takes two (`add`, then `incr`). Rate limits count every call with it (apps.gateway.ratelimits).
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class _ReusingClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]  # Django 5.2's own client: not in the stubs
        client = self._clients.get(id(pool))
        if client is None:  # two threads may both build one; either is fine, and the pool is the same
            client = self._clients[id(pool)] = self._client(connection_pool=pool)  # type: ignore[attr-defined]  # as above
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _ReusingClient

    def count(self, key: str, ttl: int, *, increment: bool = True) -> int:
        """The counter at `key` after adding one (`increment`) or as it is; a new counter starts at 0
        and expires `ttl` seconds after it was created. One round trip."""
        key = self.make_and_validate_key(key)
        pipeline = self._cache.get_client(key, write=True).pipeline(transaction=False)  # type: ignore[attr-defined]  # as above
        pipeline.set(key, 0, ex=ttl, nx=True)  # the cache stores integers as plain integers, as INCR needs
        if increment:
            pipeline.incr(key)
        else:
            pipeline.get(key)
        return int(pipeline.execute()[1])


def count(cache: Any, key: str, ttl: int, *, increment: bool = True) -> int | None:
    """`RedisCache.count` on the shared cache; with another backend (a development server without
    Redis: one process's memory) the cache API's `add` and `incr`. None when the cache cannot count."""
    if isinstance(cache, RedisCache):
        return cache.count(key, ttl, increment=increment)
    cache.add(key, 0, ttl)
    return cache.incr(key) if increment else cache.get(key)
