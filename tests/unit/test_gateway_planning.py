"""The gateway's planning (app/gateway/planning.py): each rule of what to send, and a reconcile's plan, without a venue."""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from app.exchange.rate_limit import TokenBucket
from app.gateway.context import GatewayContext
from app.gateway.params import GatewayParams
from app.gateway.planning import (
    Amend,
    Cancel,
    Insert,
    added_exposure,
    desired_levels,
    fit_side,
    held_side,
    merge,
    order_exposure,
    plan_reconcile,
    plan_side,
    pre_trade_check,
    side_exposure,
    within_threshold,
)
from app.gateway.tracker import PENDING, OrderTracker, TrackedOrder
from app.trading.position import PositionKeeper

BTC = "BTC-PERPETUAL"
TICK = 1.0
THRESHOLD = 5.0


def order(direction: str = "buy", level: int = 0, price: float = 100.0, amount: float = 0.2, *,
          status: str = "open", filled: float = 0.0, remaining: float = None, in_flight: str = None,
          target_amount: float = None) -> TrackedOrder:
    """An order as the tracker holds it once the venue reported it."""
    target_amount = amount if target_amount is None else target_amount
    return TrackedOrder(client_order_id=level + (100 if direction == "sell" else 1), instrument=BTC,
                        direction=direction, level=level, target_price=price, target_amount=target_amount,
                        price=price, amount=amount, filled_amount=filled,
                        remaining_amount=amount - filled if remaining is None else remaining, status=status,
                        in_flight=in_flight)


def plan(desired, slots=None, refused=None, direction="buy"):
    return plan_side(direction, desired, slots or {}, refused or {}, TICK, THRESHOLD)


# -- the desired ladder and the threshold ---------------------------------------------------

def test_levels_without_an_amount_are_absent():
    assert desired_levels([(100, 0.2), (99, 0.0), (98, -1), (97, 1)]) == [(100.0, 0.2), (97.0, 1.0)]
    assert all(isinstance(x, float) for level in desired_levels([(100, 1)]) for x in level)


def test_the_threshold_is_in_ticks_and_exactly_on_it_is_within():
    assert within_threshold(105.0, 100.0, 1.0, 5.0) and within_threshold(95.0, 100.0, 1.0, 5.0)
    assert not within_threshold(105.5, 100.0, 1.0, 5.0)
    assert within_threshold(100.5, 100.0, 0.1, 5.0) and not within_threshold(100.6, 100.0, 0.1, 5.0)
    assert within_threshold(100.0, 100.0, 1.0, 0.0) and not within_threshold(101.0, 100.0, 1.0, 0.0)


# -- order mode: one side ---------------------------------------------------------------------

def test_an_empty_side_gets_an_insert_per_level():
    got = plan([(100.0, 0.2), (95.0, 0.4)])
    assert got.cancels == [] and got.in_flight == got.refused == 0 and got.retried == []
    assert got.changes == [(0, Insert("buy", 0, 100.0, 0.2)), (1, Insert("buy", 1, 95.0, 0.4))]


def test_an_order_is_amended_only_beyond_the_threshold_or_for_a_new_amount():
    resting = {0: order(price=100.0, amount=0.2)}
    for price in (100.0, 103.0, 105.0, 95.0):
        assert plan([(price, 0.2)], resting).changes == []
    assert plan([(106.0, 0.2)], resting).changes == [(0, Amend(resting[0], 106.0, 0.2))]
    assert plan([(100.0, 0.3)], resting).changes == [(0, Amend(resting[0], 100.0, 0.3))]
    assert plan([(100.0, 0.2 + 1e-13)], resting).changes == []  # float noise is the same amount


def test_the_threshold_is_measured_from_the_target_not_the_venues_price():
    # Post-only: the venue moved the bid inside the book; its target has not moved, so nothing is sent.
    moved_by_venue = order(price=95.0)
    moved_by_venue.target_price = 110.0
    assert plan([(110.0, 0.2)], {0: moved_by_venue}).changes == []


def test_orders_beyond_the_ladder_are_cancelled():
    slots = {0: order(level=0), 1: order(level=1, price=95.0), 2: order(level=2, price=90.0)}
    got = plan([(100.0, 0.2)], slots)
    assert got.cancels == [Cancel(slots[1]), Cancel(slots[2])] and got.changes == []
    assert plan([], slots).cancels == [Cancel(slots[0]), Cancel(slots[1]), Cancel(slots[2])]


def test_an_order_with_a_request_in_flight_is_left_alone():
    busy = order(in_flight="private/amend")
    got = plan([(120.0, 0.2)], {0: busy})
    assert got.changes == [] and got.cancels == [] and got.in_flight == 1
    got = plan([], {0: busy})  # even its cancel waits
    assert got.cancels == [] and got.in_flight == 1


def test_a_pending_order_is_cancelled_to_find_out_whether_it_exists():
    unanswered = order(status=PENDING)
    got = plan([(120.0, 0.2)], {0: unanswered})
    assert got.cancels == [Cancel(unanswered)] and got.changes == []


def test_a_refused_level_waits_for_a_new_target():
    got = plan([(100.5, 0.2)], refused={0: (100.5, 0.2)})
    assert got.changes == [] and got.refused == 1 and got.retried == []
    got = plan([(100.0, 0.2)], refused={0: (100.5, 0.2)})
    assert got.changes == [(0, Insert("buy", 0, 100.0, 0.2))] and got.refused == 0 and got.retried == [0]


def test_cancels_go_first_then_level_by_level_bid_and_ask_alternating():
    old_bid, old_ask = order("buy", 2, 90.0), order("sell", 2, 120.0)
    bids = plan([(100.0, 0.2), (95.0, 0.4)], {2: old_bid})
    asks = plan([(110.0, 0.2), (115.0, 0.4)], {2: old_ask}, direction="sell")
    assert merge(bids, asks) == [Cancel(old_bid), Cancel(old_ask),
                                 Insert("buy", 0, 100.0, 0.2), Insert("sell", 0, 110.0, 0.2),
                                 Insert("buy", 1, 95.0, 0.4), Insert("sell", 1, 115.0, 0.4)]


# -- order mode: the pre-trade check --------------------------------------------------------

def test_what_a_live_order_could_fill_is_the_larger_of_what_rests_and_what_was_asked():
    assert order_exposure(order(amount=0.4, filled=0.1)) == pytest.approx(0.3)
    # An amend down to 0.1 is in flight: the order may still fill its old 0.4.
    assert order_exposure(order(amount=0.4, target_amount=0.1)) == pytest.approx(0.4)
    # An amend up to 0.6 is in flight: it may already rest at 0.6.
    assert order_exposure(order(amount=0.4, target_amount=0.6)) == pytest.approx(0.6)
    assert order_exposure(order(amount=0.4, filled=0.4, remaining=0.0)) == 0.0
    assert side_exposure([order("buy"), order("buy", 1, amount=0.4), order("sell")]) == \
        pytest.approx({"buy": 0.6, "sell": 0.2})


def test_an_insert_adds_its_amount_and_an_amend_what_it_adds_to_the_order():
    assert added_exposure(Insert("sell", 0, 110.0, 0.3)) == ("sell", 0.3)
    resting = order(amount=0.2)
    assert added_exposure(Amend(resting, 100.0, 0.5)) == ("buy", pytest.approx(0.3))
    assert added_exposure(Amend(resting, 100.0, 0.1)) == ("buy", 0.0)  # down: adds nothing


def test_the_pre_trade_check_holds_back_what_could_pass_the_limit():
    actions = [Insert("buy", 0, 100.0, 0.2), Insert("buy", 1, 95.0, 0.4), Insert("sell", 0, 110.0, 0.2)]
    # Long 0.5 with 0.2 of bids resting: 0.3 of room, the first bid fits and counts, the second does not.
    passed, held_back = pre_trade_check(actions, 0.5, {"buy": 0.0, "sell": 0.0}, 1.0)
    assert passed == [actions[0], actions[2]] and held_back == 1
    passed, held_back = pre_trade_check(actions, 0.5, {"buy": 0.2, "sell": 0.0}, 1.0)
    assert passed == [actions[0], actions[2]] and held_back == 1
    passed, held_back = pre_trade_check(actions, 0.5, {"buy": 0.4, "sell": 0.0}, 1.0)
    assert passed == [actions[2]] and held_back == 2
    # Short 1.0: no sell fits, every buy does; sizes adding up exactly to the limit fit.
    passed, held_back = pre_trade_check(actions, -1.0, {"buy": 0.0, "sell": 0.0}, 1.0)
    assert passed == actions[:2] and held_back == 1
    passed, _ = pre_trade_check([Insert("buy", 0, 1.0, 0.2), Insert("buy", 1, 1.0, 0.4), Insert("buy", 2, 1.0, 0.4)],
                                0.0, {"buy": 0.0, "sell": 0.0}, 1.0)
    assert len(passed) == 3


def test_cancels_and_amends_down_always_pass_the_pre_trade_check():
    resting = order(amount=0.4)
    actions = [Cancel(order(level=1)), Amend(resting, 100.0, 0.1)]
    assert pre_trade_check(actions, 5.0, {"buy": 0.4, "sell": 0.0}, 1.0) == (actions, 0)


def test_the_pre_trade_check_does_not_change_the_exposure_it_is_given():
    exposure = {"buy": 0.0, "sell": 0.0}
    pre_trade_check([Insert("buy", 0, 100.0, 0.2)], 0.0, exposure, 1.0)
    assert exposure == {"buy": 0.0, "sell": 0.0}


# -- order mode: a whole reconcile -----------------------------------------------------------

def tracker_with(*orders: TrackedOrder) -> OrderTracker:
    context = GatewayContext(None, GatewayParams(), lambda: 0.0, defaultdict(int, errors_by_code=Counter()),
                             TokenBucket(8.0, 0.0), TokenBucket(800.0, 0.0))
    tracker = OrderTracker(context, PositionKeeper())
    for o in orders:
        tracker.add(o)
    return tracker


def test_a_reconcile_plans_both_sides_merged_then_checked_and_counts_what_it_skips():
    busy = order("sell", 0, 110.0, in_flight="private/amend")
    tracker = tracker_with(busy)
    tracker.refuse(order("buy", 1), 95.0, 0.4)  # level 1 of the bids refused at the price asked again
    stats = defaultdict(int)
    # Long 0.9 of a 1.0 limit: the best bid fits, nothing more on the bid side.
    got = plan_reconcile(tracker, BTC, [(100.0, 0.1), (95.0, 0.4), (90.0, 0.2)], [(112.0, 0.2)], TICK, THRESHOLD,
                         1.0, 0.9, stats)
    assert got.actions == [Insert("buy", 0, 100.0, 0.1)]
    assert (got.in_flight, got.refused, got.held_back, got.skipped) == (1, 1, 1, 3)
    assert stats == {"skipped_in_flight": 1, "skipped_failed": 1, "skipped_exposure": 1}
    # Without a limit nothing is held back, and nothing counted as such.
    stats = defaultdict(int)
    got = plan_reconcile(tracker, BTC, [(100.0, 0.1), (95.0, 0.4), (90.0, 0.2)], [], TICK, THRESHOLD, None, 0.9, stats)
    assert got.actions == [Insert("buy", 0, 100.0, 0.1), Insert("buy", 2, 90.0, 0.2)] and got.held_back == 0
    assert "skipped_exposure" not in stats


def test_a_reconcile_forgets_a_refusal_once_its_target_changed():
    tracker = tracker_with()
    tracker.refuse(order("buy", 0), 100.0, 0.2)
    got = plan_reconcile(tracker, BTC, [(101.0, 0.2)], [], TICK, THRESHOLD, 1.0, 0.0, defaultdict(int))
    assert got.actions == [Insert("buy", 0, 101.0, 0.2)] and tracker.refused[(BTC, "buy")] == {}


# -- mass-quote mode --------------------------------------------------------------------------

def test_a_held_side_keeps_the_old_price_of_each_level_within_the_threshold():
    last = ((100.0, 0.2), (95.0, 0.4))
    assert held_side([(103.0, 0.2), (90.0, 0.4)], last, TICK, THRESHOLD) == ((100.0, 0.2), (95.0, 0.4))  # 5: within
    assert held_side([(103.0, 0.2), (89.0, 0.4)], last, TICK, THRESHOLD) == ((100.0, 0.2), (89.0, 0.4))
    assert held_side([(100.0, 0.3), (95.0, 0.4)], last, TICK, THRESHOLD) == ((100.0, 0.3), (95.0, 0.4))  # resized
    assert held_side([(101.0, 0.2), (96.0, 0.4), (91.0, 0.4)], last, TICK, THRESHOLD) == (
        (100.0, 0.2), (95.0, 0.4), (91.0, 0.4))  # a new level goes out as desired
    assert held_side([(101.0, 0.2)], (), TICK, THRESHOLD) == ((101.0, 0.2),)
    assert held_side([], last, TICK, THRESHOLD) == ()


def test_a_held_side_never_repeats_a_price():
    # Level 0 moves 6 ticks, to 94.0; level 1 would keep 94.0: the side goes out as desired.
    last = ((100.0, 0.2), (94.0, 0.4))
    assert held_side([(94.0, 0.2), (93.0, 0.4)], last, TICK, THRESHOLD) == ((94.0, 0.2), (93.0, 0.4))


def test_fit_side_cuts_the_new_side_to_what_is_left_beside_the_exposure():
    new = ((90.0, 0.2), (85.0, 0.4))
    # The venue may still fill 0.6 of what it holds: 0.4 of room for the new side.
    assert fit_side(new, 0.6, "buy", 0.0, 1.0) == (((90.0, 0.2),), 1)
    assert fit_side(new, 0.6, "buy", 0.0, 2.0) == (new, 0)
    # Exactly at the limit counts as within.
    assert fit_side(new, 0.4, "buy", 0.0, 1.0) == (new, 0)
    # Long 0.3: the asks sell down, with room to -1.0: 1.3 - 0.6 is enough for the new 0.6.
    assert fit_side(((120.0, 0.2), (125.0, 0.4)), 0.6, "sell", 0.3, 1.0) == (((120.0, 0.2), (125.0, 0.4)), 0)
    # Long 0.5 with 0.6 exposed: no room at all on the bid.
    assert fit_side(new, 0.6, "buy", 0.5, 1.0) == ((), 2)
    # Short past the limit on the ask (a fill overshot): nothing more is sold.
    assert fit_side(((120.0, 0.2),), 0.0, "sell", -1.1, 1.0) == ((), 1)
