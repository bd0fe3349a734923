"""Transactions that survive lock conflicts.

Writers of the usage ledger lock its rows in one global order (apps.policy.services), so they
do not deadlock with each other. This is the backstop for whatever still does (a path that
locks rows of other tables in another order, a future change): PostgreSQL aborts one of the
transactions with a deadlock or serialization failure, and the whole transaction is run again
a bounded number of times. If it still fails the caller gets a 503 problem with a stable code
and a Retry-After, never a 500.

One more conflict is run again the same way: a writer that opened a cap's new window (its ledger
row's foreign key is checked at commit) while an operator deleted that cap. The run after it no
longer sees the cap — its deletion invalidated the policy cache — and admits or records without it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction

from apps.gateway.errors import Unavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})  # query_canceled (statement_timeout), lock_not_available
MAX_ATTEMPTS = 4


# A write service's own transaction, for the services agents' writes call inside an idempotent
# write's transaction (apps.gateway.idempotency). Called there, it joins that transaction without a
# savepoint: any error of the service rolls the whole write back, claim included, so a savepoint
# would be two more round trips (SAVEPOINT, RELEASE) and a subtransaction for nothing. Called
# outside a transaction, it is one, as `transaction.atomic` is. The price: a caller cannot catch a
# service's error and carry on in the same transaction (Django refuses its next query); none in the
# application does, and a test that does opens a savepoint of its own (`transaction.atomic()`).
write_transaction = transaction.atomic(savepoint=False)


class ServiceBusy(Unavailable):
    code = "database_busy"
    title = "Busy, try again"
    headers = {"Retry-After": "1"}


FOREIGN_KEY_VIOLATION = "23503"
LEDGER_TABLE = "policy_usageledger"


class DatabaseTimeout(Unavailable):
    code = "database_timeout"
    title = "The database took too long"
    headers = {"Retry-After": "1"}


def is_retryable(error: BaseException) -> bool:
    cause = error.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    # The ledger row of a cap deleted meanwhile: nothing else in a ledger write can break that key.
    table = getattr(getattr(cause, "diag", None), "table_name", None)
    return sqlstate == FOREIGN_KEY_VIOLATION and table == LEDGER_TABLE


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"
    title = "The database connection was lost"
    headers = {"Retry-After": "1"}


CONNECTION_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03")  # connection exception; shutdown, crash, starting


def database_failure(error: BaseException) -> Unavailable | None:
    """The 503 for a statement that ran past DB_STATEMENT_TIMEOUT_MS or waited past
    DB_LOCK_TIMEOUT_MS (settings, "Database timeouts"), or for a connection the server dropped
    (a restart: modeloman/db/base.py says when a request can meet one); None for any other error.
    After a timeout the transaction it ran in is rolled back and the connection stays usable; a
    lost connection is closed when the request ends and the next request opens a new one."""
    if not isinstance(error, (OperationalError, InterfaceError)):
        return None
    sqlstate = getattr(error.__cause__, "sqlstate", None) or ""
    if sqlstate in TIMEOUT_SQLSTATES:
        logger.warning("database timeout: %s", _first_line(error))
        return DatabaseTimeout("The database did not answer in time; retry shortly.")
    if sqlstate.startswith(CONNECTION_LOST_SQLSTATES) or getattr(connection.connection, "broken", False):
        logger.warning("database connection lost: %s", _first_line(error))
        return DatabaseUnavailable("The connection to the database was lost; retry shortly.")
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


def atomic_with_retry(work: Callable[[], T], *, attempts: int = MAX_ATTEMPTS) -> T:
    """Run `work` in a transaction; after a deadlock or serialization failure, run it again.

    Only an outermost transaction can be run again (inside one, the caller's earlier work is
    lost too), so inside an atomic block a conflict becomes ServiceBusy straight away.
    """
    return _with_retry(work, transaction.atomic, attempts=attempts)


def statement_with_retry(work: Callable[[], T], *, attempts: int = MAX_ATTEMPTS) -> T:
    """`atomic_with_retry` for `work` that sends ONE statement: outside an atomic block (autocommit)
    the statement is its own transaction, with no BEGIN or COMMIT round trip; inside one it runs in a
    savepoint, so that if it fails the caller's transaction is still usable."""
    return _with_retry(work, lambda: transaction.atomic() if connection.in_atomic_block else nullcontext(),
                       attempts=attempts)


def _with_retry(work: Callable[[], T], transaction_of: Callable[[], AbstractContextManager], *, attempts: int) -> T:
    if connection.in_atomic_block:
        attempts = 1
    for attempt in range(1, attempts + 1):
        try:
            with transaction_of():
                return work()
        except (OperationalError, IntegrityError) as error:
            if not is_retryable(error):
                raise
            if attempt == attempts:
                raise ServiceBusy("The database is busy with conflicting writes; retry shortly.") from error
            logger.warning("transaction conflict (%s), attempt %d of %d", getattr(error.__cause__, "sqlstate", None),
                           attempt, attempts)
            time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311  # jitter, not a secret
    raise AssertionError("unreachable")  # the loop returns or raises
