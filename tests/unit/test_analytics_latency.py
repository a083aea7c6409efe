"""Stage latencies from records (app/analytics/latency.py), as timescale/0004_views.sql's
stage_latency view derives them from the stored rows."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.analytics.latency import STAGES, stage_samples
from models.examples import example

# 1700000000 s since the epoch.
T0 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)


def at(seconds_after_t0: float) -> datetime:
    return T0 + timedelta(seconds=seconds_after_t0)


def test_ticker_from_mark_timestamp_to_received():
    ticker = dict(example("ticker"), instrument_name="ETH-PERPETUAL", mark_timestamp=1700000000.25,
                  received_at=at(0.2531))
    assert stage_samples("ticker", ticker) == [("ETH-PERPETUAL", "exchange_to_received", 1700000000.2531, 3100)]


def test_book_from_time_to_received():
    book = dict(example("book"), instrument_name="BTC-PERPETUAL", time=1700000000.5, received_at=at(0.502))
    assert stage_samples("book", book) == [("BTC-PERPETUAL", "exchange_to_received", 1700000000.502, 2000)]


def test_index_is_keyed_by_index_name():
    index = dict(example("index"), index_name="BTCUSD", timestamp=1700000000.0, received_at=at(0.0017))
    assert stage_samples("index", index) == [("BTCUSD", "exchange_to_received", 1700000000.0017, 1700)]


def test_trade_only_with_received_at():
    trade = dict(example("trade"), instrument_name="BTC-PERPETUAL", timestamp=1700000000.75,
                 received_at=at(0.7504))
    assert stage_samples("trade", trade) == [("BTC-PERPETUAL", "exchange_to_received", 1700000000.7504, 400)]
    assert stage_samples("trade", dict(trade, received_at=None)) == []


def test_record_without_received_at_gives_nothing():
    assert stage_samples("ticker", dict(example("ticker"), received_at=None)) == []


def test_exchange_time_is_taken_at_microseconds_as_the_sink_stores_it():
    # The row's time is 22:13:20.000020 (1700000000.0000196 at µs), so stage_us() gives
    # 124000 - 20 = 123980 µs; the raw float difference, 123980.52 µs, would round to 123981.
    ticker = dict(example("ticker"), mark_timestamp=1700000000.0000196, received_at=at(0.124))
    assert stage_samples("ticker", ticker)[0][3] == 123980


def test_latency_sample_gives_its_own_stage_and_duration():
    sample = dict(example("latency"), stage="quoted_to_order_sent", instrument_name="BTC-PERPETUAL",
                  start_at=at(1.0), end_at=at(1.0005), duration_us=480)  # a monotonic-clock measurement
    assert stage_samples("latency", sample) == [("BTC-PERPETUAL", "quoted_to_order_sent", 1700000001.0005, 480)]


def test_other_records_are_an_error():
    with pytest.raises(ValueError, match="fill"):
        stage_samples("fill", example("fill"))


def test_stages_follow_one_another():
    # '<from>_to_<to>': each stage starts where the one before ended.
    ends = [s.split("_to_") for s in STAGES]
    assert ends[0][0] == "exchange"
    assert all(before[1] == after[0] for before, after in zip(ends, ends[1:]))
    assert "exchange_to_received" in STAGES
    assert stage_samples("latency", example("latency"))[0][1] in STAGES
