"""Plain Django views of public reads (health, leaderboard pages) under the same rate limit as the
API: per client address, from the access table, through `apps.gateway.ratelimits`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from apps.gateway import ratelimits
from apps.gateway.access import OPERATIONS, AccessClass, Op
from apps.gateway.errors import DomainError
from apps.gateway.rest.problems import problem_response

View = Callable[..., HttpResponse]


def public_read(operation: Op) -> Callable[[View], View]:
    """Count each call of the view against `operation`'s limit; over it, a 429 problem. Reads fail
    open: when the cache is down the view is served anyway."""
    row = OPERATIONS[operation]
    if row.access is not AccessClass.PUBLIC_READ:
        raise ValueError(f"{operation} is not a public read")

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                ratelimits.check(row, None)
            except DomainError as error:
                return problem_response(error)
            return view(request, *args, **kwargs)

        limited.operation = operation  # type: ignore[attr-defined]  # the route test reads it
        return limited

    return decorate
