"""Key verification: from the process cache vs from the database, and why not a password hasher.

    make bench            (or: .venv/bin/python bench/keys_verify.py)

Everything runs in one transaction that is rolled back, so the database is left as it was.
"""

import time

from _setup import row, summarize
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import transaction

from apps.audit.services import Actor
from apps.gateway.auth import authenticate_token
from apps.keys import services
from apps.keys.models import Agent, Project
from modeloman.invalidation import listener

ROUNDS = 20_000


def measure(fn, rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return summarize(samples)


class Rollback(Exception):
    pass


def main() -> None:
    assert listener.wait_until_healthy(), "invalidation listener did not connect"
    try:
        with transaction.atomic():
            actor = Actor.system("bench")
            project = services.project_save(actor=actor, project=Project(slug="bench-keys", name="bench"))
            agent = services.agent_save(actor=actor, agent=Agent(project=project, name="bench-agent"))
            token = services.api_key_create(actor=actor, agent=agent, scopes=["tasks:write"]).token

            authenticate_token(token)  # warm the cache and the last_used_at write
            cached = measure(lambda: authenticate_token(token), ROUNDS)

            settings.AUTH_CACHE_ENABLED = False
            from_db = measure(lambda: authenticate_token(token), ROUNDS // 10)
            settings.AUTH_CACHE_ENABLED = True

            hasher = PBKDF2PasswordHasher()
            encoded = hasher.encode("x" * 32, hasher.salt())
            pbkdf2 = measure(lambda: hasher.verify("x" * 32, encoded), 20)
            raise Rollback
    except Rollback:
        pass

    print("Key verification (authenticate_token), same run, same key")
    print(row("ours: process cache (HMAC-SHA256 check)", cached))
    print(row("baseline: database lookup every call", from_db))
    print(row("reference: Django PBKDF2 password hasher", pbkdf2))
    print(f"cache speed-up vs database: {from_db['median_us'] / cached['median_us']:.0f}x (median)")
    listener.stop()


if __name__ == "__main__":
    main()
