"""The gateway's order tracker (app/gateway/tracker.py): the venue's reports in, state, acks and fills out.

No venue: the tracker is fed OrderStatus dicts as session.orders and request answers carry
them (tests/integration/gateway/ runs the same rules against the simulated venue).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Optional

import pytest

from app.exchange.rate_limit import TokenBucket
from app.gateway.context import GatewayContext
from app.gateway.params import GatewayParams
from app.gateway.tracker import GONE, OrderTracker, TrackedOrder, open_copies
from app.trading.position import PositionKeeper

BTC = "BTC-PERPETUAL"
SENT = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Setup:
    def __init__(self, builders: Optional[dict] = None, **params) -> None:
        self.acks, self.fills = [], []
        self.stats = defaultdict(int, errors_by_code=Counter())
        self.positions = PositionKeeper()
        self.context = GatewayContext(None, GatewayParams(**params), lambda: 1_767_225_600.0, self.stats,
                                      TokenBucket(8.0, 0.0), TokenBucket(800.0, 0.0),
                                      on_ack=self.acks.append, on_fill=self.fills.append)
        self.tracker = OrderTracker(self.context, self.positions, **(builders or {}))

    def order(self, coid: int = 1, direction: str = "buy", level: int = 0, price: float = 100.0,
              amount: float = 0.2) -> TrackedOrder:
        order = TrackedOrder(client_order_id=coid, instrument=BTC, direction=direction, level=level,
                             target_price=price, target_amount=amount, price=price, amount=amount,
                             remaining_amount=amount, order_sent_at=SENT)
        self.tracker.add(order)
        return order


def status(coid=1, *, order_id="o1", status="open", direction="buy", price=100.0, amount=0.2, filled=0.0,
           fills=(), **extra) -> dict:
    """An OrderStatus (docs/thalex-protocol.md §4.10) with every field an Ack needs."""
    return {"order_id": order_id, "client_order_id": coid, "instrument_name": BTC, "order_type": "limit",
            "time_in_force": "good_till_cancelled", "direction": direction, "price": price, "amount": amount,
            "filled_amount": filled, "remaining_amount": round(amount - filled, 10), "status": status,
            "fills": [{"trade_id": t, "price": price, "amount": a, "maker_taker": "maker"} for t, a in fills],
            "change_reason": "fill" if fills else "insert", "insert_reason": "client_request",
            "create_time": 1.0, "persistent": False, **extra}


def test_a_report_replaces_the_state_and_becomes_an_ack_with_the_orders_stamps():
    s = Setup()
    order = s.order()
    s.tracker.on_status(status(price=99.0))
    assert (order.status, order.order_id, order.price, order.target_price) == ("open", "o1", 99.0, 100.0)
    [ack] = s.acks
    assert ack.order_sent_at == SENT and ack.ack_received_at is not None and s.stats["acks"] == 1


def test_an_order_never_goes_backwards():
    s = Setup()
    order = s.order()
    s.tracker.on_status(status(status="partially_filled", filled=0.05, fills=[("t1", 0.05)]))
    s.tracker.on_status(status(status="open", filled=0.0))  # the amend's answer, read after the fill
    assert (order.status, order.filled_amount) == ("partially_filled", 0.05)
    s.tracker.on_status(status(status="cancelled", filled=0.05))
    s.tracker.on_status(status(status="partially_filled", filled=0.05))  # a live state after the final one
    assert (order.status, order.final) == ("cancelled", True)
    assert len(s.acks) == 4  # every report is still recorded


def test_an_order_given_up_on_takes_the_venues_final_report():
    s = Setup()
    order = s.order()
    s.tracker.finish(order, GONE)
    s.tracker.on_status(status(status="filled", filled=0.2, fills=[("t1", 0.2)]))
    assert (order.status, order.filled_amount) == ("filled", 0.2)


def test_each_fill_counts_once_and_goes_into_the_position_keeper_first():
    s = Setup()
    s.order()
    seen = []
    s.context.on_fill = lambda fill: seen.append((fill.trade_id, s.positions.position(BTC)))
    s.tracker.on_status(status(status="partially_filled", filled=0.05, fills=[("t1", 0.05)]))
    s.tracker.on_status(status(status="partially_filled", filled=0.05, fills=[("t1", 0.05)]))  # a snapshot again
    s.tracker.on_status(status(status="filled", filled=0.2, fills=[("t1", 0.05), ("t2", 0.15)]))
    assert seen == [("t1", 0.05), ("t2", 0.2)]
    assert s.stats["fills"] == 2 and s.stats["duplicate_fills"] == 2
    assert s.positions.pnl(BTC, 110.0) == pytest.approx(0.2 * 10.0)


def test_a_self_trade_fills_two_orders_under_one_trade_id():
    s = Setup()
    s.order(1, "buy")
    s.order(2, "sell", price=100.0)
    s.tracker.on_status(status(1, order_id="o1", status="filled", fills=[("t1", 0.2)], filled=0.2))
    s.tracker.on_status(status(2, order_id="o2", direction="sell", status="filled", fills=[("t1", 0.2)], filled=0.2))
    assert [(f.trade_id, f.order_id) for f in s.fills] == [("t1", "o1"), ("t1", "o2")]
    assert s.positions.position(BTC) == 0.0


def test_a_final_order_frees_its_level_and_is_remembered_a_while():
    s = Setup(finished_orders_kept=1)
    first, second = s.order(1), s.order(2, level=1, price=95.0)
    s.tracker.on_status(status(1, status="cancelled"))
    assert s.tracker.slots[(BTC, "buy")] == {1: second} and 1 in s.tracker.orders
    s.tracker.on_status(status(2, order_id="o2", status="cancelled", price=95.0))
    assert s.tracker.slots[(BTC, "buy")] == {} and set(s.tracker.orders) == {2}  # the oldest is forgotten
    assert first.final and s.tracker.live(BTC) == []


def test_a_post_only_order_the_venue_cancelled_is_not_sent_again_at_that_price():
    s = Setup()
    s.order(price=101.0)
    s.tracker.on_status(status(status="cancelled", delete_reason="immediate_cancel", price=101.0))
    assert s.tracker.refused == {(BTC, "buy"): {0: (101.0, 0.2)}} and s.stats["post_only_cancelled"] == 1


def test_reports_the_tracker_cannot_place():
    s = Setup()
    s.tracker.on_status(status(None, order_id="q1"))  # a quote, but no mass-quote mode
    s.tracker.on_status(status(7))  # a client_order_id of no order of ours
    assert s.stats["unknown_orders"] == 2 and len(s.acks) == 2
    taken = []
    s.tracker.quote_handler = lambda report: taken.append(report["order_id"]) or s.order(9)
    s.tracker.on_status(status(None, order_id="q2"))
    assert taken == ["q2"] and s.stats["unknown_orders"] == 2


def test_an_update_an_ack_cannot_be_built_from_still_moves_the_state():
    s = Setup()
    order = s.order()
    report = status(status="filled", filled=0.2)
    del report["order_type"]
    s.tracker.on_status(report)
    assert order.final and s.acks == [] and s.stats["unrecordable_updates"] == 1


def test_a_lost_session_gives_up_on_every_live_order_and_names_the_ones_that_may_rest():
    s = Setup(finished_orders_kept=1)
    old = s.order(1)
    s.tracker.on_status(status(1, status="cancelled"))  # the memory of finished orders is full
    resting, unanswered = s.order(2, level=0), s.order(3, level=1, price=95.0)
    s.tracker.on_status(status(2, order_id="o2"))
    assert s.tracker.session_lost() == ["o2"]  # the pending one has no order_id to cancel by
    assert resting.status == unanswered.status == GONE and s.tracker.slots == {}
    assert old.final and s.tracker.live(BTC) == []


def test_open_copies_are_bids_first_by_level_and_copies():
    s = Setup()
    orders = [s.order(1, "sell", 1, 106.0), s.order(2, "buy", 1, 95.0), s.order(3, "sell", 0, 105.0),
              s.order(4, "buy", 0, 100.0)]
    copies = open_copies(orders)
    assert [(o.direction, o.level) for o in copies] == [("buy", 0), ("buy", 1), ("sell", 0), ("sell", 1)]
    assert all(c is not o for c in copies for o in orders)


def test_the_record_builders_can_be_replaced_and_the_tracker_reads_nothing_of_their_records():
    built = []

    def ack_builder(report, order, ack_received_at):
        built.append(("ack", report["order_id"], order.client_order_id, ack_received_at.timestamp()))
        return "an ack"

    def fill_builder(raw, report, order, trade_id, order_id, instrument, direction, ack_received_at):
        built.append(("fill", trade_id, order_id, instrument, direction))
        return "a fill"

    s = Setup({"ack_builder": ack_builder, "fill_builder": fill_builder})
    s.order()
    heard = []
    s.tracker.fill_listeners.append(lambda *fill: heard.append(fill))
    s.tracker.on_status(status(status="partially_filled", filled=0.05, fills=[("t1", 0.05)]))
    assert built == [("ack", "o1", 1, 1_767_225_600.0), ("fill", "t1", "o1", BTC, "buy")]
    assert s.acks == ["an ack"] and s.fills == ["a fill"]
    # The position and the listeners get the fill from the venue's report.
    assert s.positions.position(BTC) == 0.05 and heard == [(BTC, "buy", 0.05)]


def test_a_fill_without_a_price_is_unrecordable_whatever_builds_the_record():
    s = Setup({"ack_builder": lambda *args: "an ack", "fill_builder": lambda *args: "a fill"})
    s.order()
    report = status(status="partially_filled", filled=0.05, fills=[("t1", 0.05)])
    del report["fills"][0]["price"]
    s.tracker.on_status(report)
    assert s.acks == ["an ack"] and s.fills == [] and s.positions.position(BTC) == 0.0
    assert s.stats["unrecordable_updates"] == 1
