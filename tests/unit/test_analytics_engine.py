"""The analytics engine (app/analytics/engine.py) over tables in dicts: routing, redeliveries,
one write per key and batch, snapshots, refusals. The live agent runs the same engine over
Faust tables (tests/integration/test_analytics.py)."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from app.analytics.config import AnalyticsConfig
from app.analytics.engine import TABLES, AnalyticsEngine, Event, LocalTable, local_tables, window_range
from models import examples

UTC = timezone.utc
T0 = 1_796_284_800.0  # a whole minute
BTC = "BTC-PERPETUAL"


class CountingTable(LocalTable):
    def __init__(self, name, window=None):
        super().__init__(name, window)
        self.writes = 0

    def write(self, key, record, partition):
        self.writes += 1
        super().write(key, record, partition)


def _engine(**config):
    tables = {spec.name: CountingTable(spec.name, spec.window) for spec in TABLES}
    published, refused = [], []
    engine = AnalyticsEngine([BTC], AnalyticsConfig(**config), tables,
                             publish=lambda name, key, value: published.append((name, key, value)),
                             refuse=lambda event, reason, error: refused.append((event.offset, reason, error)))
    return engine, tables, published, refused


def _ticker(t: float, mark: float, bid: float = None, ask: float = None) -> dict:
    return {**examples.example("ticker"), "instrument_name": BTC, "mark_timestamp": t, "mark_price": mark,
            "best_bid_price": bid if bid is not None else mark - 5, "best_ask_price": ask if ask is not None else mark + 5,
            "received_at": datetime.fromtimestamp(t + 0.002, UTC)}


def _fill(t: float, trade_id: str, direction: str, price: float, amount: float, maker_taker: str = "maker") -> dict:
    return {**examples.example("fill"), "instrument_name": BTC, "trade_id": trade_id, "order_id": f"o-{trade_id}",
            "direction": direction, "price": price, "amount": amount, "maker_taker": maker_taker, "time": t}


def test_a_redelivered_batch_changes_nothing():
    engine, tables, published, _ = _engine()
    batch = [Event("ticker", 0, 10, _ticker(T0 + 1, 100_000.0)),
             Event("fill", 0, 3, _fill(T0 + 1.5, "t1", "buy", 100_000.0, 0.2)),
             Event("fill", 0, 4, _fill(T0 + 2.0, "t2", "sell", 100_100.0, 0.1, "taker")),
             Event("ticker", 0, 11, _ticker(T0 + 2.5, 100_050.0))]
    engine.apply(batch)
    before = {name: dict(table.data) for name, table in tables.items()}
    count = len(published)
    engine.apply(batch)  # after a crash: the same events again
    assert {name: dict(table.data) for name, table in tables.items()} == before
    assert len(published) == count
    assert engine.stats.redelivered["fill"] == 2 and engine.stats.redelivered["ticker"] >= 2
    position = tables["position_pnl"].data[BTC]
    assert round(position["position"], 9) == 0.1
    assert math.isclose(position["realized_pnl"], 0.1 * 100.0)  # closed 0.1 bought at 100,000 for 100,100
    assert math.isclose(position["fees_maker"], 100_000.0 * 0.2 * 0.0001)
    assert math.isclose(position["fees_taker"], 100_100.0 * 0.1 * 0.0005)
    assert position["offsets"] == {"ticker": 11, "fill": 4}


def test_a_trade_twice_on_the_topic_is_booked_once():
    engine, tables, published, _ = _engine()
    first = [Event("ticker", 0, 10, _ticker(T0 + 1, 100_000.0)),
             Event("fill", 0, 3, _fill(T0 + 1.5, "t1", "buy", 100_000.0, 0.2))]
    engine.apply(first)
    once = {name: dict(table.data) for name, table in tables.items() if name != "position_pnl"}
    # The same trade at a later offset (a producer's retry, or recorded again when a session opened),
    # then a new fill: the copy changes nothing, in any table; the new fill is booked.
    engine.apply([Event("fill", 0, 9, _fill(T0 + 1.5, "t1", "buy", 100_000.0, 0.2))])
    assert {name: dict(table.data) for name, table in tables.items() if name != "position_pnl"} == once
    assert engine.stats.duplicate_fills == 1 and not engine.stats.redelivered["fill"]
    engine.apply([Event("fill", 0, 12, _fill(T0 + 3.0, "t2", "buy", 100_010.0, 0.1))])
    position = tables["position_pnl"].data[BTC]
    assert (round(position["position"], 9), position["trades"]) == (0.3, 2)
    assert position["fill_offsets"] == {"t1": 3, "t2": 12}
    # The first copy redelivered after a crash is a redelivery (same offset), not a duplicate.
    engine.apply(first)
    assert engine.stats.duplicate_fills == 1 and engine.stats.redelivered["fill"] == 1
    assert round(tables["position_pnl"].data[BTC]["position"], 9) == 0.3


def test_a_position_remembers_its_latest_fills_only():
    from app.analytics.positions import FILLS_REMEMBERED, PositionState

    state = PositionState(BTC)
    for n in range(FILLS_REMEMBERED + 3):
        state.remember_fill(f"t{n}", 100 + n)
    assert len(state.fill_offsets) == FILLS_REMEMBERED and next(iter(state.fill_offsets)) == "t3"
    # through the record and back, in whatever order the map comes: oldest still first
    record = state.to_record()
    record["fill_offsets"] = dict(reversed(list(record["fill_offsets"].items())))
    again = PositionState.from_record(record)
    assert list(again.fill_offsets) == list(state.fill_offsets)
    assert again.duplicate_fill("t5", 999) and not again.duplicate_fill("t5", 105) and not again.duplicate_fill("t0", 1)


def test_an_event_for_a_window_expired_when_its_record_was_produced_is_left_out_of_it():
    engine, tables, _, _ = _engine(minute_windows_kept=3600.0, second_windows_kept=600.0)
    produced = T0 + 7200.0
    old = _ticker(T0 + 1, 100_000.0)  # mark and received_at two hours before the record was produced
    engine.apply([Event("ticker", 0, 10, old, timestamp=produced)])
    assert not tables["mark_candles_1m"].data and not tables["mark_candles_1s"].data
    assert not tables["stage_latency_1m"].data
    assert engine.stats.late == {"mark_candles_1s": 1, "mark_candles_1m": 1, "stage_latency_1m": 1}
    assert tables["position_pnl"].data[BTC]["mark_price"] == 100_000.0  # no window: taken as ever
    # Within the time kept, or with no record time (a replay), it counts.
    engine.apply([Event("ticker", 0, 11, _ticker(T0 + 2, 100_001.0), timestamp=T0 + 3000.0),
                  Event("ticker", 0, 12, _ticker(T0 + 3, 100_002.0))])
    assert tables["mark_candles_1m"].data[(BTC, window_range(T0, 60.0))]["count"] == 2
    assert tables["mark_candles_1s"].data.keys() == {(BTC, window_range(T0 + 3, 1.0))}  # 1-s windows: 600 s only


def test_each_key_is_written_once_per_batch():
    engine, tables, _, _ = _engine()
    events = [Event("ticker", 0, n, _ticker(T0 + n * 0.01, 100_000.0 + n)) for n in range(200)]
    engine.apply(events)
    # 200 ticks within 2 s: one position, one markout book, two 1-s mark candles, one 1-min candle.
    assert tables["position_pnl"].writes == 1
    assert tables["markouts"].writes == 1
    assert tables["mark_candles_1s"].writes == 2
    assert tables["mark_candles_1m"].writes == 1
    candle = tables["mark_candles_1m"].data[(BTC, window_range(T0, 60.0))]
    assert (candle["open"], candle["high"], candle["low"], candle["close"], candle["count"]) == \
        (100_000.0, 100_199.0, 100_000.0, 100_199.0, 200)


def test_a_pnl_snapshot_per_minute_and_quality_after_the_grace():
    engine, tables, published, _ = _engine(snapshot_grace=2.0)
    quote = {**examples.example("quote"), "instrument_name": BTC, "quoted_at": datetime.fromtimestamp(T0 + 10, UTC),
             "fair_value": 100_000.0, "position": 0.0,
             "bids": [{"price": 99_990.0, "amount": 0.2}], "asks": [{"price": 100_010.0, "amount": 0.2}]}
    engine.apply([Event("ticker", 0, 1, _ticker(T0 + 5, 100_000.0)), Event("quote", 0, 1, quote)])
    assert [p[0] for p in published] == []
    engine.apply([Event("ticker", 0, 2, _ticker(T0 + 61, 100_010.0))])  # the next minute: PnL snapshot of the first
    snapshots = [p for p in published if p[0] == "pnl_snapshot"]
    assert len(snapshots) == 1 and snapshots[0][2]["time"] == datetime.fromtimestamp(T0 + 60, UTC)
    assert snapshots[0][2]["mark_price"] == 100_000.0  # the state as the minute ended
    later = {**quote, "quoted_at": datetime.fromtimestamp(T0 + 61, UTC)}
    engine.apply([Event("quote", 0, 2, later)])  # 1 s after the minute: within the grace
    assert not [p for p in published if p[0] == "quote_quality"]
    engine.apply([Event("quote", 0, 3, {**quote, "quoted_at": datetime.fromtimestamp(T0 + 62.5, UTC)})])
    quality = [p[2] for p in published if p[0] == "quote_quality"]
    assert len(quality) == 1 and quality[0]["time"] == datetime.fromtimestamp(T0, UTC)
    assert quality[0]["mean_spread"] == 20.0
    engine.apply([Event("quote", 0, 4, {**quote, "quoted_at": datetime.fromtimestamp(T0 + 30, UTC)})])  # late
    engine.apply([Event("quote", 0, 5, {**quote, "quoted_at": datetime.fromtimestamp(T0 + 130, UTC)})])
    first_minute = [p[2] for p in published if p[0] == "quote_quality" and p[2]["time"] == datetime.fromtimestamp(T0, UTC)]
    assert len(first_minute) == 1, "a minute's snapshot is published once"


def test_markouts_resolve_at_their_horizons():
    engine, tables, published, _ = _engine()
    engine.apply([Event("ticker", 0, 1, _ticker(T0, 100_000.0)),
                  Event("fill", 0, 1, _fill(T0 + 0.5, "t1", "buy", 100_000.0, 0.1))])
    engine.apply([Event("ticker", 0, n, _ticker(T0 + n * 0.5, 100_000.0 + 10 * n)) for n in range(2, 16)])
    markouts = [p[2] for p in published if p[0] == "markout"]
    assert [m["horizon_seconds"] for m in markouts] == [1, 5]  # 30 and 60 s are pending, not zero
    one = markouts[0]
    # At 1.5 s the mid is 100,030: bought at 100,000, +30 per unit, +3 bps.
    assert math.isclose(one["markout"], 30 * 0.1) and math.isclose(one["markout_bps"], 3.0)


@pytest.mark.parametrize("event,reason", [
    (Event("ticker", 0, 1, {**examples.example("ticker"), "instrument_name": "XRP-PERPETUAL"}), "unknown instrument"),
    (Event("fill", 0, 1, {**examples.example("fill"), "instrument_name": BTC, "price": math.nan}), "non-finite price"),
    (Event("quote", 0, 1, {**examples.example("quote"), "instrument_name": BTC,
                           "bids": [{"price": math.inf, "amount": 0.1}]}), "non-finite bids.price"),
    (Event("fill", 0, 1, {**examples.example("fill"), "instrument_name": BTC, "amount": -1.0}), "refused fill"),
    # What the database refuses (positive_float8 prices), the tables refuse too.
    (Event("ticker", 0, 1, {**examples.example("ticker"), "instrument_name": BTC, "mark_price": -1.0}),
     "non-positive mark_price"),
    (Event("trade", 0, 1, {**examples.example("trade"), "instrument_name": BTC, "price": 0.0}), "non-positive price"),
])
def test_bad_input_is_refused_and_nothing_else_is_lost(event, reason):
    engine, tables, _, refused = _engine()
    good = Event("fill", 0, 2, _fill(T0, "t9", "buy", 100_000.0, 0.3))
    engine.apply([event, good])
    assert [r[1] for r in refused] == [reason]
    assert refused[0][0] == event.offset
    assert round(tables["position_pnl"].data[BTC]["position"], 9) == 0.3
    assert engine.stats.refused[reason] == 1 and engine.stats.applied["fill"] == 1


def test_local_windows_are_fausts():
    from faust.windows import TumblingWindow

    for size in (1.0, 60.0):
        for t in (T0, T0 + 0.05, T0 + 59.999, T0 - 0.5):
            assert window_range(t, size) == TumblingWindow(size).ranges(t)[0]
    assert set(local_tables()) == {spec.name for spec in TABLES}
