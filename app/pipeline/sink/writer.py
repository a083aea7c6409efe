"""Writing a batch of rows into one table: idempotent, one transaction per flush (docs/architecture.md#d8-persistence-semantics).

The ``copy`` path (the default):

    BEGIN;
    COPY sink_stage_<table> (cols) FROM STDIN (FORMAT binary);       -- asyncpg copy_records_to_table
    INSERT INTO <table> (cols, persisted_at)
        SELECT cols, $1 FROM sink_stage_<table> ON CONFLICT DO NOTHING;
    COMMIT;                                                          -- the staging table empties itself

The staging table is a session-local temporary table with the target's column types and
no constraints (``CREATE TEMP TABLE … ON COMMIT DELETE ROWS AS SELECT cols FROM <table>
WITH NO DATA``), so COPY never fails on a constraint: the INSERT does, where the error
can be attributed to rows. ``ON CONFLICT DO NOTHING`` skips rows whose natural key is
already there, which makes a redelivered batch harmless.

A spec with ``returning`` columns (the acks') gets ``RETURNING <those columns>`` on its
INSERT: PostgreSQL returns exactly the rows it inserted, not those ON CONFLICT skipped, so
``WriteResult.returned`` holds one entry per newly inserted row, redeliveries excluded,
and only from transactions that committed. Without ``returning`` the INSERT returns
nothing and the count comes from its command tag, as before.

The ``unnest`` path sends the same rows as one array per column,
``INSERT … SELECT … FROM unnest($1::timestamptz[], $2::text[], …)``: for servers that
do not take COPY over the wire (PGlite, docs/architecture.md#d7-database). It is slower.

Errors, sorted into two kinds:
- data errors (SQLSTATE classes 22 and 23: a value out of range, a CHECK or NOT NULL
  violated; or a value the client cannot encode): the batch is split in halves, each
  written in its own transaction, recursively, until the rows that fail alone are known.
  ``write`` returns those with their error; every other row is written.
- everything else (the connection, the server going away, a missing table): raised to
  the caller, which retries the whole batch later. Rows of halves that committed before
  the error are skipped by ON CONFLICT when the batch comes again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence

import asyncpg

from app.pipeline.sink.tables import Row, TableSpec

#: Errors that belong to the rows, not to the connection or the server: split the batch.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,                          # SQLSTATE 22: data exception
    asyncpg.IntegrityConstraintViolationError,  # SQLSTATE 23: check, not null, …
    TypeError, ValueError, OverflowError,       # the client could not encode a value (asyncpg raises these)
)


def is_data_error(exc: BaseException) -> bool:
    return isinstance(exc, DATA_ERRORS)


def describe(exc: BaseException) -> str:
    """A one-line error text for logs and dead letters: type, message, and the server's detail."""
    text = f"{type(exc).__name__}: {exc}"
    detail = getattr(exc, "detail", None)
    if detail:
        text += f" ({detail})"
    return text


@dataclass
class WriteResult:
    #: Rows newly inserted (committed).
    inserted: int = 0
    #: Rows skipped because their natural key was already there (redeliveries).
    duplicates: int = 0
    #: Transactions committed.
    transactions: int = 0
    #: (index in the batch, error text) of each row that failed alone.
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: The spec's ``returning`` columns of each row newly inserted, in committed
    #: transactions (asyncpg records: read by column name). Empty without ``returning``.
    returned: list[Mapping[str, Any]] = field(default_factory=list)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _array_literal(values: Optional[Sequence[float]]) -> Optional[str]:
    """A float8[] as PostgreSQL's text form (the unnest path sends arrays of arrays as text)."""
    if values is None:
        return None
    return "{" + ",".join(repr(float(v)) for v in values) + "}"


class TableWriter:
    """Writes batches of one table's rows over a connection the caller owns."""

    def __init__(self, spec: TableSpec, mode: str = "copy") -> None:
        if mode not in ("copy", "unnest"):
            raise ValueError(f"unknown write mode {mode!r}")
        self.spec = spec
        self.mode = mode
        table = _quote(spec.table)
        columns = ", ".join(_quote(c) for c in spec.columns)
        self.stage = f"sink_stage_{spec.table}"
        n = len(spec.columns)
        self._create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {_quote(self.stage)} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM {table} WITH NO DATA"
        )
        returning = f" RETURNING {', '.join(_quote(c) for c in spec.returning)}" if spec.returning else ""
        self._insert_from_stage = (
            f"INSERT INTO {table} ({columns}, persisted_at) "
            f"SELECT {columns}, $1::timestamptz FROM {_quote(self.stage)} ON CONFLICT DO NOTHING{returning}"
        )
        # unnest: jsonb and float8[] columns travel as text and are cast here.
        params, selected = [], []
        for i, (column, kind) in enumerate(zip(spec.columns, spec.types), start=1):
            sent = "text" if kind in ("jsonb", "float8[]") else kind
            params.append(f"${i}::{sent}[]")
            selected.append(f"u.{_quote(column)}::{kind}" if sent != kind else f"u.{_quote(column)}")
        self._insert_unnest = (
            f"INSERT INTO {table} ({columns}, persisted_at) "
            f"SELECT {', '.join(selected)}, ${n + 1}::timestamptz "
            f"FROM unnest({', '.join(params)}) AS u({columns}) ON CONFLICT DO NOTHING{returning}"
        )
        self._array_columns = [i for i, kind in enumerate(spec.types) if kind == "float8[]"]
        #: The connection the staging table was created on (temporary tables are per session).
        self._prepared_on: Optional[asyncpg.Connection] = None

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        """Create the staging table once per connection (it lives as long as the session)."""
        if self.mode == "copy" and self._prepared_on is not conn:
            await conn.execute(self._create_stage)
            self._prepared_on = conn

    async def _insert(self, conn: asyncpg.Connection, rows: Sequence[Row],
                      persisted_at: datetime) -> tuple[int, list[asyncpg.Record]]:
        """One transaction: the rows in, or nothing. Returns the number of rows inserted and,
        with ``returning``, their returned columns (read once the transaction committed)."""
        async with conn.transaction():
            if self.mode == "copy":
                await conn.copy_records_to_table(self.stage, records=rows, columns=self.spec.columns)
                query, args = self._insert_from_stage, (persisted_at,)
            else:
                columns = [list(c) for c in zip(*rows)]
                for i in self._array_columns:
                    columns[i] = [_array_literal(v) for v in columns[i]]
                query, args = self._insert_unnest, (*columns, persisted_at)
            if self.spec.returning:
                returned = await conn.fetch(query, *args)
            else:
                status = await conn.execute(query, *args)
        if self.spec.returning:
            return len(returned), returned
        return int(status.rsplit(" ", 1)[1]), []  # "INSERT 0 <n>"

    async def write(self, conn: asyncpg.Connection, rows: Sequence[Row], persisted_at: datetime) -> WriteResult:
        """Write ``rows``; return what was inserted and which rows failed alone (data errors).

        Raises anything that is not a data error; the caller retries the whole batch.
        """
        result = WriteResult()
        if rows:
            await self._prepare(conn)
            await self._write_range(conn, rows, 0, len(rows), persisted_at, result)
        return result

    async def _write_range(self, conn: asyncpg.Connection, rows: Sequence[Row], start: int, stop: int,
                           persisted_at: datetime, result: WriteResult) -> None:
        try:
            inserted, returned = await self._insert(conn, rows[start:stop], persisted_at)
        except DATA_ERRORS as exc:
            if stop - start == 1:
                result.rejected.append((start, describe(exc)))
                return
            # Bisect: each half in its own transaction, so the good rows get in and the
            # bad ones are isolated in about 2·log2(n) transactions per bad row.
            middle = (start + stop) // 2
            await self._write_range(conn, rows, start, middle, persisted_at, result)
            await self._write_range(conn, rows, middle, stop, persisted_at, result)
            return
        result.inserted += inserted
        result.duplicates += (stop - start) - inserted
        result.transactions += 1
        result.returned.extend(returned)
