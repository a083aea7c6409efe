"""Order tracking: what the gateway knows of each of its orders, from the venue's reports.

Contract (this part of the gateway's, app/gateway/gateway.py)
- ``session.orders`` is the truth: each update (and each request's answer) replaces the
  local state of the order with the same client_order_id, except that an order never goes
  backwards (fills only grow; a final state stays final), because answers and feed items
  may arrive in either order.
- an order is final when the venue says so (a final status, or nothing left to fill), or
  when the gateway infers it (``REJECTED`` at insert, ``GONE`` on error 1 or when the session
  ended under it); its level is then free. Final orders are kept for late updates (the
  last ``finished_orders_kept``), so their acks still get stamps.
- out: ``on_ack(Ack)`` for every order status received, with the stamps of the quote whose
  request last changed the order (docs/architecture.md#d9-latency-stamps) and
  ack_received_at; ``on_fill(Fill)`` once per new fill, keyed by (trade_id, order_id) (a
  self-trade fills two of our orders under one trade_id); the last ``fills_remembered`` keys
  are remembered. Each new fill goes into the position keeper (app/trading/position.py),
  with the price and amount of the venue's report, before ``on_fill`` is called.
- the records are built by ``ack_builder`` and ``fill_builder``: by default
  app/gateway/records.py ``ack_record`` and ``fill_record`` (the Faust ``Ack`` and ``Fill``
  the agent publishes); a caller that publishes nothing (the backtest replay) can pass
  builders of its own, which take the same arguments and raise the same errors for a missing
  field, and ``on_ack``/``on_fill`` then get what those build. The tracker reads nothing of
  the records it hands on.
- a status without a client_order_id is a mass quote's: it goes to ``quote_handler`` (set by
  app/gateway/mass_quote.py), or counts as an unknown order.
- ``status_listeners`` are told the order_id of every status handled, and whether it is final
  (the gateway's session bookkeeping: which orders are this session's, and which of them have
  had their final report).
- ``fill_listeners`` are told ``(instrument, direction, amount)`` of every new fill, once it is
  in the position keeper (the mass-quote mode's pre-trade check: what the venue may still
  fill shrinks by what it filled).

Fills come from ``session.orders`` only, not ``account.trade_history``: the order feed
carries them first (trade history waits for the exchange's database,
docs/thalex-protocol.md §4.9), it carries the order's client_order_id, so the fill can be
matched to the quote that placed it, and it holds exactly this session's orders. (Fees are
only in trade history; the gateway does not need them.)
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Optional

from app.clock import utc
from app.exchange.messages import Notification
from app.exchange.protocol import FINAL_STATUSES, POST_ONLY_CANCEL
from app.gateway.context import GatewayContext
from app.gateway.records import ack_record, fill_record, fills_of
from app.trading.position import PositionKeeper

#: Local states: not yet answered; refused at insert (never existed); gone without a
#: final report from the venue (error 1, or the session ended under us).
PENDING, REJECTED, GONE = "pending", "rejected", "gone"


@dataclass
class TrackedOrder:
    """One order of this gateway, as far as it knows. ``open_orders`` hands out copies."""

    #: None for a mass quote (the venue gives quotes no client_order_id; order_id is the key).
    client_order_id: Optional[int]
    instrument: str
    direction: str  # buy | sell
    level: int
    #: What we last asked for. The amend rule compares the target with this, not with the
    #: venue's price: a post-only order the venue moved inside the book would otherwise
    #: be amended back on every tick, and moved again.
    target_price: float
    target_amount: float
    #: As the venue last reported them (the target until it answers).
    price: float
    amount: float
    filled_amount: float = 0.0
    remaining_amount: float = 0.0
    status: str = PENDING
    final: bool = False
    order_id: Optional[str] = None
    delete_reason: Optional[str] = None
    #: The method of the request in flight, if any (one at a time).
    in_flight: Optional[str] = None
    received_at: Optional[datetime] = None
    quoted_at: Optional[datetime] = None
    order_sent_at: Optional[datetime] = None

    @property
    def live(self) -> bool:
        """On the book (or about to be): not final."""
        return not self.final


def open_copies(orders: Iterable[TrackedOrder]) -> list[TrackedOrder]:
    """Copies of ``orders``, bids first, by level, then best price first."""
    return [copy.copy(o) for o in sorted(orders, key=lambda o: (o.direction != "buy", o.level,
                                                               -o.price if o.direction == "buy" else o.price))]


class OrderTracker:
    """Every order of one gateway by client_order_id, each side's orders by level, and fills."""

    def __init__(self, context: GatewayContext, positions: PositionKeeper, *,
                 ack_builder: Callable[..., Any] = ack_record, fill_builder: Callable[..., Any] = fill_record) -> None:
        self._context = context
        self._positions = positions
        #: ``(status, order, ack_received_at)`` → what ``on_ack`` gets (records.py ``ack_record``).
        self._ack_builder = ack_builder
        #: ``(raw, status, order, trade_id, order_id, instrument, direction, ack_received_at)`` →
        #: what ``on_fill`` gets (records.py ``fill_record``).
        self._fill_builder = fill_builder
        self.orders: dict[int, TrackedOrder] = {}
        #: (instrument, direction) → level → the level's current order.
        self.slots: dict[tuple[str, str], dict[int, TrackedOrder]] = {}
        #: (instrument, direction) → level → (price, amount) the venue refused: not sent again.
        self.refused: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
        #: Mass quoting: takes each status without a client_order_id (a quote's).
        self.quote_handler: Optional[Callable[[dict], TrackedOrder]] = None
        #: Told ``(order_id, final)`` of every status handled (app/gateway/gateway.py adds and removes them).
        self.status_listeners: list[Callable[[str, bool], None]] = []
        #: Told ``(instrument, direction, amount)`` of every new fill, after the position keeper
        #: (app/gateway/mass_quote.py).
        self.fill_listeners: list[Callable[[str, str, float], None]] = []
        self._finished: OrderedDict[int, None] = OrderedDict()
        self._seen_fills: OrderedDict[tuple[str, str], None] = OrderedDict()

    # -- the gateway's own changes ---------------------------------------------------------

    def add(self, order: TrackedOrder) -> None:
        """A new order (its insert is about to leave): it takes its level."""
        self.orders[order.client_order_id] = order
        self.slots.setdefault((order.instrument, order.direction), {})[order.level] = order

    def live(self, instrument: str) -> list[TrackedOrder]:
        """The instrument's orders not known to be final. Every live order holds its level's slot
        (an insert goes only to an empty level, and finishing frees it), so this reads the
        slots: a few levels, not the finished orders kept for late reports (the hot path reads
        it at every decision, for the pre-trade check)."""
        return [order for direction in ("buy", "sell")
                for order in self.slots.get((instrument, direction), {}).values()]

    def refuse(self, order: TrackedOrder, price: float, amount: float) -> None:
        """The venue refused this price and amount at the order's level: not sent again there."""
        self.refused.setdefault((order.instrument, order.direction), {})[order.level] = (price, amount)

    def session_lost(self) -> list[str]:
        """The connection dropped: every live order is gone (cancel-on-disconnect deletes them;
        client_order_ids were session-local). Returns the order_ids that may still rest, in
        case the venue has not yet noticed the drop."""
        orphans = []
        # A copy: finishing an order can drop the oldest finished ones from self.orders.
        for order in list(self.orders.values()):
            if not order.final:
                if order.order_id is not None:
                    orphans.append(order.order_id)
                self.finish(order, GONE)
        self.slots.clear()
        return orphans

    def finish(self, order: TrackedOrder, status: str) -> None:
        """The order is final (as the venue says, or as we infer): free its level, keep it a while."""
        order.status = status
        if order.final:
            return
        order.final = True
        slots = self.slots.get((order.instrument, order.direction))
        if slots is not None and slots.get(order.level) is order:
            del slots[order.level]
        self._finished[order.client_order_id] = None
        while len(self._finished) > self._context.params.finished_orders_kept:
            old, _ = self._finished.popitem(last=False)
            self.orders.pop(old, None)

    # -- the venue's reports ---------------------------------------------------------------

    def on_session_orders(self, notification: Notification) -> None:
        """The ``session.orders`` handler: a list of OrderStatus."""
        items = notification.payload
        if not isinstance(items, list):
            raise TypeError(f"session.orders notification must be a list, got {type(items).__name__}")
        for status in items:
            if isinstance(status, dict):
                self.on_status(status)
            else:
                self._context.stats["unrecordable_updates"] += 1

    def on_status(self, status: dict) -> None:
        """One OrderStatus, from a request's answer or session.orders: state, then Ack, then fills."""
        context, stats = self._context, self._context.stats
        ack_received_at = utc(context.clock())
        coid = status.get("client_order_id")
        order = self.orders.get(coid) if isinstance(coid, int) else None
        if order is not None:
            self._apply(order, status)
        elif self.quote_handler is not None and coid is None and status.get("order_id") is not None:
            order = self.quote_handler(status)
        else:
            stats["unknown_orders"] += 1
        stats["acks"] += 1
        if self.status_listeners and status.get("order_id") is not None:
            order_id = str(status["order_id"])
            remaining = status.get("remaining_amount")
            # Remaining 0 means inactive (docs/thalex-protocol.md §4.10).
            final = status.get("status") in FINAL_STATUSES or (isinstance(remaining, (int, float)) and remaining <= 0)
            for listener in self.status_listeners:
                listener(order_id, final)
        try:
            ack = self._ack_builder(status, order, ack_received_at)
        except (KeyError, TypeError, ValueError) as exc:
            stats["unrecordable_updates"] += 1
            context.log_once(("unrecordable",), "an order update without %s: %r", exc, status)
        else:
            context.emit(context.on_ack, ack)
        self._take_fills(status, order, ack_received_at)

    def _apply(self, order: TrackedOrder, status: dict) -> None:
        """Replace the order's state with the venue's, unless the update is older than what we know."""
        new_status = status.get("status")
        filled = float(status.get("filled_amount", 0.0))
        remaining = float(status.get("remaining_amount", 0.0))
        # Remaining 0 means inactive (docs/thalex-protocol.md §4.10).
        final = new_status in FINAL_STATUSES or remaining <= 0
        if order.final and order.status not in (GONE, REJECTED):
            return  # the venue already reported it final: nothing can follow
        if not final and (order.final or filled < order.filled_amount):
            return  # a stale live state: we know of a later fill, or that it is gone
        if status.get("order_id") is not None:
            order.order_id = str(status["order_id"])
        if status.get("price") is not None:
            order.price = float(status["price"])
        order.amount = float(status.get("amount", order.amount))
        order.filled_amount = filled
        order.remaining_amount = remaining
        order.delete_reason = status.get("delete_reason")
        order.status = str(new_status)
        if final:
            was_final = order.final
            self.finish(order, order.status)
            if order.delete_reason == POST_ONLY_CANCEL and not was_final:
                # Post-only would have crossed: the same price would be cancelled again.
                self._context.stats["post_only_cancelled"] += 1
                self.refuse(order, order.target_price, order.target_amount)
                self._context.log_once(("post_only", order.instrument), "%s %s level %d at %s would cross the "
                                       "book: cancelled by the venue; not retried at that price", order.instrument,
                                       order.direction, order.level, order.target_price)

    def _take_fills(self, status: dict, order: Optional[TrackedOrder], ack_received_at: datetime) -> None:
        stats = self._context.stats
        instrument = status.get("instrument_name") or (order.instrument if order else None)
        direction = status.get("direction") or (order.direction if order else None)
        order_id = str(status.get("order_id", order.order_id if order else ""))
        for raw in fills_of(status):
            # A self-trade fills two of our orders under one trade_id: the key is both.
            key = (str(raw.get("trade_id")), order_id)
            if key in self._seen_fills:
                stats["duplicate_fills"] += 1  # e.g. the "existing" snapshot repeats all fills
                continue
            if instrument is None or direction not in ("buy", "sell"):
                stats["unrecordable_updates"] += 1  # a combination order's fill: the gateway places none
                continue
            try:
                fill = self._fill_builder(raw, status, order, key[0], order_id, instrument, direction,
                                          ack_received_at)
                # From the venue's report, not the record: a builder may keep what it likes.
                amount, price = float(raw["amount"]), float(raw["price"])
            except (KeyError, TypeError, ValueError) as exc:
                stats["unrecordable_updates"] += 1
                self._context.log_once(("bad_fill",), "a fill without %s: %r", exc, raw)
                continue
            self._seen_fills[key] = None
            if len(self._seen_fills) > self._context.params.fills_remembered:
                self._seen_fills.popitem(last=False)
            self._positions.add_fill(instrument, direction, amount, price)
            for listener in self.fill_listeners:
                listener(instrument, direction, amount)
            stats["fills"] += 1
            self._context.emit(self._context.on_fill, fill)
