"""Markouts of our fills (app/analytics/markouts.py) by example, with numbers worked by hand.
That they do not depend on how fills and tickers interleave: tests/property/test_analytics_markouts.py.
"""
from __future__ import annotations

import io
import math
from typing import Any, Optional

import fastavro
import pytest

from app.analytics.markouts import HISTORY_SECONDS, HORIZONS, MarkoutBook
from models import schemas
from models.examples import example

BOOK_SCHEMA = fastavro.parse_schema(schemas.load("markout_book"))
MARKOUT_SCHEMA = fastavro.parse_schema(schemas.load("markout"))
T = 1_700_000_000.0


def ticker(t: float, mark: float, bid: Optional[float] = None, ask: Optional[float] = None) -> dict[str, Any]:
    return dict(example("ticker"), instrument_name="BTC-PERPETUAL", mark_timestamp=T + t, mark_price=mark,
                best_bid_price=bid, best_ask_price=ask)


def fill(trade_id: str, direction: str, price: float, amount: float, t: float, maker_taker: str = "maker") -> dict:
    return dict(example("fill"), trade_id=trade_id, order_id="o-" + trade_id, instrument_name="BTC-PERPETUAL",
                direction=direction, maker_taker=maker_taker, price=price, amount=amount, time=T + t)


def avro(schema: Any, record: dict) -> dict:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    out.seek(0)
    return fastavro.schemaless_reader(out, schema)


def test_buy_and_sell_markouts_have_opposite_signs():
    book = MarkoutBook("BTC-PERPETUAL")
    assert book.add_fair_value(ticker(0.0, 100.0, 99.0, 101.0)) == []
    assert book.add_fill(fill("b", "buy", 100.0, 0.5, 0.0)) == []
    assert book.add_fill(fill("s", "sell", 100.0, 2.0, 0.0, "taker")) == []
    assert book.add_fair_value(ticker(0.5, 100.5, 100.0, 102.0)) == []   # mid 101
    resolved = book.add_fair_value(ticker(1.2, 101.5, 101.0, 103.0))     # later than 1 s: horizon 1 resolves
    # The fair value at fill + 1 s is the ticker at 0.5 s: mid 101, mark 100.5.
    buy, sell = sorted(resolved, key=lambda r: r["trade_id"])
    assert buy == {
        "trade_id": "b", "order_id": "o-b", "instrument_name": "BTC-PERPETUAL", "direction": "buy",
        "maker_taker": "maker", "price": 100.0, "amount": 0.5, "time": T, "horizon_seconds": 1,
        "mid_after": 101.0, "mark_after": 100.5,
        "markout_bps": 100.0, "markout": 0.5,            # (101 - 100) / 100 * 1e4; 1 * 0.5
        "markout_bps_mark": 50.0, "markout_mark": 0.25,  # (100.5 - 100) / 100 * 1e4; 0.5 * 0.5
    }
    assert (sell["markout_bps"], sell["markout"], sell["markout_bps_mark"], sell["markout_mark"]) == \
        (-100.0, -2.0, -50.0, -1.0)                      # (100 - 101) / 100 * 1e4; -1 * 2; ...
    assert sell["maker_taker"] == "taker"
    assert avro(MARKOUT_SCHEMA, buy) == buy
    assert book.pending_count == 6
    view = book.aggregates()
    assert view["buy"]["1"] == {"count": 1, "markout_bps": 100.0, "markout": 0.5,
                                "count_mark": 1, "markout_bps_mark": 50.0, "markout_mark": 0.25}
    assert view["sell"]["1"]["markout"] == -2.0
    assert view["buy"]["5"]["count"] == 0 and view["buy"]["5"]["markout_bps"] is None
    assert (view["late"], view["pending"]) == (0, 6)


def test_horizon_pending_until_a_later_ticker():
    book = MarkoutBook("BTC-PERPETUAL")
    book.add_fair_value(ticker(0.25, 100.0, 99.0, 101.0))
    book.add_fill(fill("b", "buy", 100.0, 1.0, 0.25))
    assert book.pending_count == 4
    assert book.add_fair_value(ticker(1.15, 110.0, 109.0, 111.0)) == []
    assert book.add_fair_value(ticker(1.25, 120.0, 119.0, 121.0)) == []    # at the horizon: not final yet
    (r,) = book.add_fair_value(ticker(1.28, 130.0, 129.0, 131.0))
    # 1.25 and 1.28 share the 100 ms slot 1.2-1.3 s, so the later replaced the ticker at
    # 1.25; the slot before ends with the ticker at 1.15.
    assert (r["horizon_seconds"], r["mid_after"], r["mark_after"]) == (1, 110.0, 110.0)
    assert r["markout_bps"] == pytest.approx(1000.0)                       # (110 - 100) / 100 * 1e4
    assert book.pending_count == 3
    rs = book.add_fair_value(ticker(61.5, 90.0, 89.0, 91.0))
    assert [(r["horizon_seconds"], r["mid_after"]) for r in rs] == [(5, 130.0), (30, 130.0), (60, 130.0)]
    assert rs[2]["markout_bps"] == pytest.approx(3000.0)                   # (130 - 100) / 100 * 1e4
    assert book.pending_count == 0
    assert book.pending == []


def test_the_same_horizon_resolved_late_gives_the_same_markout():
    on_time, late = MarkoutBook("BTC-PERPETUAL"), MarkoutBook("BTC-PERPETUAL")
    tickers = [ticker(0.25, 100.0, 99.0, 101.0), ticker(1.15, 110.0, 109.0, 111.0),
               ticker(1.25, 120.0, 119.0, 121.0), ticker(1.28, 130.0, 129.0, 131.0)]
    on_time.add_fill(fill("b", "buy", 100.0, 1.0, 0.25))
    for t in tickers:
        resolved = on_time.add_fair_value(t)
        late.add_fair_value(t)
    assert len(resolved) == 1
    assert late.add_fill(fill("b", "buy", 100.0, 1.0, 0.25)) == resolved
    assert late == on_time


def test_late_fill_resolves_from_the_history():
    book = MarkoutBook("BTC-PERPETUAL")
    for i in range(62):                                 # one ticker a second, mid = 100 + i
        book.add_fair_value(ticker(float(i), 100.0 + i, 99.5 + i, 100.5 + i))
    rs = book.add_fill(fill("s", "sell", 103.0, 0.1, 0.5))
    # Horizons at 1.5, 5.5, 30.5, 60.5 s: the tickers at 1, 5, 30, 60 s.
    assert [(r["horizon_seconds"], r["mid_after"]) for r in rs] == [(1, 101.0), (5, 105.0), (30, 130.0), (60, 160.0)]
    assert [r["markout_bps"] for r in rs] == pytest.approx([(103.0 - m) / 103.0 * 1e4 for m in (101, 105, 130, 160)])
    assert rs[0]["markout"] == pytest.approx(0.2)       # (103 - 101) * 0.1
    assert book.pending_count == 0 and book.late == 0


def test_fill_too_late_for_the_history_is_counted_as_late():
    book = MarkoutBook("BTC-PERPETUAL")
    for i in range(201):                                # 0 .. 200 s; the history reaches back to 110 s
        book.add_fair_value(ticker(float(i), 100.0 + i, 99.5 + i, 100.5 + i))
    assert book.times[0] == T + 200 - HISTORY_SECONDS
    assert book.add_fill(fill("a", "buy", 100.0, 1.0, 40.0)) == []        # 41, 45, 70, 100 s: all gone
    assert book.late == 4
    rs = book.add_fill(fill("b", "buy", 100.0, 1.0, 80.0))                 # 81, 85 gone; 110, 140 known
    assert [(r["horizon_seconds"], r["mid_after"]) for r in rs] == [(30, 210.0), (60, 240.0)]
    assert book.late == 6
    assert book.aggregates()["late"] == 6
    assert book.aggregates()["buy"]["1"]["count"] == 0


def test_horizon_before_the_first_ticker_is_late():
    book = MarkoutBook("BTC-PERPETUAL")
    book.add_fill(fill("b", "buy", 100.0, 1.0, 0.0))
    rs = book.add_fair_value(ticker(2.0, 100.0, 99.0, 101.0))
    assert rs == [] and book.late == 1 and book.pending_count == 3


def test_ticker_without_both_sides_has_no_mid():
    book = MarkoutBook("BTC-PERPETUAL")
    book.add_fair_value(ticker(0.0, 100.0, 99.0, None))
    book.add_fair_value(ticker(2.0, 100.0, None, 101.0))
    (r,) = book.add_fill(fill("b", "buy", 99.0, 2.0, 0.0))
    assert (r["mid_after"], r["markout_bps"], r["markout"]) == (None, None, None)
    assert r["markout_mark"] == 2.0                                       # (100 - 99) * 2
    assert avro(MARKOUT_SCHEMA, r) == r
    view = book.aggregates()["buy"]["1"]
    assert (view["count"], view["markout"], view["count_mark"], view["markout_mark"]) == (0, 0.0, 1, 2.0)


def test_history_keeps_the_last_ticker_of_each_slot_and_ignores_older_ones():
    book = MarkoutBook("BTC-PERPETUAL")
    for k in range(1, 10):                              # 0.01 .. 0.09 s: one slot
        book.add_fair_value(ticker(k / 100, 100.0 + k))
    assert book.times == [T + 0.09] and book.marks == [109.0]
    book.add_fair_value(ticker(0.15, 200.0))
    assert book.add_fair_value(ticker(0.12, 300.0)) == []                 # older than 0.15: ignored
    assert book.marks == [109.0, 200.0]
    for i in range(1, 1000):                            # 10 per second for 100 s
        book.add_fair_value(ticker(0.15 + i / 10, 1.0))
    assert len(book.times) <= HISTORY_SECONDS / 0.1 + 2
    # The oldest point is the last one at or before the reach, 90 s behind the newest.
    reach = book.times[-1] - HISTORY_SECONDS
    assert book.times[0] <= reach < book.times[1]


def test_non_finite_input_is_an_error():
    book = MarkoutBook("BTC-PERPETUAL")
    for bad in (ticker(0.0, math.nan), ticker(0.0, 100.0, math.inf, 101.0), ticker(math.inf, 100.0)):
        with pytest.raises(ValueError):
            book.add_fair_value(bad)
    for bad in (fill("x", "buy", math.nan, 1.0, 0.0), fill("x", "buy", 100.0, math.inf, 0.0),
                dict(fill("x", "buy", 100.0, 1.0, 0.0), time=None)):
        with pytest.raises(ValueError):
            book.add_fill(bad)
    assert book == MarkoutBook("BTC-PERPETUAL")


def test_avro_round_trip_carries_on_alike():
    book = MarkoutBook("BTC-PERPETUAL")
    book.add_fair_value(ticker(0.0, 100.0, 99.0, 101.0))
    book.add_fair_value(ticker(0.5, 100.0, None, 101.0))
    book.add_fill(fill("b", "buy", 100.0, 1.0, 0.0))
    book.add_fill(fill("s", "sell", 101.0, 0.3, 0.2, "taker"))
    book.add_fair_value(ticker(1.1, 101.0, 100.0, 102.0))
    book.add_fill(fill("early", "buy", 100.0, 1.0, -100.0))              # late: before every ticker
    book.offsets = {"fill": 12, "ticker": 907}
    back = MarkoutBook.from_record(avro(BOOK_SCHEMA, book.to_record()))
    assert back == book
    assert (back.pending_count, back.late, back.offsets) == (7, 4, {"fill": 12, "ticker": 907})
    later = ticker(70.0, 105.0, 104.0, 106.0)
    assert back.add_fair_value(later) == book.add_fair_value(later)
    assert back == book and back.pending_count == 0
    assert MarkoutBook.from_record(avro(BOOK_SCHEMA, MarkoutBook("X").to_record())) == MarkoutBook("X")


def test_horizons():
    assert HORIZONS == (1, 5, 30, 60)
    assert HISTORY_SECONDS - max(HORIZONS) > 0
