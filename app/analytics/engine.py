"""The analytics engine: decoded records in, per-key states updated exactly once, snapshots out.

One engine serves the live Faust agent (agents/analytics.py, whose tables are Faust tables)
and any replay of recorded records (tests recompute the live tables with it; the backtest
computes the same analytics with it), through a small table interface:

    table.get(key) -> stored record | None
    table.window_key(key, time) -> (key, (start, end))      # windowed tables only
    table.write(key, record, partition)

Records are applied in batches (``apply``): each state a batch touches is read from its table
once and written back once, whatever the number of events (changelog traffic grows with keys
× batches, not with events). Every state records, per input record name, the offset of the
last event it applied; an event at or below it is a redelivery and is skipped
(docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once).

What each input feeds:

| record | states |
|---|---|
| ticker | position (mark; PnL snapshot clock), mark candles 1 s / 1 min, markouts (fair value), latency (exchange → received) |
| book, index | latency (exchange → received) |
| trade | trade candles 1 s / 1 min, latency (exchange → received) |
| quote | quote quality (spread, distance from fair value, position) |
| ack | resting quotes, quote quality (uptime, quoted amount, order actions) |
| fill | position, markouts (new fill), quote quality (filled amount) |
| position | position (the venue's funding and position) |
| latency | latency (the stage it measured) |
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol

from app.analytics.candles import Candle, mark_candle_input, trade_candle_input
from app.analytics.config import AnalyticsConfig
from app.analytics.histogram import LogHistogram
from app.analytics.latency import stage_samples
from app.analytics.markouts import MarkoutBook
from app.analytics.positions import FeeSchedule, PositionState
from app.analytics.progress import AnalyticsProgress
from app.analytics.quality import QualityConfig, QualityWindow, RestingQuotes, split_interval

MINUTE = 60.0
SECOND = 1.0

#: The records the analytics read (models/registry.py names), and the field that keys each.
INPUTS: Mapping[str, str] = {
    "ticker": "instrument_name", "book": "instrument_name", "index": "index_name", "trade": "instrument_name",
    "quote": "instrument_name", "ack": "instrument_name", "fill": "instrument_name",
    "position": "instrument_name", "latency": "instrument_name",
}


class StateTable(Protocol):
    name: str

    def get(self, key: Any) -> Optional[Mapping[str, Any]]: ...

    def window_key(self, key: str, time: float) -> tuple: ...

    def write(self, key: Any, record: Mapping[str, Any], partition: int) -> None: ...


@dataclass(frozen=True)
class TableSpec:
    """One analytics table: its name, the schema folder of its values, its window and help text."""

    name: str
    state: str
    window: Optional[float]
    help: str


TABLES: tuple[TableSpec, ...] = (
    TableSpec("position_pnl", "position_state", None,
              "Per instrument: position, average entry, realized and unrealized PnL at the mark, fees (maker, "
              "taker), the venue's funding, volume, notional and trades, from our fills."),
    TableSpec("trade_candles_1s", "candle", SECOND, "OHLCV of public trades per instrument, 1-second windows."),
    TableSpec("trade_candles_1m", "candle", MINUTE, "OHLCV of public trades per instrument, 1-minute windows."),
    TableSpec("mark_candles_1s", "candle", SECOND,
              "OHLC of the mark price per instrument (count = ticks), 1-second windows."),
    TableSpec("mark_candles_1m", "candle", MINUTE,
              "OHLC of the mark price per instrument (count = ticks), 1-minute windows."),
    TableSpec("stage_latency_1m", "latency_histogram", MINUTE,
              "Per '<instrument>|<stage>' and minute: a log-bucketed histogram (1% relative error) of the stage's "
              "latency in µs, for every D9 stage."),
    TableSpec("markouts", "markout_book", None,
              "Per instrument: fills waiting for their markout horizons (1, 5, 30, 60 s), the recent fair values, "
              "and markout aggregates per side and horizon (bps and quote currency; positive is good for us)."),
    TableSpec("resting_quotes", "resting_quotes", None, "Per instrument: our live orders, as the acks report them."),
    TableSpec("quote_quality_1m", "quote_window", MINUTE,
              "Per instrument and minute: two-sided uptime, quoted spread and distance from fair value, fill "
              "ratio, order-to-trade ratio, inventory turnover."),
    TableSpec("analytics_progress", "analytics_progress", None,
              "Per instrument: the minute of the last PnL snapshot, and the quote-quality minutes not yet published."),
)

#: How a table's stored record becomes a state again.
LOADERS: Mapping[str, Callable[[Mapping[str, Any]], Any]] = {
    "position_state": PositionState.from_record, "candle": Candle.from_record,
    "latency_histogram": LogHistogram.from_record, "markout_book": MarkoutBook.from_record,
    "resting_quotes": RestingQuotes.from_record, "quote_window": QualityWindow.from_record,
    "analytics_progress": AnalyticsProgress.from_record,
}


def known_keys(instruments: Iterable[str]) -> frozenset[str]:
    """The instruments, and the index of each (``BTC-PERPETUAL`` → ``BTCUSD``, docs/thalex-protocol.md §5.1)."""
    names = set(instruments)
    return frozenset(names | {name.split("-", 1)[0] + "USD" for name in names})


#: Per input record, the prices that must be above zero when present: the columns the
#: database keeps as positive_float8 (timescale/0002_market_data.sql, 0003_trading.sql), so
#: that what the sink refuses the analytics refuse too, and no candle opens at a negative mark.
POSITIVE_PRICES: Mapping[str, tuple[str, ...]] = {
    "ticker": ("mark_price", "index", "best_bid_price", "best_ask_price", "last_price"),
    "book": ("best_bid_price", "best_ask_price"),
    "index": ("price",),
    "trade": ("price",),
    "quote": ("index", "mark_price", "best_bid_price", "best_ask_price"),
    "ack": ("price",),
    "fill": ("price",),
    "position": ("mark_price",),
}


def non_positive_price(name: str, value: Mapping[str, Any]) -> Optional[str]:
    """The first price of a ``name`` record that is present and not above zero, if any."""
    for field_name in POSITIVE_PRICES.get(name, ()):
        price = value.get(field_name)
        if isinstance(price, (int, float)) and not price > 0:
            return field_name
    return None


def non_finite_field(value: Mapping[str, Any]) -> Optional[str]:
    """The first field holding NaN or ±inf (inside a list of levels too), if any."""
    for name, item in value.items():
        if isinstance(item, float) and not math.isfinite(item):
            return name
        if isinstance(item, list):
            for element in item:
                if isinstance(element, dict):
                    for sub, x in element.items():
                        if isinstance(x, float) and not math.isfinite(x):
                            return f"{name}.{sub}"
    return None


def _fresh(state: Any, name: str, offset: int) -> bool:
    """True once per event and state: records ``offset`` as applied; False for a redelivery."""
    if offset <= state.offsets.get(name, -1):
        return False
    state.offsets[name] = offset
    return True


def _unix(at: Optional[datetime]) -> Optional[float]:
    return None if at is None else at.timestamp()


@dataclass
class EngineStats:
    batches: int = 0
    events: int = 0
    applied: Counter = field(default_factory=Counter)
    #: Events a state skipped because it had applied them already (redeliveries), per record.
    redelivered: Counter = field(default_factory=Counter)
    #: Events refused, per reason.
    refused: Counter = field(default_factory=Counter)
    #: Fills skipped because their trade was booked from another offset (app/analytics/positions.py).
    duplicate_fills: int = 0
    #: Events left out of a windowed table, per table, because their window had expired when
    #: the record was produced (``kept_seconds``).
    late: Counter = field(default_factory=Counter)
    published: Counter = field(default_factory=Counter)
    keys_written: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded input record and where it came from; ``context`` is handed back on refusal."""

    name: str
    partition: int
    offset: int
    value: Mapping[str, Any]
    context: Any = None
    #: The Kafka record's timestamp (unix seconds): how late the event is for a window.
    timestamp: Optional[float] = None


Publish = Callable[[str, str, Mapping[str, Any]], None]
Refuse = Callable[[Event, str, str], None]


class _Batch:
    """The states one batch touches, read once and written back once."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, Any], tuple[StateTable, int, Any]] = {}

    def get(self, table: StateTable, key: Any, partition: int, load: Callable, new: Callable[[], Any]) -> Any:
        entry = self.states.get((table.name, key))
        if entry is None:
            stored = table.get(key)
            entry = self.states[(table.name, key)] = (table, partition, load(stored) if stored is not None else new())
        return entry[2]

    def peek(self, table: StateTable, key: Any, load: Callable) -> Any:
        """The state of ``key`` if there is one, without creating it."""
        entry = self.states.get((table.name, key))
        if entry is not None:
            return entry[2]
        stored = table.get(key)
        return None if stored is None else load(stored)

    def put(self, table: StateTable, key: Any, partition: int, state: Any) -> None:
        self.states[(table.name, key)] = (table, partition, state)

    def write(self) -> int:
        for (_, key), (table, partition, state) in self.states.items():
            table.write(key, state.to_record(), partition)
        return len(self.states)


class AnalyticsEngine:
    """Routes each event to the computations that use it; ``tables`` maps TABLES names to tables."""

    def __init__(self, instruments: Iterable[str], config: AnalyticsConfig, tables: Mapping[str, StateTable],
                 publish: Publish, refuse: Refuse) -> None:
        self.known = known_keys(instruments)
        self.config = config
        self.fees = FeeSchedule(config.maker_fee_rate, config.taker_fee_rate)
        self.quality = QualityConfig(max_spread_bps=config.uptime_max_spread_bps)
        self.t = tables
        self._kept = {spec.name: kept_seconds(spec.window, config) for spec in TABLES if spec.window is not None}
        #: The Kafka timestamp of the event being applied (None: unknown, nothing is late).
        self._record_time: Optional[float] = None
        self._publish_to = publish
        self._refuse_to = refuse
        self.stats = EngineStats()

    def apply(self, events: Iterable[Event]) -> None:
        """Apply a batch of events, then write every state it touched once."""
        batch = _Batch()
        for event in events:
            self._apply_one(batch, event)
        self.stats.keys_written += batch.write()
        self.stats.batches += 1

    def _apply_one(self, batch: _Batch, event: Event) -> None:
        self.stats.events += 1
        self._record_time = event.timestamp
        value = event.value
        key = value.get(INPUTS[event.name])
        if key not in self.known:
            self._refuse(event, "unknown instrument",
                         f"unknown instrument {key!r} (known: {', '.join(sorted(self.known))}; CRYPTICS_INSTRUMENTS)")
            return
        bad = non_finite_field(value)
        if bad is not None:
            self._refuse(event, f"non-finite {bad}", f"{event.name}.{bad} is not a finite number")
            return
        bad = non_positive_price(event.name, value)
        if bad is not None:
            self._refuse(event, f"non-positive {bad}", f"{event.name}.{bad} is {value[bad]!r}, not above zero")
            return
        try:
            getattr(self, f"_on_{event.name}")(batch, event.partition, event.offset, key, value)
        except (ValueError, TypeError, KeyError) as exc:
            # The computations check their input before they change anything.
            self._refuse(event, f"refused {event.name}", f"{type(exc).__name__}: {exc}")
            return
        self.stats.applied[event.name] += 1

    def _refuse(self, event: Event, reason: str, error: str) -> None:
        self.stats.refused[reason] += 1
        self._refuse_to(event, reason, error)

    def _publish(self, name: str, key: str, value: Mapping[str, Any]) -> None:
        self.stats.published[name] += 1
        self._publish_to(name, key, value)

    # -- states ---------------------------------------------------------------------------

    def _position(self, batch: _Batch, partition: int, instrument: str) -> PositionState:
        return batch.get(self.t["position_pnl"], instrument, partition, PositionState.from_record,
                         lambda: PositionState(instrument))

    def _progress(self, batch: _Batch, partition: int, instrument: str) -> AnalyticsProgress:
        return batch.get(self.t["analytics_progress"], instrument, partition, AnalyticsProgress.from_record,
                         lambda: AnalyticsProgress(instrument))

    def _markouts(self, batch: _Batch, partition: int, instrument: str) -> MarkoutBook:
        return batch.get(self.t["markouts"], instrument, partition, MarkoutBook.from_record,
                         lambda: MarkoutBook(instrument))

    def _candle(self, batch: _Batch, table_name: str, partition: int, offset: int, name: str, instrument: str,
                price: float, amount: float, time: float) -> None:
        table = self.t[table_name]
        key = table.window_key(instrument, time)
        if self._late(table_name, key):
            return
        candle = batch.peek(table, key, Candle.from_record)
        if candle is None:
            candle = Candle.first(price, amount, time)
            candle.offsets[name] = offset
        elif _fresh(candle, name, offset):
            candle.add(price, amount, time)
        else:
            self.stats.redelivered[name] += 1
            return
        batch.put(table, key, partition, candle)

    def _latency(self, batch: _Batch, partition: int, offset: int, name: str, value: Mapping[str, Any]) -> None:
        table = self.t["stage_latency_1m"]
        grouped: dict[tuple, list[int]] = {}
        for key, stage, end, duration in stage_samples(name, value):
            grouped.setdefault(table.window_key(f"{key}|{stage}", end), []).append(duration)
        for window_key, durations in grouped.items():
            if self._late("stage_latency_1m", window_key):
                continue
            histogram = batch.get(table, window_key, partition, LogHistogram.from_record, LogHistogram)
            if _fresh(histogram, name, offset):
                for duration in durations:
                    histogram.add(duration)
            else:
                self.stats.redelivered[name] += 1

    def _late(self, table_name: str, window_key: tuple) -> bool:
        """True (and counted) if the window ``window_key`` had expired when the event's record
        was produced: Faust drops an expired window from the worker's table (by the clock,
        every table_cleanup_interval), so an event written into it would start it again from
        nothing, and what the table holds would depend on when the cleanup ran."""
        if self._record_time is None or window_key[1][1] >= self._record_time - self._kept[table_name]:
            return False
        self.stats.late[table_name] += 1
        return True

    def _quality(self, batch: _Batch, partition: int, instrument: str, time: float) -> QualityWindow:
        table = self.t["quote_quality_1m"]
        key = table.window_key(instrument, time)
        window = batch.get(table, key, partition, QualityWindow.from_record, lambda: QualityWindow(instrument, key[1][0]))
        self._progress(batch, partition, instrument).quality_opened(key[1][0])
        return window

    # -- snapshots ----------------------------------------------------------------------------

    def _pnl_clock(self, batch: _Batch, partition: int, instrument: str, time: float) -> None:
        """Before an event at ``time`` changes the position state: if it is the first of a later
        minute, publish the snapshot of the minute the state stood at."""
        progress = self._progress(batch, partition, instrument)
        minute = math.floor(time / MINUTE) * MINUTE
        if progress.pnl_minute is not None and minute > progress.pnl_minute:
            end = datetime.fromtimestamp(progress.pnl_minute + MINUTE, timezone.utc)
            self._publish("pnl_snapshot", instrument, self._position(batch, partition, instrument).snapshot(end))
        if progress.pnl_minute is None or minute > progress.pnl_minute:
            progress.pnl_minute = minute

    def _quality_clock(self, batch: _Batch, partition: int, instrument: str, time: float) -> None:
        """Publish the quote-quality record of every minute that ended ``snapshot_grace`` before ``time``."""
        table = self.t["quote_quality_1m"]
        progress = self._progress(batch, partition, instrument)
        for start in progress.quality_due(time - MINUTE - self.config.snapshot_grace):
            window = batch.peek(table, table.window_key(instrument, start), QualityWindow.from_record)
            if window is not None:
                self._publish("quote_quality", instrument, window.record())

    # -- one handler per input record -----------------------------------------------------------

    def _on_ticker(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        position = self._position(batch, partition, instrument)
        if _fresh(position, "ticker", offset):
            self._pnl_clock(batch, partition, instrument, v["mark_timestamp"])
            position.apply_ticker(v)
        else:
            self.stats.redelivered["ticker"] += 1
        price, amount, at = mark_candle_input(v)
        self._candle(batch, "mark_candles_1s", partition, offset, "ticker", instrument, price, amount, at)
        self._candle(batch, "mark_candles_1m", partition, offset, "ticker", instrument, price, amount, at)
        book = self._markouts(batch, partition, instrument)
        if _fresh(book, "ticker", offset):
            for markout in book.add_fair_value(v):
                self._publish("markout", instrument, markout)
        self._latency(batch, partition, offset, "ticker", v)

    def _on_book(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        self._latency(batch, partition, offset, "book", v)

    def _on_index(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        self._latency(batch, partition, offset, "index", v)

    def _on_trade(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        price, amount, at = trade_candle_input(v)
        self._candle(batch, "trade_candles_1s", partition, offset, "trade", instrument, price, amount, at)
        self._candle(batch, "trade_candles_1m", partition, offset, "trade", instrument, price, amount, at)
        self._latency(batch, partition, offset, "trade", v)

    def _on_quote(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        time = _unix(v["quoted_at"])
        if time is None:
            raise ValueError("a quote decision without quoted_at")
        window = self._quality(batch, partition, instrument, time)
        if _fresh(window, "quote", offset):
            window.add_quote(v)
        else:
            self.stats.redelivered["quote"] += 1
        self._quality_clock(batch, partition, instrument, time)

    def _on_ack(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        resting = batch.get(self.t["resting_quotes"], instrument, partition, RestingQuotes.from_record,
                            lambda: RestingQuotes(instrument))
        if not _fresh(resting, "ack", offset):
            self.stats.redelivered["ack"] += 1
            return
        effect = resting.apply_ack(v, self.quality)
        # What this ack adds to each minute: the time since the previous ack (split at minute
        # boundaries) and the ack itself in its own minute; each window applies the ack once.
        pieces: dict[float, list[tuple[float, bool]]] = {}
        if effect.interval is not None:
            start, end, two_sided = effect.interval
            for window_start, seconds in split_interval(start, end, MINUTE):
                pieces.setdefault(window_start, []).append((seconds, two_sided))
        time = _unix(v["ack_received_at"])
        own = None if time is None else self.t["quote_quality_1m"].window_key(instrument, time)[1][0]
        if own is not None:
            pieces.setdefault(own, [])
        for window_start, intervals in pieces.items():
            window = self._quality(batch, partition, instrument, window_start)
            if not _fresh(window, "ack", offset):
                continue
            for seconds, two_sided in intervals:
                window.add_interval(seconds, two_sided)
            if window_start == own:
                window.add_ack(v, effect.quoted_amount)
        if time is not None:
            self._quality_clock(batch, partition, instrument, time)

    def _on_fill(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        time = v["time"] if v["time"] is not None else _unix(v["ack_received_at"])
        if time is None:
            raise ValueError("a fill with neither an exchange time nor ack_received_at")
        position = self._position(batch, partition, instrument)
        if position.duplicate_fill(v["trade_id"], offset):
            # The same trade on the topic again: none of the states takes it a second time.
            self.stats.duplicate_fills += 1
            return
        if _fresh(position, "fill", offset):
            self._pnl_clock(batch, partition, instrument, time)
            position.apply_fill(v, self.fees)
            position.remember_fill(v["trade_id"], offset)
        else:
            self.stats.redelivered["fill"] += 1
        book = self._markouts(batch, partition, instrument)
        if _fresh(book, "fill", offset):
            for markout in book.add_fill(v):
                self._publish("markout", instrument, markout)
        window = self._quality(batch, partition, instrument, time)
        if _fresh(window, "fill", offset):
            window.add_fill(v)
        self._quality_clock(batch, partition, instrument, time)

    def _on_position(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        position = self._position(batch, partition, instrument)
        if _fresh(position, "position", offset):
            position.apply_position(v)
        else:
            self.stats.redelivered["position"] += 1

    def _on_latency(self, batch: _Batch, partition: int, offset: int, instrument: str, v: Mapping[str, Any]) -> None:
        self._latency(batch, partition, offset, "latency", v)


class LocalTable:
    """A table in a dict: for replays and recomputations outside Faust (same keys as Faust's)."""

    def __init__(self, name: str, window: Optional[float] = None) -> None:
        self.name = name
        self.window = window
        self.data: dict[Any, Mapping[str, Any]] = {}

    def get(self, key: Any) -> Optional[Mapping[str, Any]]:
        return self.data.get(key)

    def window_key(self, key: str, time: float) -> tuple:
        return key, window_range(time, self.window)

    def write(self, key: Any, record: Mapping[str, Any], partition: int) -> None:
        self.data[key] = record


def window_range(time: float, size: Optional[float]) -> tuple[float, float]:
    """Faust's tumbling window of ``time`` (faust.windows.TumblingWindow.ranges): start on a
    multiple of the size from the epoch, end 0.1 s before the next start."""
    if size is None:
        raise ValueError("not a windowed table")
    start = float(int(time // size * size))
    return start, start + size - 0.1


def kept_seconds(window: float, config: AnalyticsConfig) -> float:
    """How long a window of ``window`` seconds is kept before Faust expires it."""
    return config.second_windows_kept if window < 60 else config.minute_windows_kept


def local_tables() -> dict[str, LocalTable]:
    return {spec.name: LocalTable(spec.name, spec.window) for spec in TABLES}
