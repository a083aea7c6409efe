"""Orders earlier sessions left open in the records (app/gateway/leftovers.py): which are gone,
and the status that ends each one, from the venue's trade history. Pure: no venue, no database
(tests/integration/test_session_end_orders.py runs it with real workers).

Also the two small pieces of session bookkeeping around it: the tracker's status listeners
and the closing session's wait for final reports (app/gateway/gateway.py ``_FinalReports``).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone

from app.exchange.rate_limit import TokenBucket
from app.gateway.context import GatewayContext
from app.gateway.gateway import _FinalReports
from app.gateway.leftovers import (
    RECONCILED,
    RecordedOrder,
    closing_status,
    split_leftovers,
    trades_by_order,
    unrecorded_fills,
    unrecorded_trades,
)
from app.gateway.params import GatewayParams
from app.gateway.records import ack_record, fill_record
from app.gateway.tracker import OrderTracker
from app.trading.position import PositionKeeper

BTC = "BTC-PERPETUAL"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def recorded(order_id: str = "o1", *, amount: float = 0.3, filled: float = 0.0, trade_ids=(), **extra) -> RecordedOrder:
    return RecordedOrder(order_id=order_id, instrument_name=BTC, direction="buy", order_type="limit",
                         time_in_force="good_till_cancelled", price=100.0, amount=amount, filled_amount=filled,
                         insert_reason="client_request", persistent=False, create_time=1_767_225_000.5, label="P",
                         client_order_id=7, recorded_trade_ids=frozenset(trade_ids), **extra)


def trade(trade_id: str, amount: float, *, order_id: str = "o1", time: float = 1_767_225_100.0) -> dict:
    """An account Trade (docs/thalex-protocol.md §4.11), the fields the gateway reads."""
    return {"trade_id": trade_id, "order_id": order_id, "instrument_name": BTC, "direction": "buy", "price": 100.0,
            "amount": amount, "time": time, "maker_taker": "maker", "leg_index": 0, "fee": 0.01}


# -- which orders -----------------------------------------------------------------------------

def test_trades_in_no_recorded_fill_are_the_lost_ones_each_once():
    trades = [trade("t1", 0.1), trade("t2", 0.2, order_id="o2"), trade("t3", 0.1, order_id="mine"),
              trade("t4", 0.3, order_id="o3"), trade("t4", 0.3, order_id="o3"), {"order_id": "o9"}, "junk"]
    lost = unrecorded_trades(trades, recorded_trade_ids={"t1"}, skip_orders={"mine"})
    # t1 is recorded, t3 is this session's own to report, t4 comes twice (two pages), the rest is no trade
    assert [t["trade_id"] for t in lost] == ["t2", "t4"]
    assert unrecorded_trades(trades, recorded_trade_ids={"t1", "t2", "t3", "t4"}, skip_orders=()) == []


def test_orders_the_venue_no_longer_holds_are_gone_and_this_sessions_own_are_left_out():
    orders = [recorded("gone"), recorded("resting"), recorded("mine"), recorded("mine-resting")]
    gone, resting = split_leftovers(orders, resting={"resting", "mine-resting", "unknown"},
                                    this_session={"mine", "mine-resting"})
    assert [o.order_id for o in gone] == ["gone"]
    assert [o.order_id for o in resting] == ["resting"]


def test_trades_are_grouped_by_order_and_others_left_out():
    trades = [trade("t1", 0.1), trade("t2", 0.1, order_id="o2"), trade("t3", 0.1, order_id="other"), "junk"]
    by_order = trades_by_order(trades, ["o1", "o2", "o3"])
    assert {k: [t["trade_id"] for t in v] for k, v in by_order.items()} == {"o1": ["t1"], "o2": ["t2"], "o3": []}


# -- the ending --------------------------------------------------------------------------------

def test_an_order_without_trades_ended_cancelled_with_its_session():
    status = closing_status(recorded(), [])
    assert status["status"] == "cancelled" and status["delete_reason"] == "session_end"
    assert status["change_reason"] == RECONCILED
    assert (status["filled_amount"], status["remaining_amount"], status["fills"]) == (0.0, 0.0, [])
    assert status["close_time"] is None  # the venue does not say when it deleted it
    # everything else is the order's, as recorded
    assert (status["order_id"], status["price"], status["amount"], status["label"], status["client_order_id"],
            status["create_time"], status["persistent"]) == ("o1", 100.0, 0.3, "P", 7, 1_767_225_000.5, False)


def test_a_partly_filled_order_ended_cancelled_partially_filled_with_its_new_fills():
    status = closing_status(recorded(filled=0.1, trade_ids={"t1"}), [trade("t1", 0.1), trade("t2", 0.1)])
    assert status["status"] == "cancelled_partially_filled" and status["delete_reason"] == "session_end"
    assert status["filled_amount"] == 0.2
    assert [f["trade_id"] for f in status["fills"]] == ["t2"]  # t1 is recorded already


def test_an_order_the_trades_fill_ended_filled_not_cancelled():
    trades = [trade("t1", 0.1, time=10.0), trade("t2", 0.2, time=12.5)]
    status = closing_status(recorded(), trades)
    assert status["status"] == "filled" and status["delete_reason"] == "filled"
    assert (status["filled_amount"], status["remaining_amount"]) == (0.3, 0.0)
    assert status["close_time"] == 12.5  # the last fill
    assert [f["trade_id"] for f in status["fills"]] == ["t1", "t2"]


def test_a_fill_amount_a_rounding_error_short_of_the_amount_still_fills_it():
    status = closing_status(recorded(amount=0.8), [trade("t1", 0.1), trade("t2", 0.7)])  # 0.1 + 0.7 < 0.8 in floats
    assert status["status"] == "filled" and status["filled_amount"] == 0.8


def test_the_records_fills_count_when_the_trade_history_lags_behind_them():
    status = closing_status(recorded(filled=0.2, trade_ids={"t1", "t2"}), [trade("t1", 0.1)])
    assert status["status"] == "cancelled_partially_filled" and status["filled_amount"] == 0.2
    assert status["fills"] == []


def test_a_trade_listed_twice_counts_once():
    status = closing_status(recorded(), [trade("t1", 0.1), trade("t1", 0.1)])
    assert status["filled_amount"] == 0.1 and [f["trade_id"] for f in status["fills"]] == ["t1"]


def test_unrecorded_fills_are_order_fills_of_the_trades_not_recorded():
    fills = unrecorded_fills(recorded(trade_ids={"t1"}), [trade("t1", 0.1), trade("t2", 0.05, time=11.0)])
    assert fills == [{"trade_id": "t2", "price": 100.0, "amount": 0.05, "maker_taker": "maker", "leg_index": 0,
                      "time": 11.0}]


def test_the_ending_makes_an_ack_and_its_fills_fill_records():
    status = closing_status(recorded(filled=0.1, trade_ids={"t1"}), [trade("t1", 0.1), trade("t2", 0.1)])
    ack = ack_record(status, None, NOW)
    assert (ack.status, ack.change_reason, ack.delete_reason, ack.filled_amount) == \
        ("cancelled_partially_filled", RECONCILED, "session_end", 0.2)
    assert ack.order_sent_at is None and ack.ack_received_at == NOW  # inferred, not answering a request
    [raw] = status["fills"]
    fill = fill_record(raw, status, None, raw["trade_id"], ack.order_id, BTC, ack.direction, NOW)
    assert (fill.trade_id, fill.order_id, fill.amount, fill.client_order_id, fill.time) == \
        ("t2", "o1", 0.1, 7, 1_767_225_100.0)


# -- session bookkeeping -------------------------------------------------------------------------

def test_the_tracker_tells_its_listeners_every_status_and_whether_it_is_final():
    stats = defaultdict(int, errors_by_code=Counter())
    context = GatewayContext(None, GatewayParams(), lambda: 1_767_225_600.0, stats, TokenBucket(8.0, 0.0),
                             TokenBucket(800.0, 0.0))
    tracker = OrderTracker(context, PositionKeeper())
    heard = []
    tracker.status_listeners.append(lambda order_id, final: heard.append((order_id, final)))
    base = {"instrument_name": BTC, "order_type": "limit", "time_in_force": "good_till_cancelled",
            "direction": "buy", "price": 100.0, "amount": 0.2, "filled_amount": 0.0, "fills": [],
            "insert_reason": "client_request", "create_time": 1.0, "persistent": False}
    tracker.on_status({**base, "order_id": "a", "status": "open", "remaining_amount": 0.2, "change_reason": "insert"})
    tracker.on_status({**base, "order_id": "a", "status": "cancelled", "remaining_amount": 0.0,
                       "change_reason": "cancel"})
    tracker.on_status({**base, "order_id": "b", "status": "open", "remaining_amount": 0, "change_reason": "fill"})
    tracker.on_status({**base, "status": "open", "remaining_amount": 0.2, "change_reason": "insert"})  # no order_id
    assert heard == [("a", False), ("a", True), ("b", True)]


def test_a_closing_session_waits_for_each_orders_final_report_once():
    reports = _FinalReports({"a", "b"})
    assert not reports.done.is_set()
    reports.on_status("a", True)
    reports.on_status("c", False)  # an insert answered after the cancel was sent: its deletion follows
    reports.on_status("b", True)
    assert not reports.done.is_set() and reports.waiting == {"c"}
    reports.on_status("c", True)
    reports.on_status("a", False)  # a stale live report of an order already reported final
    assert reports.done.is_set() and reports.waiting == set()
    assert _FinalReports(set()).done.is_set()  # nothing open: nothing to wait for
