"""A recorded range as one time-ordered list of market events, from PostgreSQL or a Parquet dataset.

Contract
- in: an instrument and a ``[start, end)`` range, read from the database's market-data
  tables (``tickers``, ``public_trades``, ``index_prices`` and ``book_updates``; where the
  range has no ``book_updates``, ``book_tops``: top of book only, said in
  ``MarketData.book_depth``), or from a Parquet dataset directory as
  app/pipeline/recording.py writes it: one ``<table>.parquet`` per table, columns named as
  the SQL columns, and a ``manifest.json`` naming the instruments.
- out: ``MarketData``: the events sorted by exchange time (ties keep the order tickers,
  index, trades, book of one instant: a book notification carries the trades that led to its
  level changes, docs/thalex-protocol.md §3.3, so they are replayed before them; book rows of
  one instant in ``received_at`` order), the instrument's tick and size step, and the gaps
  (no market data for longer than ``gap_threshold_s``): reported, never filled.
- errors: ``DataError`` with one line for people (the command line exits 2): a range with no
  data, an unknown instrument, a Parquet file of the wrong shape.

Events are plain tuples, the first two fields always the exchange time (unix seconds) and
the kind (replay speed: a tuple is built and read several times faster than an object):

- ``(time, TICKER, instrument, mark, index, funding_rate, funding_mark, best_bid, best_ask)``
- ``(time, INDEX, index_name, price)``
- ``(time, BOOK, instrument, snapshot, bids, asks)``, ``bids``/``asks`` lists of
  ``(price, amount)``; amount 0 removes a level, a snapshot lists the whole book
- ``(time, TRADE, instrument, price, amount, direction)``, direction the taker's side
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

TICKER, INDEX, BOOK, TRADE = 0, 1, 2, 3
KIND_NAMES = {TICKER: "ticker", INDEX: "index", BOOK: "book", TRADE: "trade"}
#: The order of events of one instant: a notification's trades come before its level changes
#: (else the queue models would read the traded amount as cancelled, then see it trade too).
_TIE_ORDER = {TICKER: 0, INDEX: 1, TRADE: 2, BOOK: 3}

#: The columns each source table must have (a Parquet file may carry more: the SQL table's others).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "tickers": ("time", "instrument_name", "mark_price", "index_price", "best_bid_price", "best_ask_price",
                "funding_rate", "funding_mark"),
    "index_prices": ("time", "index_name", "price"),
    "public_trades": ("time", "instrument_name", "price", "amount", "direction"),
    "book_updates": ("time", "instrument_name", "received_at", "snapshot", "bid_prices", "bid_amounts",
                     "ask_prices", "ask_amounts"),
    "book_tops": ("time", "instrument_name", "snapshot", "best_bid_price", "best_bid_amount",
                  "best_ask_price", "best_ask_amount"),
    "instruments": ("instrument_name", "underlying", "tick_size", "volume_tick_size"),
}

#: The dataset layout read here (app/pipeline/recording.py ``FORMAT_VERSION`` writes it).
DATASET_FORMAT_VERSION = 1

#: No market data for longer than this is a gap in the recording (seconds).
DEFAULT_GAP_THRESHOLD_S = 5.0


class DataError(Exception):
    """Bad input for a backtest; ``str()`` is one line for the person who asked."""


@dataclass(frozen=True)
class InstrumentInfo:
    name: str
    underlying: str
    tick_size: float
    size_step: float


@dataclass
class MarketData:
    """One instrument's recorded market events, in exchange-time order."""

    instrument: InstrumentInfo
    events: list[tuple]
    start: float
    end: float
    #: "full" (book_updates) or "top" (book_tops: one level a side).
    book_depth: str
    source: str
    gap_threshold_s: float = DEFAULT_GAP_THRESHOLD_S
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in KIND_NAMES.values()}
        for event in self.events:
            out[KIND_NAMES[event[1]]] += 1
        return out


def unix(moment: Any) -> float:
    """A datetime (naive = UTC), or a number of seconds, as unix seconds."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return float(moment)


def find_gaps(times: Iterable[float], start: float, end: float, threshold: float) -> list[tuple[float, float]]:
    """The ``(from, to)`` stretches of ``[start, end)`` longer than ``threshold`` with no event."""
    gaps = []
    previous = start
    for t in times:
        if t - previous > threshold:
            gaps.append((previous, t))
        previous = max(previous, t)
    if end - previous > threshold:
        gaps.append((previous, end))
    return gaps


def _optional(value: Any) -> float:
    return math.nan if value is None else float(value)


def build(instrument: InstrumentInfo, start: float, end: float, tickers: Sequence[dict], indexes: Sequence[dict],
          books: Sequence[dict], trades: Sequence[dict], *, book_depth: str, source: str,
          gap_threshold_s: float = DEFAULT_GAP_THRESHOLD_S) -> MarketData:
    """The events of rows as the tables hold them (dicts keyed by column), sorted and checked."""
    name = instrument.name
    events: list[tuple] = []
    for row in tickers:
        events.append((unix(row["time"]), TICKER, name, float(row["mark_price"]), float(row["index_price"]),
                       _optional(row.get("funding_rate")), _optional(row.get("funding_mark")),
                       _optional(row.get("best_bid_price")), _optional(row.get("best_ask_price"))))
    for row in indexes:
        events.append((unix(row["time"]), INDEX, row["index_name"], float(row["price"])))
    if books and "received_at" in books[0]:  # notifications of one instant in arrival order
        books = sorted(books, key=lambda r: (unix(r["time"]), unix(r["received_at"] or r["time"])))
    for row in books:
        if book_depth == "full":
            bids = list(zip(map(float, row["bid_prices"] or ()), map(float, row["bid_amounts"] or ())))
            asks = list(zip(map(float, row["ask_prices"] or ()), map(float, row["ask_amounts"] or ())))
        else:  # book_tops: the top after each notification, as a one-level snapshot
            bids = [] if row["best_bid_price"] is None else [(float(row["best_bid_price"]),
                                                               float(row["best_bid_amount"] or 0.0))]
            asks = [] if row["best_ask_price"] is None else [(float(row["best_ask_price"]),
                                                               float(row["best_ask_amount"] or 0.0))]
        events.append((unix(row["time"]), BOOK, name, bool(row["snapshot"]) or book_depth != "full", bids, asks))
    # Trades of one instant (a taker's sweep) carry no sequence, and neither the database nor a
    # dataset keeps an order among them: replay them as the sweep went, away from the touch
    # (a taker buy up the asks, a taker sell down the bids), so that both sources agree.
    def sweep_order(row: dict) -> tuple:
        price = float(row["price"])
        return (unix(row["time"]), str(row["direction"]), price if row["direction"] == "buy" else -price,
                float(row["amount"]))

    for row in sorted(trades, key=sweep_order):
        events.append((unix(row["time"]), TRADE, name, float(row["price"]), float(row["amount"]),
                       str(row["direction"])))
    events = [e for e in events if start <= e[0] < end]
    if not events:
        raise DataError(f"no market data for {name} between {_iso(start)} and {_iso(end)} in {source}")
    tie = _TIE_ORDER
    events.sort(key=lambda e: (e[0], tie[e[1]]))  # stable: a table's own order breaks further ties
    own = [e[0] for e in events if e[1] != INDEX]  # the index feed alone does not keep a book alive
    return MarketData(instrument, events, start, end, book_depth, source, gap_threshold_s,
                      find_gaps(own, start, end, gap_threshold_s))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


# -- Parquet ----------------------------------------------------------------------------------


def _read_table(directory: Path, table: str, required: bool = True) -> Optional[list[dict]]:
    import pyarrow.parquet as pq  # only the Parquet source needs it

    path = directory / f"{table}.parquet"
    if not path.exists():
        if required:
            raise DataError(f"{path}: missing (a dataset has one <table>.parquet per table)")
        return None
    try:
        data = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in data.column_names]
    if missing:
        raise DataError(f"{path}: wrong shape: missing column(s) {', '.join(missing)} of table {table}")
    try:
        return data.select(list(REQUIRED_COLUMNS[table])).to_pylist()
    except Exception as exc:
        raise DataError(f"{path}: wrong shape: {exc}".splitlines()[0]) from None


def load_parquet(directory: Path, instrument: str, start: Optional[float] = None, end: Optional[float] = None,
                 gap_threshold_s: float = DEFAULT_GAP_THRESHOLD_S) -> MarketData:
    """``instrument``'s events in a dataset directory (the whole recording without a range)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a dataset directory")
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{manifest_path}: missing (a dataset directory has a manifest.json)") from None
    except ValueError as exc:
        raise DataError(f"{manifest_path}: not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{manifest_path}: not a dataset manifest")
    version = manifest.get("format_version", DATASET_FORMAT_VERSION)
    if version != DATASET_FORMAT_VERSION:
        raise DataError(f"{manifest_path}: dataset format {version!r}; this version reads {DATASET_FORMAT_VERSION}")
    info = _instrument_from_dataset(directory, manifest, instrument)
    tickers = [r for r in _read_table(directory, "tickers") if r["instrument_name"] == instrument]
    trades = [r for r in (_read_table(directory, "public_trades", required=False) or ())
              if r["instrument_name"] == instrument]
    indexes = [r for r in (_read_table(directory, "index_prices", required=False) or ())
               if r["index_name"] == info.underlying]
    # Full depth where it was recorded; a range from before book_updates existed has book_tops only.
    books = [r for r in (_read_table(directory, "book_updates", required=False) or ())
             if r["instrument_name"] == instrument]
    depth = "full"
    if not books:
        books = [r for r in (_read_table(directory, "book_tops", required=False) or ())
                 if r["instrument_name"] == instrument]
        depth = "top"
    times = [unix(r["time"]) for rows in (tickers, trades, books) for r in rows]
    if start is None:
        start = min(times, default=0.0)
    if end is None:
        end = max(times, default=0.0) + 1e-6
    return build(info, start, end, tickers, indexes, books, trades, book_depth=depth,
                 source=str(directory), gap_threshold_s=gap_threshold_s)


def _instrument_from_dataset(directory: Path, manifest: dict, instrument: str) -> InstrumentInfo:
    """The instrument's tick and size step: an ``instruments.parquet`` or instrument objects in the
    manifest if the dataset has them, else the listing of the simulated venue (app/venue/instruments.py,
    the same Thalex perpetuals). A dataset whose manifest names its instruments knows no other."""
    rows = _read_table(directory, "instruments", required=False)
    listed = manifest.get("instruments")
    if rows is None:
        rows = [r for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
    for row in rows:
        if row.get("instrument_name") == instrument:
            try:
                return InstrumentInfo(instrument, str(row["underlying"]), float(row["tick_size"]),
                                      float(row["volume_tick_size"]))
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{directory}: instrument {instrument} lacks underlying, tick_size or "
                                f"volume_tick_size") from None
    names = {r.get("instrument_name") for r in rows} | (
        {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set())
    if instrument in names:
        return _venue_listing(instrument, str(directory))
    known = ", ".join(sorted(map(str, names))) or "none"
    raise DataError(f"unknown instrument {instrument!r} in {directory} (it has: {known})")


def _venue_listing(instrument: str, source: str) -> InstrumentInfo:
    """Tick and size step of an instrument the simulated venue lists (app/venue/instruments.py)."""
    from app.venue.instruments import DEFAULT_INSTRUMENTS

    for known in DEFAULT_INSTRUMENTS:
        if known.instrument_name == instrument:
            return InstrumentInfo(instrument, known.underlying, known.tick_size, known.volume_tick_size)
    raise DataError(f"{source}: no tick size for {instrument} (it is not in the instruments table or file)")


# -- PostgreSQL -------------------------------------------------------------------------------


async def load_postgres(database_url: str, instrument: str, start: float, end: float,
                        gap_threshold_s: float = DEFAULT_GAP_THRESHOLD_S) -> MarketData:
    """``instrument``'s events in ``[start, end)`` from the database."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(
            "SELECT instrument_name, underlying, tick_size, volume_tick_size FROM instruments "
            "WHERE instrument_name = $1", instrument)
        if row is not None:
            info = InstrumentInfo(instrument, row["underlying"], float(row["tick_size"]),
                                  float(row["volume_tick_size"]))
        elif await connection.fetchval("SELECT EXISTS (SELECT 1 FROM tickers WHERE instrument_name = $1)", instrument):
            info = _venue_listing(instrument, "the database")  # recorded, but not in instruments
        else:
            known = [r[0] for r in await connection.fetch(
                "SELECT instrument_name FROM instruments UNION SELECT DISTINCT instrument_name FROM tickers "
                "ORDER BY 1")]
            raise DataError(f"unknown instrument {instrument!r} in the database (it has: {', '.join(known) or 'none'})")
        lo, hi = datetime.fromtimestamp(start, tz=timezone.utc), datetime.fromtimestamp(end, tz=timezone.utc)

        async def rows(table: str, key: str, value: str) -> list[dict]:
            columns = ", ".join(REQUIRED_COLUMNS[table])
            records = await connection.fetch(
                f"SELECT {columns} FROM {table} WHERE {key} = $1 AND time >= $2 AND time < $3 ORDER BY time",
                value, lo, hi)
            return [dict(r) for r in records]

        # Full depth where it was recorded (migration 0009); before that, book_tops only.
        books, depth = [], "full"
        if await connection.fetchval("SELECT to_regclass('book_updates') IS NOT NULL"):
            books = await rows("book_updates", "instrument_name", instrument)
        if not books:
            books, depth = await rows("book_tops", "instrument_name", instrument), "top"
        return build(info, start, end, await rows("tickers", "instrument_name", instrument),
                     await rows("index_prices", "index_name", info.underlying), books,
                     await rows("public_trades", "instrument_name", instrument),
                     book_depth=depth, source="the database", gap_threshold_s=gap_threshold_s)
    finally:
        await connection.close()


async def load_latency_samples(database_url: str, instrument: str, start: float, end: float) -> dict[str, list[float]]:
    """Recorded D9 stage latencies (seconds) for the latency model: ``feed`` (exchange_to_received)
    and ``order`` (order_sent_to_ack_received), from the ``stage_latency`` view."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        out = {}
        for key, stage in (("feed", "exchange_to_received"), ("order", "order_sent_to_ack_received")):
            records = await connection.fetch(
                "SELECT duration_us FROM stage_latency WHERE stage = $1 AND instrument_name = $2 "
                "AND time >= $3 AND time < $4 ORDER BY time, duration_us", stage, instrument,
                datetime.fromtimestamp(start, tz=timezone.utc), datetime.fromtimestamp(end, tz=timezone.utc))
            out[key] = [max(0.0, r[0] / 1e6) for r in records]
        return out
    finally:
        await connection.close()
