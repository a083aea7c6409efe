"""Recorded ranges as Parquet datasets: what a replay needs, out of the database and back in
(docs/operations.md#recordings).

A dataset is a directory holding one Parquet file per table of ``DATASET_TABLES`` (market
data for the replay; our order acks and fills for the backtest's fidelity check) and
``manifest.json``. Each file's columns are exactly its SQL table's, by name and in order,
with the Arrow type of each column's SQL type (``ARROW_TYPES``: timestamptz →
timestamp[us, tz=UTC], double precision[] → list<double>, jsonb → string, …); the manifest
holds the format version, the range, the instruments, and per table its row count and the
migration version the database was at when it was exported.

- ``export_range`` reads the rows whose ``time`` is in ``[start, end)``, for some or all
  instruments, into a new dataset. Index prices belong to an underlying, not an instrument:
  with instruments named, those of their indexes (``BTC-PERPETUAL`` → ``BTCUSD``,
  docs/thalex-protocol.md §5.1) are exported.
- ``import_dataset`` checks the whole dataset (manifest, every file's shape and row count)
  against the target database's own tables before it writes anything, then writes every
  table in one transaction with ``INSERT … ON CONFLICT DO NOTHING`` on the tables' natural
  keys (docs/architecture.md#d8-persistence-semantics): importing twice adds nothing. The
  rows keep their recorded ``persisted_at``.

What a user can get wrong raises ``RecordingError`` with one line saying what
(``cryptics record``, app/cli.py, prints it and exits with 2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

#: The layout's version: a reader refuses a dataset of another (app/backtest/ reads the same layout).
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The tables of a dataset, in the order they are exported and imported.
DATASET_TABLES = ("tickers", "book_updates", "book_tops", "public_trades", "index_prices", "order_acks", "fills")
#: The tables of market data: a range in which none of them has a row has no data.
MARKET_DATA_TABLES = ("tickers", "book_updates", "book_tops", "public_trades", "index_prices")
#: The column naming the instrument (index_prices: the index) in each table.
INSTRUMENT_COLUMN = {name: "index_name" if name == "index_prices" else "instrument_name" for name in DATASET_TABLES}

#: The Arrow type of each SQL type the dataset tables use (information_schema.columns.data_type,
#: or the array's element type for ARRAY). Domains (positive_float8, …) count as their base type.
ARROW_TYPES: dict[str, pa.DataType] = {
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "text": pa.string(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "jsonb": pa.string(),
    "_float8": pa.list_(pa.float64()),
}
#: Rows per Parquet row group, and per batch on the way back in.
BATCH_ROWS = 50_000


class RecordingError(Exception):
    """Bad input to an export or an import: one line saying what."""


@dataclass(frozen=True)
class Column:
    name: str
    #: The SQL type as information_schema names it (``_float8`` for double precision[]).
    sql_type: str

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.sql_type]


@dataclass(frozen=True)
class TableReport:
    table: str
    rows: int


# -- the database's side -------------------------------------------------------------------


async def table_columns(conn: asyncpg.Connection, table: str) -> list[Column]:
    """The table's columns in order, with their SQL types (domains as their base type)."""
    rows = await conn.fetch(
        """SELECT c.column_name, c.data_type, c.udt_name,
                  d.data_type AS domain_type
           FROM information_schema.columns c
           LEFT JOIN information_schema.domains d
             ON d.domain_schema = c.domain_schema AND d.domain_name = c.domain_name
           WHERE c.table_schema = current_schema() AND c.table_name = $1
           ORDER BY c.ordinal_position""", table)
    if not rows:
        raise RecordingError(f"table {table} is not in the database: run `cryptics db migrate` first")
    columns = []
    for r in rows:
        sql_type = r["domain_type"] or r["data_type"]
        if sql_type == "ARRAY":
            sql_type = r["udt_name"]
        if sql_type not in ARROW_TYPES:
            raise RecordingError(f"{table}.{r['column_name']}: SQL type {sql_type} has no Parquet mapping")
        columns.append(Column(r["column_name"], sql_type))
    return columns


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type) for c in columns])


async def migration_version(conn: asyncpg.Connection) -> int:
    version = await conn.fetchval("SELECT max(version) FROM cryptics_migrations") \
        if await conn.fetchval("SELECT to_regclass('cryptics_migrations') IS NOT NULL") else None
    if version is None:
        raise RecordingError("the database is not migrated: run `cryptics db migrate` first")
    return version


async def primary_key(conn: asyncpg.Connection, table: str) -> list[str]:
    return [r["attname"] for r in await conn.fetch(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
           WHERE i.indrelid = $1::regclass AND i.indisprimary
           ORDER BY array_position(i.indkey, a.attnum)""", table)]


def index_of(instrument: str) -> str:
    """The index an instrument is marked against (``BTC-PERPETUAL`` → ``BTCUSD``, docs/thalex-protocol.md §5.1)."""
    return instrument.split("-", 1)[0] + "USD"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- export --------------------------------------------------------------------------------


async def export_range(dsn: str, start: datetime, end: datetime, instruments: Sequence[str],
                       out: Path) -> dict[str, Any]:
    """Write the rows of ``[start, end)`` (of ``instruments``, or all when empty) to the new
    dataset ``out``; returns its manifest."""
    if start.tzinfo is None or end.tzinfo is None:
        raise RecordingError("--from and --to need a time zone (e.g. 2025-01-01T00:00:00Z)")
    if start >= end:
        raise RecordingError(f"empty range: --from {start.isoformat()} is not before --to {end.isoformat()}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RecordingError(f"{out} exists and is not an empty directory: export into a new one")
    instruments = list(dict.fromkeys(instruments))
    conn = await asyncpg.connect(dsn)
    try:
        version = await migration_version(conn)
        unknown = [name for name in instruments if not await _known_instrument(conn, name)]
        if unknown:
            raise RecordingError(f"unknown instrument{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                                 "(nothing recorded for it in any table)")
        tables = {}
        for table in DATASET_TABLES:
            columns = await table_columns(conn, table)
            query, args = _range_query(table, columns, await primary_key(conn, table), start, end, instruments)
            tables[table] = (columns, await conn.fetch(query, *args))
    finally:
        await conn.close()

    if not any(tables[t][1] for t in MARKET_DATA_TABLES):
        which = f" for {', '.join(instruments)}" if instruments else ""
        raise RecordingError(f"no recorded market data between {start.isoformat()} and {end.isoformat()}{which}")
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "from": start.isoformat(), "to": end.isoformat(),
        "instruments": instruments or sorted({r["instrument_name"] for t in MARKET_DATA_TABLES if t != "index_prices"
                                              for r in tables[t][1]}),
        "tables": {},
    }
    for table, (columns, rows) in tables.items():
        data = pa.Table.from_pydict({c.name: [r[c.name] for r in rows] for c in columns}, schema=arrow_schema(columns))
        pq.write_table(data, out / f"{table}.parquet", row_group_size=BATCH_ROWS)
        manifest["tables"][table] = {"rows": len(rows), "migration": version}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


async def _known_instrument(conn: asyncpg.Connection, name: str) -> bool:
    """Listed in instruments, or recorded in a market-data table (their keys start with it)."""
    for table in ("instruments", "tickers", "book_updates", "book_tops", "public_trades"):
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE instrument_name = $1)", name):
            return True
    return False


def _range_query(table: str, columns: Sequence[Column], key: Sequence[str], start: datetime, end: datetime,
                 instruments: Sequence[str]) -> tuple[str, tuple]:
    where, args = "time >= $1 AND time < $2", [start, end]
    if instruments:
        names = [index_of(n) for n in instruments] if table == "index_prices" else list(instruments)
        where += f" AND {INSTRUMENT_COLUMN[table]} = ANY ($3::text[])"
        args.append(sorted(set(names)))
    order = ", ".join(_quote(c) for c in ["time", *[k for k in key if k != "time"]])
    return (f"SELECT {', '.join(_quote(c.name) for c in columns)} FROM {table} WHERE {where} ORDER BY {order}",
            tuple(args))


# -- import --------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any]:
    """The dataset's manifest, checked for its fields; RecordingError if ``folder`` is no dataset."""
    if not folder.is_dir():
        raise RecordingError(f"{folder} is not a dataset: not a directory")
    path = folder / MANIFEST
    if not path.is_file():
        raise RecordingError(f"{folder} is not a dataset: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: not a readable JSON manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tables"), dict):
        raise RecordingError(f"{path}: not a dataset manifest (no \"tables\")")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RecordingError(f"{path}: format version {manifest.get('format_version')!r}, this version reads "
                             f"{FORMAT_VERSION}")
    unknown = sorted(set(manifest["tables"]) - set(DATASET_TABLES))
    if unknown:
        raise RecordingError(f"{path}: tables that are no dataset table: {', '.join(unknown)}")
    for table, entry in manifest["tables"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("rows"), int):
            raise RecordingError(f"{path}: tables.{table} has no row count")
    return manifest


def check_shape(path: Path, table: str, schema: pa.Schema, columns: Sequence[Column]) -> None:
    """A Parquet file's columns must be its table's: the same names, in order, of the same types."""
    expected = {c.name: c.arrow_type for c in columns}
    got = {f.name: f.type for f in schema}
    missing = [name for name in expected if name not in got]
    extra = [name for name in got if name not in expected]
    if missing:
        raise RecordingError(f"{path.name}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                             f"of table {table}")
    if extra:
        raise RecordingError(f"{path.name}: column{'s' if len(extra) > 1 else ''} {', '.join(extra)} "
                             f"not in table {table}")
    for name, kind in expected.items():
        if not got[name].equals(kind):
            raise RecordingError(f"{path.name}: column {name} is {got[name]}, table {table} needs {kind}")
    if list(got) != list(expected):
        raise RecordingError(f"{path.name}: columns in another order than table {table}'s: {', '.join(expected)}")


async def import_dataset(dsn: str, folder: Path) -> list[TableReport]:
    """Write the dataset ``folder`` into the migrated database at ``dsn``; the rows each table gained."""
    manifest = read_manifest(folder)
    conn = await asyncpg.connect(dsn)
    try:
        await migration_version(conn)
        files = {}
        for table, entry in manifest["tables"].items():
            path = folder / f"{table}.parquet"
            if not path.is_file():
                raise RecordingError(f"{folder}: the manifest lists {table}, but {path.name} is missing")
            try:
                parquet = pq.ParquetFile(path)
            except (OSError, pa.ArrowException) as exc:
                raise RecordingError(f"{path.name}: not a readable Parquet file ({exc})") from None
            columns = await table_columns(conn, table)
            check_shape(path, table, parquet.schema_arrow, columns)
            rows = parquet.metadata.num_rows
            if rows != entry["rows"]:
                raise RecordingError(f"{path.name}: {rows} rows, the manifest says {entry['rows']}")
            files[table] = (parquet, columns)
        reports = []
        async with conn.transaction():
            for table in DATASET_TABLES:
                if table in files:
                    reports.append(TableReport(table, await _import_table(conn, table, *files[table])))
        return reports
    finally:
        await conn.close()


async def _import_table(conn: asyncpg.Connection, table: str, parquet: pq.ParquetFile,
                        columns: Sequence[Column]) -> int:
    """COPY the file into a staging table, then insert what the natural key does not hold yet."""
    stage = f"record_import_{table}"
    names = ", ".join(_quote(c.name) for c in columns)
    await conn.execute(f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {names} FROM {table} WITH NO DATA")
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
        await conn.copy_records_to_table(stage, records=_records(batch, columns), columns=[c.name for c in columns])
    status = await conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} ON CONFLICT DO NOTHING")
    return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <n>"


def _records(batch: pa.RecordBatch, columns: Sequence[Column]) -> Iterable[tuple]:
    values = [batch.column(c.name).to_pylist() for c in columns]
    return zip(*values)


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time with its zone (``Z`` or an offset); RecordingError otherwise."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise RecordingError(f"{option} {text!r}: not an ISO 8601 time (e.g. 2025-01-01T00:00:00Z)") from None
    if value.tzinfo is None:
        raise RecordingError(f"{option} {text!r}: give a time zone (e.g. 2025-01-01T00:00:00Z)")
    return value


def describe(reports: Optional[Sequence[TableReport]]) -> str:
    return ", ".join(f"{r.table} +{r.rows}" for r in reports or ())
