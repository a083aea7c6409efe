"""The fidelity check's parts on a hand-built session (app/backtest/fidelity.py): our own resting amount out of
the recorded book, our own fills found among the public trades, the requests' venue times, the comparison."""
from __future__ import annotations

import pytest

from app.backtest import fidelity
from app.backtest.data import BOOK, TRADE, InstrumentInfo, build

INFO = InstrumentInfo("BTC-PERPETUAL", "BTCUSD", 1.0, 0.001)


def book(t: float, bids, asks=(), snapshot=False) -> dict:
    return {"time": t, "received_at": t, "snapshot": snapshot, "bid_prices": [p for p, _ in bids],
            "bid_amounts": [a for _, a in bids], "ask_prices": [p for p, _ in asks], "ask_amounts": [a for _, a in asks]}


def ack(t, reason, status, price, amount, filled, remaining, *, sent, create=1.0, close=None) -> dict:
    return {"time": t, "order_id": "o1", "instrument_name": "BTC-PERPETUAL", "change_reason": reason,
            "status": status, "direction": "buy", "price": price, "amount": amount, "filled_amount": filled,
            "remaining_amount": remaining, "delete_reason": None, "create_time": create, "close_time": close,
            "order_sent_at": sent}


def session_and_data():
    """2.0 of others rest at 100; we join behind them with 0.5 at t=1 (the book shows 2.5) and amend
    it up to 0.6 at t=1.5 (to the back of the queue: behind the same 2.0; the book shows 2.6); a
    taker sells 2.3 at t=2 (2.0 to the others, 0.3 to us: the book shows our 0.3 left); we cancel at t=3."""
    books = [book(0.0, [(100.0, 2.0)], [(101.0, 3.0)], snapshot=True), book(1.0, [(100.0, 2.5)]),
             book(1.5, [(100.0, 2.6)]), book(2.0, [(100.0, 0.3)]), book(3.0, [(100.0, 0.0)])]
    trades = [{"time": 2.0, "price": 100.0, "amount": 2.0, "direction": "sell"},
              {"time": 2.0, "price": 100.0, "amount": 0.3, "direction": "sell"}]
    data = build(INFO, 0.0, 10.0, [], [], books, trades, book_depth="full", source="hand-built")
    acks = [ack(1.001, "insert", "open", 100.0, 0.5, 0.0, 0.5, sent=0.999),
            ack(1.502, "amend", "open", 100.0, 0.6, 0.0, 0.6, sent=1.499),
            ack(2.001, "fill", "partially_filled", 100.0, 0.6, 0.3, 0.3, sent=1.499),
            ack(3.001, "cancel", "cancelled_partially_filled", 100.0, 0.6, 0.3, 0.0, sent=2.999, close=3.0)]
    fills = [{"time": 2.0, "trade_id": "t1", "order_id": "o1", "instrument_name": "BTC-PERPETUAL",
              "direction": "buy", "price": 100.0, "amount": 0.3}]
    return fidelity.LiveSession(acks, fills), data


def test_the_trades_of_one_instant_come_before_its_book_levels():
    _, data = session_and_data()
    at_two = [e[1] for e in data.events if e[0] == 2.0]
    assert at_two == [TRADE, TRADE, BOOK]


def test_requests_are_timed_by_the_venue_s_clock():
    session, data = session_and_data()
    assert [(r.kind, r.time, r.timed_by) for r in fidelity.requests(session, data)] == [
        ("insert", 1.0, "create_time"), ("amend", 1.5, "book"), ("cancel", 3.0, "close_time")]


def test_our_resting_amount_leaves_the_book_and_our_fill_is_found_among_the_trades():
    session, data = session_and_data()
    reqs = fidelity.requests(session, data)
    assert fidelity.own_book(session, reqs) == [
        (1.0, "buy", 100.0, 0.5), (1.5, "buy", 100.0, -0.5), (1.5, "buy", 100.0, 0.6),
        (2.0, "buy", 100.0, pytest.approx(-0.3)), (3.0, "buy", 100.0, pytest.approx(-0.3))]
    ours = fidelity.own_trades_of(session, data)
    assert [data.events[i][4] for i in ours] == [0.3]  # the 0.3 trade, not the 2.0 one
    events, stats = fidelity.market_without_us(data, session, reqs)
    levels = [(e[0], e[4]) for e in events if e[1] == BOOK]
    assert levels == [(0.0, [(100.0, 2.0)]), (1.0, [(100.0, 2.0)]), (1.5, [(100.0, pytest.approx(2.0))]),
                      (2.0, [(100.0, pytest.approx(0.0))]), (3.0, [(100.0, 0.0)])]
    assert stats["own_trades_found"] == 1 and stats["levels_corrected"] == 3
    # kept as the taker's flow (one instant, one price: in the replay's tie order, the smaller first)
    assert [e[4] for e in events if e[1] == TRADE] == [0.3, 2.0]
    removed, stats = fidelity.market_without_us(data, session, reqs, own_trades="removed")
    assert [e[4] for e in removed if e[1] == TRADE] == [2.0] and stats["own_trades_removed"] == 1


@pytest.mark.parametrize("model", ["conservative", "probabilistic"])
def test_the_replay_reproduces_the_fill_only_without_our_own_amount_ahead_of_us(model):
    session, data = session_and_data()
    report = fidelity.check(data, session, models=[model])
    result = report.models[model]
    assert result["reproduced"] == 1 and result["extra"] == 0 and result["mean_offset_s"] == 0.0
    assert result["fills"] == [{"order_id": "o1", "time": 2.0, "price": 100.0, "amount": pytest.approx(0.3),
                                "direction": "buy"}]
    # The recorded book as it is puts the amended order behind our own 0.5: 2.5 ahead, the 2.3 sold misses us.
    from app.backtest.matching import queue_model
    raw = fidelity.replay_orders(data.events, fidelity.requests(session, data), queue_model(model), INFO.name)
    assert raw == []
    # Without the taker volume that traded with us, nothing reaches us either.
    assert fidelity.check(data, session, own_trades="removed", models=[model]).models[model]["reproduced"] == 0


def test_an_amend_is_timed_by_the_book_notification_that_shows_it():
    session, data = session_and_data()
    books = [book(0.0, [(100.0, 2.0)], [(101.0, 3.0)], snapshot=True), book(1.0, [(100.0, 2.5)]),
             book(1.5, [(100.0, 2.0), (99.0, 0.5)])]
    data = build(INFO, 0.0, 10.0, [], [], books, [], book_depth="full", source="hand-built")
    session = fidelity.LiveSession([ack(1.001, "insert", "open", 100.0, 0.5, 0.0, 0.5, sent=0.999),
                                    ack(1.502, "amend", "open", 99.0, 0.5, 0.0, 0.5, sent=1.499),
                                    ack(1.503, "amend", "open", 99.0, 0.5, 0.0, 0.5, sent=1.499)], [])
    reqs = fidelity.requests(session, data)
    assert [(r.kind, r.time, r.price, r.timed_by) for r in reqs] == [("insert", 1.0, 100.0, "create_time"),
                                                                     ("amend", 1.5, 99.0, "book")]
    events, _ = fidelity.market_without_us(data, session, reqs)
    assert [e[4] for e in events if e[1] == BOOK][-1] == [(100.0, 2.0), (99.0, 0.0)]


def test_compare_matches_by_order_then_time_one_to_one():
    live = [{"order_id": "a", "time": 1.0, "amount": 0.1}, {"order_id": "a", "time": 5.0, "amount": 0.1},
            {"order_id": "b", "time": 2.0, "amount": 0.2}]
    replayed = [{"order_id": "a", "time": 1.2, "amount": 0.05}, {"order_id": "b", "time": 9.0, "amount": 0.2},
                {"order_id": "c", "time": 2.0, "amount": 0.2}]
    result = fidelity.compare(live, replayed, tolerance_s=1.0)
    assert result["matches"] == [0, None, None]
    assert (result["reproduced"], result["missed"], result["extra"]) == (1, 2, 2)
    assert result["reproduced_amount"] == pytest.approx(0.05) and result["mean_offset_s"] == pytest.approx(0.2)


def test_the_trades_of_one_instant_replay_in_one_order_whatever_order_they_were_read_in():
    """The database and a dataset return the trades of one instant in no fixed order: the
    replay's order must not depend on it (a backtest from either gave different fills)."""
    sweep = [{"time": 5.0, "price": p, "amount": 0.1, "direction": "buy"} for p in (101.0, 100.0, 102.0)] + \
            [{"time": 5.0, "price": p, "amount": 0.2, "direction": "sell"} for p in (98.0, 99.0)]
    orders = [build(INFO, 0.0, 10.0, [], [], [], rows, book_depth="full", source="hand-built").events
              for rows in (sweep, list(reversed(sweep)), sweep[2:] + sweep[:2])]
    assert orders[0] == orders[1] == orders[2]
    assert [(e[5], e[3]) for e in orders[0]] == [("buy", 100.0), ("buy", 101.0), ("buy", 102.0),
                                                 ("sell", 99.0), ("sell", 98.0)]  # each sweep away from the touch
