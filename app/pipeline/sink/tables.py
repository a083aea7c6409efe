"""Which record goes into which table, and how a decoded record becomes a row.

One ``TableSpec`` per persisted table (timescale/0002, 0003, 0006 and 0009 hold the tables).
A record feeds one table, but for the book, whose notifications go into two: book_tops (the
top they led to) and book_updates (the level changes as sent, for replays); its sink decodes
each record once and writes both (app/pipeline/sink/sink.py). A spec names the table, its
columns in the order the row builder fills them (``persisted_at`` is not among them: the
writer stamps it per flush), the PostgreSQL type of each column as the unnest write path
passes it, the natural key (docs/architecture.md#d8-persistence-semantics) that the table's
primary key enforces,
and the columns, if any, that the insert hands back for each row it newly inserted.

Row builders take the record as fastavro decodes it (a dict with every field of the
newest schema) and the Kafka coordinates it came from, and return a tuple. They convert
exchange times (float unix seconds) to aware datetimes; anything they cannot convert
(a NaN time, a missing field) raises, and the sink dead-letters that record.

Stamps that older producers did not write (schema v1 has no ``*_at`` fields) fall back
to the Kafka record's timestamp, the producer's create time: it is the same every time
the record is delivered, so the natural key still holds, and it is the closest stamp
there is. Producers of the current schemas set every stamp these keys need.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Optional

import orjson

from models.latency import LatencySample

UTC = timezone.utc


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Kafka record as the sink received it: raw bytes and where they came from."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    #: The Kafka record's timestamp, unix seconds (producer create time), if any.
    timestamp: Optional[float] = None


Row = tuple
RowBuilder = Callable[[Mapping[str, Any], SourceRecord], Row]


@dataclass(frozen=True)
class TableSpec:
    #: Record name (models/registry.py), hence the topic.
    record: str
    table: str
    #: Column names in row order; ``persisted_at`` is added by the writer.
    columns: tuple[str, ...]
    #: Per column, the type the unnest path sends it as: a PostgreSQL array element type,
    #: or ``jsonb`` / ``float8[]``, which travel as text and are cast in the statement.
    types: tuple[str, ...]
    #: The natural key: the columns of the table's primary key.
    key: tuple[str, ...]
    build: RowBuilder
    #: Columns (``persisted_at`` may be one) the INSERT returns for each row it newly
    #: inserted, none for a row its natural key skipped: what the sink reports once the
    #: transaction has committed (the ack → persisted latency samples). Empty: nothing is
    #: returned, and the INSERT has no RETURNING clause.
    returning: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.types):
            raise ValueError(f"{self.table}: {len(self.columns)} columns but {len(self.types)} types")
        missing = [c for c in self.key if c not in self.columns]
        if missing:
            raise ValueError(f"{self.table}: key columns {missing} are not columns")
        unknown = [c for c in self.returning if c not in self.columns and c != "persisted_at"]
        if unknown:
            raise ValueError(f"{self.table}: returned columns {unknown} are not columns")

    def key_of(self, row: Row) -> tuple:
        """The natural key of a built row (tests count distinct keys with it)."""
        return tuple(row[self.columns.index(c)] for c in self.key)


# -- conversions -------------------------------------------------------------------------


def exchange_time(seconds: float) -> datetime:
    """An exchange time (float unix seconds) as an aware UTC datetime, to the µs."""
    return datetime.fromtimestamp(seconds, UTC)


def optional_exchange_time(seconds: Optional[float]) -> Optional[datetime]:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def kafka_stamp(src: SourceRecord) -> datetime:
    """The fallback for a stamp the producer did not write: the Kafka record's timestamp."""
    if src.timestamp is None:
        raise ValueError(f"{src.topic}[{src.partition}]@{src.offset}: no stamp in the record and no Kafka timestamp")
    return datetime.fromtimestamp(src.timestamp, UTC)


def _json(value: Any) -> Optional[str]:
    return None if value is None else orjson.dumps(value).decode()


# -- row builders, one per record ----------------------------------------------------------


def ticker_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        exchange_time(v["mark_timestamp"]), v["instrument_name"], v["received_at"] or kafka_stamp(src),
        v["mark_price"], v["delta"], v["index"],
        v["best_bid_price"], v["best_bid_amount"], v["best_ask_price"], v["best_ask_amount"],
        v["last_price"], v["iv"], v["forward"], v["volume_24h"], v["value_24h"],
        v["low_price_24h"], v["high_price_24h"], v["change_24h"], v["collar_low"], v["collar_high"],
        v["open_interest"], v["funding_rate"], v["funding_mark"], v["realised_funding_24h"],
        v["average_funding_rate_24h"],
    )


def book_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        exchange_time(v["time"]), v["instrument_name"], v["received_at"] or kafka_stamp(src), v["snapshot"],
        v["best_bid_price"], v["best_bid_amount"], v["best_ask_price"], v["best_ask_amount"],
        v["total_bid_amount"], v["total_ask_amount"],
        len(v["bid_changes"]), len(v["ask_changes"]), len(v["trades"] or ()),
    )


def book_update_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    bids, asks = v["bid_changes"], v["ask_changes"]
    return (
        exchange_time(v["time"]), v["instrument_name"], v["received_at"] or kafka_stamp(src), v["snapshot"],
        [level["price"] for level in bids], [level["amount"] for level in bids],
        [level["price"] for level in asks], [level["amount"] for level in asks],
    )


def index_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        exchange_time(v["timestamp"]), v["index_name"], v["received_at"] or kafka_stamp(src), v["price"],
        v["expiration_print_average"], v["expiration_progress"], v["expected_expiration_price"],
        v["previous_settlement_price"],
    )


def trade_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        exchange_time(v["timestamp"]), v["instrument_name"], v["price"], v["amount"], v["direction"],
        v["implied_taker"], v["received_at"],
    )


def quote_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    bids, asks = v["bids"], v["asks"]
    return (
        v["quoted_at"] or kafka_stamp(src), v["instrument_name"], v["reason"], v["position"], v["fair_value"],
        v["index"], v["mark_price"], optional_exchange_time(v["mark_timestamp"]),
        v["best_bid_price"], v["best_ask_price"], v["funding_rate"],
        [level["price"] for level in bids], [level["amount"] for level in bids],
        [level["price"] for level in asks], [level["amount"] for level in asks],
        v["received_at"],
    )


def ack_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        v["ack_received_at"] or kafka_stamp(src), v["order_id"], v["instrument_name"], v["change_reason"],
        v["status"], v["order_type"], v["time_in_force"], v["direction"], v["price"], v["amount"],
        v["filled_amount"], v["remaining_amount"], v["insert_reason"], v["delete_reason"], v["label"],
        v["client_order_id"], v["persistent"], v["reduce_only"], v["conditional_order_id"], v["bot_id"],
        exchange_time(v["create_time"]), optional_exchange_time(v["close_time"]),
        _json(v["fills"]), _json(v["legs"]),
        v["received_at"], v["quoted_at"], v["order_sent_at"],
    )


def fill_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    # The fill's exchange time is optional in Thalex's OrderFill (always sent in practice);
    # without it the fill is dated by when its order status arrived.
    time = exchange_time(v["time"]) if v["time"] is not None else (v["ack_received_at"] or kafka_stamp(src))
    return (
        time, v["trade_id"], v["order_id"], v["leg_index"], v["instrument_name"], v["direction"],
        v["maker_taker"], v["price"], v["amount"], v["client_order_id"], v["order_sent_at"], v["ack_received_at"],
    )


def position_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        v["received_at"] or kafka_stamp(src), v["instrument_name"], v["position"], v["mark_price"], v["iv"],
        v["index"], v["start_price"], v["average_price"], v["unrealised_pnl"], v["realised_pnl"],
        v["entry_value"], v["perpetual_funding_entry_value"], v["unrealised_perpetual_funding"],
    )


def latency_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        v["end_at"], v["instrument_name"], v["stage"], v["start_at"], v["duration_us"],
        v["received_at"], v["quoted_at"], v["order_sent_at"], v["ack_received_at"], v["persisted_at"],
    )


def markout_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        exchange_time(v["time"]), v["trade_id"], v["order_id"], v["horizon_seconds"], v["instrument_name"],
        v["direction"], v["maker_taker"], v["price"], v["amount"], v["mid_after"], v["mark_after"],
        v["markout_bps"], v["markout"], v["markout_bps_mark"], v["markout_mark"],
    )


def pnl_snapshot_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        v["time"], v["instrument_name"], v["position"], v["average_price"], v["realized_pnl"],
        v["unrealized_pnl"], v["mark_price"], v["fees_maker"], v["fees_taker"], v["funding_pnl"], v["net_pnl"],
        v["volume"], v["notional"], v["trades"],
    )


def quote_quality_row(v: Mapping[str, Any], src: SourceRecord) -> Row:
    return (
        v["time"], v["instrument_name"], v["observed_seconds"], v["two_sided_seconds"], v["uptime"], v["quotes"],
        v["mean_spread"], v["mean_bid_distance"], v["mean_ask_distance"], v["quoted_amount"], v["filled_amount"],
        v["fill_ratio"], v["order_actions"], v["fills"], v["order_to_trade"], v["volume"], v["mean_abs_position"],
        v["inventory_turnover"],
    )


# -- what an insert hands back -------------------------------------------------------------

#: The stage the sink measures itself: from the ack's arrival to its row's commit.
ACK_PERSISTED_STAGE = "ack_received_to_persisted"
#: The ack spec's ``returning``: what ack_persisted_sample needs of each newly inserted row.
ACK_RETURNING = ("instrument_name", "time", "received_at", "quoted_at", "order_sent_at", "persisted_at")
_MICROSECOND = timedelta(microseconds=1)


def ack_persisted_sample(row: Mapping[str, Any]) -> Optional[LatencySample]:
    """The ack → persisted latency of one newly inserted order_acks row (``ACK_RETURNING``).

    Measured by the sink rather than derived by the stage_latency view, so that it travels
    like every measured stage (the latency topic, latency_samples, the analytics'
    histograms; docs/architecture.md#d9-latency-stamps). The end is the row's own
    ``persisted_at``: the sink reports the row only once its transaction has committed,
    and a row its natural key skipped is not reported, so a redelivered ack is measured
    once. None for a combination order's ack, which names no instrument (latency samples
    are keyed by one)."""
    instrument = row["instrument_name"]
    if instrument is None:
        return None
    start, end = row["time"], row["persisted_at"]
    return LatencySample(
        stage=ACK_PERSISTED_STAGE, instrument_name=instrument, start_at=start, end_at=end,
        duration_us=(end - start) // _MICROSECOND,  # exact: both are whole µs (timestamptz)
        received_at=row["received_at"], quoted_at=row["quoted_at"], order_sent_at=row["order_sent_at"],
        ack_received_at=start, persisted_at=end,
    )


# -- the specs -----------------------------------------------------------------------------

_F = "float8"
_TS = "timestamptz"

#: Every persisted table's spec, in the order each record's sink writes them.
TABLE_SPECS: tuple[TableSpec, ...] = (
    TableSpec(
        "ticker", "tickers",
        ("time", "instrument_name", "received_at", "mark_price", "delta", "index_price",
         "best_bid_price", "best_bid_amount", "best_ask_price", "best_ask_amount", "last_price", "iv",
         "forward", "volume_24h", "value_24h", "low_price_24h", "high_price_24h", "change_24h", "collar_low",
         "collar_high", "open_interest", "funding_rate", "funding_mark", "realised_funding_24h",
         "average_funding_rate_24h"),
        (_TS, "text", _TS) + (_F,) * 22,
        ("instrument_name", "time", "received_at"),
        ticker_row,
    ),
    TableSpec(
        "book", "book_tops",
        ("time", "instrument_name", "received_at", "snapshot", "best_bid_price", "best_bid_amount",
         "best_ask_price", "best_ask_amount", "total_bid_amount", "total_ask_amount", "bid_changes",
         "ask_changes", "trades"),
        (_TS, "text", _TS, "bool") + (_F,) * 6 + ("int4",) * 3,
        ("instrument_name", "time", "received_at"),
        book_row,
    ),
    TableSpec(
        "book", "book_updates",
        ("time", "instrument_name", "received_at", "snapshot", "bid_prices", "bid_amounts", "ask_prices",
         "ask_amounts"),
        (_TS, "text", _TS, "bool", "float8[]", "float8[]", "float8[]", "float8[]"),
        ("instrument_name", "time", "received_at"),
        book_update_row,
    ),
    TableSpec(
        "index", "index_prices",
        ("time", "index_name", "received_at", "price", "expiration_print_average", "expiration_progress",
         "expected_expiration_price", "previous_settlement_price"),
        (_TS, "text", _TS) + (_F,) * 5,
        ("index_name", "time", "received_at"),
        index_row,
    ),
    TableSpec(
        "trade", "public_trades",
        ("time", "instrument_name", "price", "amount", "direction", "implied_taker", "received_at"),
        (_TS, "text", _F, _F, "text", "bool", _TS),
        ("instrument_name", "time", "price", "amount", "direction"),
        trade_row,
    ),
    TableSpec(
        "quote", "quote_decisions",
        ("time", "instrument_name", "reason", "position", "fair_value", "index_price", "mark_price",
         "mark_time", "best_bid_price", "best_ask_price", "funding_rate", "bid_prices", "bid_amounts",
         "ask_prices", "ask_amounts", "received_at"),
        (_TS, "text", "text", _F, _F, _F, _F, _TS, _F, _F, _F, "float8[]", "float8[]", "float8[]", "float8[]",
         _TS),
        ("instrument_name", "time"),
        quote_row,
    ),
    TableSpec(
        "ack", "order_acks",
        ("time", "order_id", "instrument_name", "change_reason", "status", "order_type", "time_in_force",
         "direction", "price", "amount", "filled_amount", "remaining_amount", "insert_reason", "delete_reason",
         "label", "client_order_id", "persistent", "reduce_only", "conditional_order_id", "bot_id",
         "create_time", "close_time", "fills", "legs", "received_at", "quoted_at", "order_sent_at"),
        (_TS, "text", "text", "text", "text", "text", "text", "text", _F, _F, _F, _F, "text", "text", "text",
         "int8", "bool", "bool", "text", "text", _TS, _TS, "jsonb", "jsonb", _TS, _TS, _TS),
        ("order_id", "time", "change_reason", "filled_amount", "remaining_amount"),
        ack_row,
        returning=ACK_RETURNING,
    ),
    TableSpec(
        "fill", "fills",
        ("time", "trade_id", "order_id", "leg_index", "instrument_name", "direction", "maker_taker", "price",
         "amount", "client_order_id", "order_sent_at", "ack_received_at"),
        (_TS, "text", "text", "int4", "text", "text", "text", _F, _F, "int8", _TS, _TS),
        ("trade_id", "order_id", "leg_index", "time"),
        fill_row,
    ),
    TableSpec(
        "position", "positions",
        ("time", "instrument_name", "position", "mark_price", "iv", "index_price", "start_price",
         "average_price", "unrealised_pnl", "realised_pnl", "entry_value", "perpetual_funding_entry_value",
         "unrealised_perpetual_funding"),
        (_TS, "text") + (_F,) * 11,
        ("instrument_name", "time"),
        position_row,
    ),
    TableSpec(
        "latency", "latency_samples",
        ("time", "instrument_name", "stage", "start_at", "duration_us", "event_received_at", "event_quoted_at",
         "event_order_sent_at", "event_ack_received_at", "event_persisted_at"),
        (_TS, "text", "text", _TS, "int8", _TS, _TS, _TS, _TS, _TS),
        ("instrument_name", "stage", "time", "start_at"),
        latency_row,
    ),
    TableSpec(
        # order_id in the key as in fills: a self-trade fills two of our orders under one trade_id.
        "markout", "markouts",
        ("time", "trade_id", "order_id", "horizon_seconds", "instrument_name", "direction", "maker_taker", "price",
         "amount", "mid_after", "mark_after", "markout_bps", "markout", "markout_bps_mark", "markout_mark"),
        (_TS, "text", "text", "int4", "text", "text", "text") + (_F,) * 8,
        ("trade_id", "order_id", "horizon_seconds", "time"),
        markout_row,
    ),
    TableSpec(
        "pnl_snapshot", "pnl_snapshots",
        ("time", "instrument_name", "position", "average_price", "realized_pnl", "unrealized_pnl", "mark_price",
         "fees_maker", "fees_taker", "funding_pnl", "net_pnl", "volume", "notional", "trades"),
        (_TS, "text") + (_F,) * 11 + ("int8",),
        ("instrument_name", "time"),
        pnl_snapshot_row,
    ),
    TableSpec(
        "quote_quality", "quote_quality_1m",
        ("time", "instrument_name", "observed_seconds", "two_sided_seconds", "uptime", "quotes", "mean_spread",
         "mean_bid_distance", "mean_ask_distance", "quoted_amount", "filled_amount", "fill_ratio", "order_actions",
         "fills", "order_to_trade", "volume", "mean_abs_position", "inventory_turnover"),
        (_TS, "text", _F, _F, _F, "int8", _F, _F, _F, _F, _F, _F, "int8", "int8", _F, _F, _F, _F),
        ("instrument_name", "time"),
        quote_quality_row,
    ),
)

#: Every persisted table's spec, by table name.
TABLES: Mapping[str, TableSpec] = {s.table: s for s in TABLE_SPECS}
#: The tables of each persisted record, by record name: its topic's sink writes each of them.
RECORD_TABLES: dict[str, tuple[TableSpec, ...]] = {}
for _spec in TABLE_SPECS:
    RECORD_TABLES[_spec.record] = RECORD_TABLES.get(_spec.record, ()) + (_spec,)
#: Each persisted record's first table, by record name: the keys are the persisted records.
#: Every record has one table, but for the book (book_tops here; book_updates in RECORD_TABLES).
SPECS: Mapping[str, TableSpec] = {name: specs[0] for name, specs in RECORD_TABLES.items()}


def spec(record: str) -> TableSpec:
    """A record's first table (its only one but for the book's)."""
    try:
        return SPECS[record]
    except KeyError:
        raise KeyError(f"no table for record {record!r}; persisted records: {', '.join(SPECS)}") from None


def tables_of(record: str) -> tuple[TableSpec, ...]:
    """Every table ``record`` feeds, in the order its sink writes them."""
    spec(record)  # the same error for a record that is not persisted
    return RECORD_TABLES[record]
