"""The backtest's matching model and queue models on hand-built book updates and trades (app/backtest/matching.py)."""
from __future__ import annotations

import math

import pytest

from app.backtest.matching import ConservativeQueue, MatchingModel, ProbabilisticQueue, queue_model


def model(queue=None) -> MatchingModel:
    venue = MatchingModel(queue or ConservativeQueue(), "BTC-PERPETUAL")
    venue.book(True, [(100.0, 2.0), (99.0, 5.0)], [(101.0, 3.0), (102.0, 4.0)])
    return venue


def test_an_order_joins_behind_the_displayed_amount_and_fills_only_after_it_traded():
    venue = model()
    order = venue.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    assert order.ahead == 2.0
    assert venue.trade(1.0, 100.0, 1.5, "sell") == []  # 0.5 still ahead
    assert order.ahead == pytest.approx(0.5)
    fills = venue.trade(2.0, 100.0, 0.8, "sell")  # 0.5 for those ahead, 0.3 for us
    assert [(o.order_id, amount) for o, amount in fills] == [(order.order_id, pytest.approx(0.3))]
    assert order.status == "partially_filled" and order.remaining == pytest.approx(0.7)
    fills = venue.trade(3.0, 100.0, 5.0, "sell")
    assert fills[0][1] == pytest.approx(0.7) and order.status == "filled"
    assert order.order_id not in venue.orders
    assert [f["amount"] for f in order.fills] == [pytest.approx(0.3), pytest.approx(0.7)]
    assert all(f["maker_taker"] == "maker" and f["price"] == 100.0 for f in order.fills)


def test_a_trade_through_our_price_fills_all_that_is_left():
    venue = model()
    order = venue.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    fills = venue.trade(1.0, 99.0, 0.1, "sell")
    assert fills[0][1] == pytest.approx(1.0) and order.status == "filled"


def test_trades_of_the_same_side_or_away_from_our_price_fill_nothing():
    venue = model()
    bid = venue.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    ask = venue.insert(0.0, 2, "sell", 101.0, 1.0, "bt")
    assert venue.trade(1.0, 100.0, 10.0, "buy") == []  # a buyer does not hit bids
    assert venue.trade(1.0, 100.5, 10.0, "buy") == []  # below our ask
    assert bid.ahead == 2.0 and ask.ahead == 3.0


def test_conservative_queue_ignores_cancellations_but_never_has_more_ahead_than_the_level():
    venue = model()
    order = venue.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    venue.book(False, [(100.0, 1.5)], [])  # 0.5 cancelled: assumed behind us
    assert order.ahead == 1.5
    venue.book(False, [(100.0, 1.2)], [])
    assert order.ahead == pytest.approx(1.2)


def test_a_trade_then_the_book_update_it_caused_is_not_counted_as_a_cancellation():
    venue = model(ProbabilisticQueue())
    order = venue.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    venue.book(False, [(100.0, 3.0)], [])  # someone joins behind us
    venue.trade(1.0, 100.0, 1.0, "sell")
    assert order.ahead == pytest.approx(1.0)
    venue.book(False, [(100.0, 2.0)], [])  # the trade's 1.0 leaves the level: no cancellation
    assert order.ahead == pytest.approx(1.0)


def test_probabilistic_queue_moves_us_up_by_the_expected_share_of_cancellations_ahead():
    venue = model(ProbabilisticQueue(power=2.0))
    venue.book(False, [(100.0, 3.0)], [])
    order = venue.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    venue.book(False, [(100.0, 5.0)], [])  # 3 ahead, 2 behind
    venue.book(False, [(100.0, 4.0)], [])  # 1 cancelled: 9/13 of it ahead
    assert order.ahead == pytest.approx(3.0 - 9.0 / 13.0)
    venue_c = model()
    venue_c.book(False, [(100.0, 3.0)], [])
    other = venue_c.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    venue_c.book(False, [(100.0, 5.0)], [])
    venue_c.book(False, [(100.0, 4.0)], [])
    assert other.ahead == 3.0


def test_a_post_only_order_that_would_cross_is_cancelled_at_once():
    venue = model()
    order = venue.insert(0.0, 1, "buy", 101.0, 1.0, "bt")
    assert (order.status, order.delete_reason) == ("cancelled", "immediate_cancel")
    assert venue.orders == {}


def test_amend_keeps_its_place_only_when_it_lowers_the_amount_at_the_same_price():
    venue = model()
    order = venue.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    venue.trade(1.0, 100.0, 1.5, "sell")
    assert order.ahead == pytest.approx(0.5)
    venue.amend(order.order_id, 100.0, 0.5)
    assert order.ahead == pytest.approx(0.5)
    venue.amend(order.order_id, 100.0, 2.0)  # a larger amount: the back of the queue
    assert order.ahead == 2.0
    venue.amend(order.order_id, 99.0, 2.0)
    assert (order.price, order.ahead) == (99.0, 5.0)


def test_amend_or_cancel_of_an_order_no_longer_resting_is_not_found():
    venue = model()
    order = venue.insert(0.0, 1, "buy", 100.0, 1.0, "bt")
    venue.trade(1.0, 99.0, 1.0, "sell")
    assert venue.amend(order.order_id, 100.0, 1.0) is None
    assert venue.cancel(order.order_id) is None
    other = venue.insert(0.0, 2, "sell", 102.0, 1.0, "bt")
    assert venue.cancel(other.order_id).status == "cancelled" and venue.orders == {}


def test_snapshots_replace_the_book_and_set_the_top():
    venue = model()
    assert (venue.best_bid, venue.best_ask) == (100.0, 101.0)
    venue.book(False, [(100.0, 0.0)], [(100.5, 1.0)])
    assert (venue.best_bid, venue.best_ask) == (99.0, 100.5)
    venue.book(True, [], [(105.0, 1.0)])
    assert math.isnan(venue.best_bid) and venue.best_ask == 105.0 and venue.bids == {}


def test_unknown_queue_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown queue model 'fifo'"):
        queue_model("fifo")
