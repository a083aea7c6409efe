"""Candles (app/analytics/candles.py): open/close by exchange time with ties, the inputs from trade
and ticker records, window_start against the database's date_bin buckets, the Avro round trip."""
from __future__ import annotations

import io
import json
import math
from datetime import datetime, timedelta, timezone

import fastavro
import pytest

from app.analytics.candles import Candle, mark_candle_input, trade_candle_input, window_start
from models.schemas import SCHEMA_ROOT

T0 = 1_800_000_000.0  # a whole minute: 1_800_000_000 = 30_000_000 * 60
SCHEMA = json.loads((SCHEMA_ROOT / "candle" / "v1.avsc").read_text())
#: date_bin's origin in timescale/0004_views.sql.
ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)


def test_a_first_trade_is_the_whole_candle():
    candle = Candle.first(100.0, 0.5, T0 + 1)
    assert (candle.open, candle.high, candle.low, candle.close) == (100.0, 100.0, 100.0, 100.0)
    assert (candle.volume, candle.count, candle.open_time, candle.close_time) == (0.5, 1, T0 + 1, T0 + 1)
    assert candle.offsets == {}


def test_open_and_close_go_by_time_not_by_arrival():
    candle = Candle.first(100.0, 0.5, T0 + 10)
    candle.add(104.0, 1.0, T0 + 20)
    candle.add(97.0, 0.25, T0 + 5)  # earlier than the open: takes it
    candle.add(101.0, 0.25, T0 + 15)  # in between: neither open nor close
    assert (candle.open, candle.open_time) == (97.0, T0 + 5)
    assert (candle.close, candle.close_time) == (104.0, T0 + 20)
    assert (candle.high, candle.low) == (104.0, 97.0)
    assert (candle.volume, candle.count) == (2.0, 4)


def test_on_a_tie_the_first_keeps_the_open_and_the_last_takes_the_close():
    candle = Candle.first(100.0, 1.0, T0)
    candle.add(102.0, 1.0, T0)
    assert (candle.open, candle.close) == (100.0, 102.0)
    candle.add(99.0, 1.0, T0)
    assert (candle.open, candle.close) == (100.0, 99.0)
    assert (candle.high, candle.low, candle.count) == (102.0, 99.0, 3)


def test_a_trade_record_gives_price_amount_and_its_exchange_time():
    trade = {"instrument_name": "BTC-PERPETUAL", "price": 100_001.0, "amount": 0.3, "direction": "buy",
             "timestamp": T0 + 0.25, "implied_taker": False, "received_at": None}
    assert trade_candle_input(trade) == (100_001.0, 0.3, T0 + 0.25)


def test_a_ticker_gives_its_mark_with_no_amount_so_a_mark_candle_counts_ticks():
    tickers = [{"instrument_name": "BTC-PERPETUAL", "mark_price": mark, "mark_timestamp": at, "delta": 1.0,
                "index": mark, "received_at": None} for mark, at in [(100.5, T0 + 1), (99.5, T0 + 2), (100.0, T0 + 3)]]
    assert mark_candle_input(tickers[0]) == (100.5, 0.0, T0 + 1)
    candle = Candle.first(*mark_candle_input(tickers[0]))
    for t in tickers[1:]:
        candle.add(*mark_candle_input(t))
    assert (candle.open, candle.high, candle.low, candle.close) == (100.5, 100.5, 99.5, 100.0)
    assert (candle.volume, candle.count) == (0.0, 3)


def date_bin(time: float, size_seconds: int) -> float:
    """PostgreSQL's date_bin(size, time, '2000-01-01'), in exact integer microseconds."""
    since = datetime.fromtimestamp(time, timezone.utc) - ORIGIN
    micros = since // timedelta(microseconds=1)
    binned = micros - micros % (size_seconds * 1_000_000)
    return (ORIGIN + timedelta(microseconds=binned)).timestamp()


@pytest.mark.parametrize("time,size,expected", [
    (T0, 1, T0), (T0 + 0.999, 1, T0), (T0 + 1.0, 1, T0 + 1.0), (T0 + 59.5, 1, T0 + 59.0),
    (T0, 60, T0), (T0 + 59.999, 60, T0), (T0 + 60.0, 60, T0 + 60.0), (T0 - 0.001, 60, T0 - 60.0),
    (T0 + 3 * 60 + 7.25, 60, T0 + 180.0),
])
def test_window_start_floors_to_the_size(time, size, expected):
    assert window_start(time, size) == expected
    assert window_start(time, size) == date_bin(time, size)


@pytest.mark.parametrize("size", [1.0, 60.0])
def test_a_time_just_below_a_boundary_stays_in_the_window_before_it(size):
    boundary = T0 + 120.0
    just_below = math.nextafter(boundary, 0.0)
    assert window_start(just_below, size) == boundary - size
    assert window_start(boundary, size) == boundary


@pytest.mark.parametrize("time,size", [(math.nan, 60), (math.inf, 60), (T0, 0), (T0, -1), (T0, math.nan)])
def test_window_start_rejects_a_non_finite_time_or_a_bad_size(time, size):
    with pytest.raises(ValueError):
        window_start(time, size)


@pytest.mark.parametrize("args", [(math.nan, 1.0, T0), (100.0, math.inf, T0), (100.0, 1.0, -math.inf),
                                  (100.0, -1.0, T0), (None, 1.0, T0)])
def test_a_non_finite_input_raises_and_changes_nothing(args):
    with pytest.raises(ValueError):
        Candle.first(*args)
    candle = Candle.first(100.0, 1.0, T0)
    before = candle.to_record()
    with pytest.raises(ValueError):
        candle.add(*args)
    assert candle.to_record() == before


def test_non_finite_records_raise():
    with pytest.raises(ValueError):
        trade_candle_input({"price": math.nan, "amount": 1.0, "timestamp": T0})
    with pytest.raises(ValueError):
        mark_candle_input({"mark_price": 100.0, "mark_timestamp": math.inf})


def test_the_candle_round_trips_through_its_avro_schema():
    candle = Candle.first(100.0, 0.5, T0 + 0.125)
    candle.add(101.5, 0.25, T0 + 0.75)
    candle.add(99.0, 1.0, T0 + 0.5)
    candle.offsets = {"trade": 12, "ticker": 9_000_000_000}
    parsed = fastavro.parse_schema(SCHEMA)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, candle.to_record())
    restored = Candle.from_record(fastavro.schemaless_reader(io.BytesIO(out.getvalue()), parsed, parsed))
    assert restored == candle


def test_the_schema_is_the_record():
    assert SCHEMA["namespace"] == "cryptics.analytics"
    assert [f["name"] for f in SCHEMA["fields"]] == list(Candle.first(1.0, 1.0, T0).to_record())
    assert all(f.get("doc") for f in SCHEMA["fields"])
    offsets = next(f for f in SCHEMA["fields"] if f["name"] == "offsets")
    assert offsets["type"] == {"type": "map", "values": "long"} and offsets["default"] == {}
