"""A replay is a function of its input: the same recording and settings give the same report."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from app.backtest.data import InstrumentInfo, build
from app.backtest.latency import ConstantLatency
from app.backtest.report import to_json
from app.backtest.run import Backtest, run_one
from tests.backtest_data import T0, tables

INFO = InstrumentInfo("BTC-PERPETUAL", "BTCUSD", 1.0, 0.001)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), half_spread=st.sampled_from([3.0, 10.0, 25.0]),
       queue=st.sampled_from(["conservative", "probabilistic"]), order_ms=st.sampled_from([0.0, 5.0, 200.0]))
def test_same_input_same_report(seed, half_spread, queue, order_ms):
    t = tables(seconds=20.0, seed=seed)
    backtest = Backtest(queue_model=queue, latency=ConstantLatency(0.002, order_ms / 1e3)).with_overrides(
        {"half_spread": half_spread})

    def report():
        data = build(INFO, T0, T0 + 20, t["tickers"], t["index_prices"], t["book_updates"], t["public_trades"],
                     book_depth="full", source="test")
        return to_json(run_one(data, backtest), {})

    first, second = report(), report()
    assert first == second
    assert first["summary"]["fills"] == len(first["fills"])


prices = st.integers(90, 110).map(float)
levels = st.lists(st.tuples(prices, st.sampled_from([0.0, 0.5, 1.0, 2.0])), max_size=6)


@settings(max_examples=200, deadline=None)
@given(updates=st.lists(st.tuples(st.booleans(), levels, levels), min_size=1, max_size=30))
def test_the_matching_book_and_its_top_follow_the_updates(updates):
    from app.backtest.matching import ConservativeQueue, MatchingModel

    venue = MatchingModel(ConservativeQueue(), "X")
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for snapshot, bid_levels, ask_levels in updates:
        venue.book(snapshot, bid_levels, ask_levels)
        for book, changes in ((bids, bid_levels), (asks, ask_levels)):
            if snapshot:
                book.clear()
            for price, amount in changes:
                if amount > 0:
                    book[price] = amount
                else:
                    book.pop(price, None)
        assert venue.bids == bids and venue.asks == asks
        assert (venue.best_bid == max(bids)) if bids else venue.best_bid != venue.best_bid
        assert (venue.best_ask == min(asks)) if asks else venue.best_ask != venue.best_ask


@settings(max_examples=200, deadline=None)
@given(joined=st.sampled_from([0.0, 1.0, 3.0]), trades=st.lists(st.sampled_from([0.1, 0.5, 1.0, 2.0]), max_size=8))
def test_conservative_fills_are_what_traded_past_the_queue_and_never_more_than_the_order(joined, trades):
    from app.backtest.matching import ConservativeQueue, MatchingModel

    venue = MatchingModel(ConservativeQueue(), "X")
    venue.book(True, [(100.0, joined)] if joined else [], [(101.0, 1.0)])
    order = venue.insert(0.0, 1, "buy", 100.0, 1.5, "bt")
    filled = sum(amount for trade in trades for _o, amount in venue.trade(1.0, 100.0, trade, "sell"))
    assert abs(filled - min(1.5, max(0.0, sum(trades) - joined))) < 1e-9
    assert abs(order.filled - filled) < 1e-9
