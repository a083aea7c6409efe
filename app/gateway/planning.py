"""What the gateway sends, decided without a socket: pure functions over the tracked orders.

Order mode (app/gateway/orders.py):

- ``plan_side`` compares one side's desired ladder (best first, ``(price, amount)`` pairs,
  amounts > 0) with the side's orders by level, and plans: an insert where a level has no
  order; an amend only when the target price moved more than the amend threshold (in
  ticks; exactly the threshold is still within) from what was last asked for, or the amount
  changed; a cancel for each order beyond the desired number of levels, and for a pending
  order (its insert got no answer: the cancel tells whether it exists). An order whose
  request is in flight is left alone (counted ``in_flight``), and a level the venue refused
  is not tried again at the same price and amount (counted ``refused``) until its target
  changes (``retried``: forget the refusal).
- ``merge`` orders both sides' plans for sending: cancels first (they reduce exposure, and
  have their own bucket), then level by level, bid and ask alternating, so that with few
  tokens left the best levels of both sides go out before any deeper one.
- ``pre_trade_check``: an insert or amend-up goes out only if the position plus everything
  the side could still fill stays within ±max_position. What a live order could fill is
  the larger of what rests and what was last asked for (``order_exposure``): its cancel or
  amend-down may still be unanswered, and it can fill meanwhile.
- ``plan_reconcile``: the three above for one instrument's ladder against the tracker's
  orders, what ``OrderMode.reconcile`` and the backtest replay (app/backtest/replay.py) send.
  It forgets the refusals whose target changed and counts what it skips in the gateway's
  stats; the sending (buckets, requests) is the caller's.

Mass-quote mode (app/gateway/mass_quote.py):

- ``held_side``: the desired side, with each level that moved no more than the amend
  threshold from the same level as last sent (same amount) kept at its old price, so that the
  venue keeps that quote and its priority.
- ``fit_side``: the pre-trade check of a mass quote. Replacement is not volume-safe
  (docs/thalex-protocol.md §4.7): until the venue has read the new side, what it holds can
  fill, and then the new side in full (a quote the venue keeps can fill in part first, and
  is then replaced by a fresh one). The side is cut from its deepest level until the
  position, plus what the venue may still fill of what it holds, plus the new side, stays
  within ±max_position.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, MutableMapping, NamedTuple, Optional, Sequence, Union

from app.gateway.tracker import PENDING, OrderTracker, TrackedOrder

#: Float slack of the comparisons: a price exactly on the threshold, or sizes that add up
#: exactly to the limit, must count as within.
EPSILON = 1e-9

Level = tuple[float, float]


class Insert(NamedTuple):
    direction: str
    level: int
    price: float
    amount: float


class Amend(NamedTuple):
    order: TrackedOrder
    price: float
    amount: float


class Cancel(NamedTuple):
    order: TrackedOrder


Action = Union[Insert, Amend, Cancel]


class SidePlan(NamedTuple):
    """What one side needs; ``plan_side`` sends nothing."""

    cancels: list[Cancel]
    #: (level, insert or amend), by level.
    changes: list[tuple[int, Union[Insert, Amend]]]
    #: Actions left for a later reconcile because the order's request is in flight.
    in_flight: int
    #: Levels not sent because the venue refused that same price and amount.
    refused: int
    #: Levels whose refused target changed: the refusal is to be forgotten (they are tried).
    retried: list[int]


def desired_levels(ladder: Sequence[Sequence[float]]) -> list[Level]:
    """A ladder as float pairs, levels with an amount ≤ 0 left out (they count as absent)."""
    return [(float(price), float(amount)) for price, amount in ladder if amount > 0]


def within_threshold(price: float, old_price: float, tick_size: float, threshold_ticks: float) -> bool:
    """``price`` is no more than ``threshold_ticks`` ticks from ``old_price``."""
    return abs(price - old_price) / tick_size <= threshold_ticks + EPSILON


def same_amount(amount: float, old_amount: float) -> bool:
    return math.isclose(amount, old_amount, rel_tol=1e-9, abs_tol=1e-12)


# -- order mode -----------------------------------------------------------------------------


def plan_side(direction: str, desired: Sequence[Level], slots: Mapping[int, TrackedOrder],
              refused: Mapping[int, Level], tick_size: float, threshold_ticks: float) -> SidePlan:
    """The plan for one side: ``slots`` maps each level to its order, ``refused`` each level to
    the (price, amount) the venue refused there."""
    cancels: list[Cancel] = []
    changes: list[tuple[int, Union[Insert, Amend]]] = []
    in_flight = refusals = 0
    retried: list[int] = []
    for level in sorted(slots):
        order = slots[level]
        if level < len(desired) and order.status != PENDING:
            continue
        if order.in_flight is not None:
            if level >= len(desired):
                in_flight += 1
            continue
        cancels.append(Cancel(order))
    for level, (price, amount) in enumerate(desired):
        refusal = refused.get(level)
        if refusal is not None:
            if refusal == (price, amount):
                refusals += 1
                continue
            retried.append(level)  # a new target: try again
        order = slots.get(level)
        if order is None:
            changes.append((level, Insert(direction, level, price, amount)))
            continue
        if order.in_flight is not None:
            in_flight += 1
            continue
        if order.status == PENDING:
            continue  # its insert got no answer: the cancel planned above finds out
        moved = not within_threshold(price, order.target_price, tick_size, threshold_ticks)
        if moved or not same_amount(amount, order.target_amount):
            changes.append((level, Amend(order, price, amount)))
    return SidePlan(cancels, changes, in_flight, refusals, retried)


def merge(*plans: SidePlan) -> list[Action]:
    """The plans' actions in sending order: every cancel, then level by level, the plans
    (bid side first) alternating."""
    actions: list[Action] = [cancel for plan in plans for cancel in plan.cancels]
    by_level: list[list[Action]] = []
    for plan in plans:
        for level, change in plan.changes:
            while len(by_level) <= level:
                by_level.append([])
            by_level[level].append(change)
    actions.extend(change for level in by_level for change in level)
    return actions


def order_exposure(order: TrackedOrder) -> float:
    """What a live order could still fill: the larger of its remaining amount and the
    remaining amount last asked for (an amend may be in flight)."""
    return max(order.remaining_amount, order.target_amount - order.filled_amount, 0.0)


def side_exposure(live_orders: Iterable[TrackedOrder]) -> dict[str, float]:
    """Per direction, what the live orders could still fill together."""
    out = {"buy": 0.0, "sell": 0.0}
    for order in live_orders:
        out[order.direction] += order_exposure(order)
    return out


def added_exposure(action: Union[Insert, Amend]) -> tuple[str, float]:
    """(direction, how much an insert or amend adds to what its side could fill)."""
    if isinstance(action, Insert):
        return action.direction, action.amount
    order = action.order
    return order.direction, max(0.0, action.amount - order.filled_amount - order_exposure(order))


def pre_trade_check(actions: Sequence[Action], position: float, exposure: Mapping[str, float],
                    max_position: float) -> tuple[list[Action], int]:
    """(the actions that keep each side within ±max_position, in order; how many were held
    back). Cancels always pass; each insert or amend that passes counts towards the next."""
    exposure = dict(exposure)
    passed: list[Action] = []
    held_back = 0
    for action in actions:
        if not isinstance(action, Cancel):
            direction, added = added_exposure(action)
            sign = 1.0 if direction == "buy" else -1.0
            if added > 0 and sign * position + exposure[direction] + added > max_position + EPSILON:
                held_back += 1
                continue
            exposure[direction] += max(0.0, added)
        passed.append(action)
    return passed, held_back


class ReconcilePlan(NamedTuple):
    """What one reconcile is to send, in sending order, and what it leaves for later."""

    actions: list[Action]
    #: Actions waiting for an order's request in flight (a later reconcile plans them again).
    in_flight: int
    #: Levels not sent because the venue refused that same price and amount.
    refused: int
    #: Inserts and amends-up the pre-trade check held back (they may pass once reductions are answered).
    held_back: int

    @property
    def skipped(self) -> int:
        return self.in_flight + self.refused + self.held_back


def plan_reconcile(tracker: OrderTracker, instrument: str, bids: Sequence[Sequence[float]],
                   asks: Sequence[Sequence[float]], tick_size: float, threshold_ticks: float,
                   max_position: Optional[float], position: float, stats: MutableMapping[str, Any]) -> ReconcilePlan:
    """The order mode's plan for one instrument: each side planned against the tracker's orders
    (``plan_side``), merged, then the pre-trade check (skipped without ``max_position``).

    Two side effects, both the gateway's bookkeeping: a refusal whose target changed is
    dropped from ``tracker.refused`` (that level is tried again), and ``stats`` counts what is
    skipped (``skipped_in_flight``, ``skipped_failed``, ``skipped_exposure``)."""
    plans = []
    for direction, ladder in (("buy", bids), ("sell", asks)):
        slots = tracker.slots.get((instrument, direction), {})
        refused = tracker.refused.get((instrument, direction), {})
        plan = plan_side(direction, desired_levels(ladder), slots, refused, tick_size, threshold_ticks)
        for level in plan.retried:
            del refused[level]
        plans.append(plan)
    bid_plan, ask_plan = plans
    in_flight, refusals = bid_plan.in_flight + ask_plan.in_flight, bid_plan.refused + ask_plan.refused
    stats["skipped_in_flight"] += in_flight
    stats["skipped_failed"] += refusals
    actions = merge(bid_plan, ask_plan)
    held_back = 0
    if max_position is not None:
        # Most reconciles plan nothing (the ladder moved within the amend threshold): no
        # exposure to add up then, and nothing to hold back.
        if actions:
            exposure = side_exposure(tracker.live(instrument))
            actions, held_back = pre_trade_check(actions, position, exposure, max_position)
        stats["skipped_exposure"] += held_back
    return ReconcilePlan(actions, in_flight, refusals, held_back)


# -- mass-quote mode ------------------------------------------------------------------------


def held_side(desired: Sequence[Level], last: Sequence[Level], tick_size: float,
              threshold_ticks: float) -> tuple[Level, ...]:
    """``desired``, with each level that moved no more than the amend threshold from the same
    level as last sent (same amount) at its old price. Prices on a side must be distinct
    (docs/thalex-protocol.md §4.7): if keeping old prices would repeat one, ``desired`` as it is."""
    side = []
    for level, (price, amount) in enumerate(desired):
        if level < len(last):
            old_price, old_amount = last[level]
            if within_threshold(price, old_price, tick_size, threshold_ticks) and same_amount(amount, old_amount):
                price = old_price
        side.append((price, amount))
    if len({price for price, _ in side}) < len(side):
        return tuple(desired)
    return tuple(side)


def fit_side(side: tuple[Level, ...], exposure: float, direction: str, position: float,
             max_position: float) -> tuple[tuple[Level, ...], int]:
    """(the side cut from its deepest level to fit, how many levels were cut).

    ``exposure`` is the most the venue may still fill on this side before it reads the new
    one, beyond the fills already in ``position`` (app/gateway/mass_quote.py keeps it)."""
    sign = 1.0 if direction == "buy" else -1.0
    room = max_position - sign * position - exposure
    used = 0.0
    for level, (_price, amount) in enumerate(side):
        used += amount
        if used > room + EPSILON:
            return side[:level], len(side) - level
    return side, 0
