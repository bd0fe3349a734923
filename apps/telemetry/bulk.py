"""Bulk row writing for the telemetry tables, and time-ordered ids.

`bulk_writer` streams rows into a binary COPY where the connection supports it and falls back to
multi-row INSERTs where it does not (the TimescaleDB test engine); `uuid7_batch` mints the ids.
No rules about telemetry here: apps.telemetry.services decides what is written.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection, transaction
from psycopg.types.json import set_json_dumps

logger = logging.getLogger(__name__)


def uuid7_batch(count: int) -> list[uuid.UUID]:
    """`count` UUIDv7 ids (RFC 9562): this millisecond, a 12-bit sequence number (so a batch
    sorts in item order: §6.2, method 1) and 62 random bits. Time-ordered ids keep the primary
    key index append-only instead of touching a random page per row."""
    if count > 4096:
        raise ValueError("the 12-bit sequence number allows at most 4096 ids per call")
    prefix = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | 0b10 << 62  # timestamp, version, variant
    random_bits = os.urandom(8 * count)
    low62 = (1 << 62) - 1
    return [uuid.UUID(int=prefix | sequence << 64 | int.from_bytes(random_bits[8 * sequence:8 * sequence + 8]) & low62)
            for sequence in range(count)]


def _already_encoded(data: bytes) -> bytes:
    return data  # attributes are encoded (and size-checked) once, in validation


_copy_supported: bool | None = None  # learnt per process: the Timescale test engine has no COPY FROM STDIN


@contextmanager
def bulk_writer(table: str, columns: Sequence[tuple[str, str]]) -> Iterator[Callable[[Sequence[Any]], None]]:
    """Yield a function that writes one row (values in `columns` order; jsonb as encoded bytes).

    Rows stream into a binary COPY as they are written; where the server refuses COPY they are
    buffered and inserted with multi-row INSERTs when the block ends. An exception inside the
    block aborts the COPY; the caller's transaction then rolls back whatever was written.
    """
    global _copy_supported
    if _copy_supported is not False:
        names = ", ".join(name for name, _ in columns)
        copying = False
        try:
            # A savepoint only while we do not know whether the server takes COPY (a refusal must not
            # spoil the caller's transaction); after that an error rolls back the caller's transaction.
            with transaction.atomic(savepoint=_copy_supported is None), connection.cursor() as cursor:
                set_json_dumps(_already_encoded, cursor.cursor)
                with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                    copying = _copy_supported = True
                    copy.set_types([pg_type for _, pg_type in columns])
                    yield copy.write_row
            return
        except psycopg.NotSupportedError:
            if copying:
                raise
            # Only a server that refuses COPY (the Timescale test engine) switches us to INSERT;
            # any other error is a real one and propagates.
            logger.info("COPY FROM STDIN unavailable on this connection; using multi-row INSERT")
            _copy_supported = False
    rows: list[Sequence[Any]] = []
    yield rows.append
    _insert_rows(table, columns, rows)


def _insert_rows(table: str, columns: Sequence[tuple[str, str]], rows: list[Sequence[Any]]) -> None:
    names = ", ".join(name for name, _ in columns)
    placeholders = "(" + ", ".join(f"%s::{pg_type}" for _, pg_type in columns) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            sql = f"INSERT INTO {table} ({names}) VALUES " + ", ".join([placeholders] * len(chunk))  # noqa: S608  # fixed identifiers
            cursor.execute(sql, [value.decode() if isinstance(value, bytes) else value
                                 for row in chunk for value in row])
