"""Calls released together from several threads, each thread with its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connections

T = TypeVar("T")


def at_once(count: int, call: Callable[[], T]) -> list[T]:
    """`call()` from `count` threads released together; the results, in the order the calls
    finished. An exception in any thread is raised here once every thread has finished."""
    barrier = threading.Barrier(count)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(call())
        except Exception as error:  # noqa: BLE001  # raised in the test's thread below
            errors.append(error)
        finally:
            connections.close_all()  # this thread's own connection

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
