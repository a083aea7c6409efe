"""The order mode of the gateway: an insert, amend or cancel per order (``GatewayParams.mass_quote`` off).

Contract (this part of the gateway's, app/gateway/gateway.py)
- ``reconcile`` compares the desired ladder with the orders the gateway has per side and
  level (app/gateway/planning.py ``plan_reconcile``, which the backtest replay calls too;
  ``plan_side`` has the rules of insert, amend and cancel) and sends what differs: an
  insert is a post-only GTC limit order with the label and a fresh client_order_id; an
  amend or a cancel names the order by client_order_id. Prices go out as
  given: rounding to the tick is the quote core's job, and a price the venue rejects shows
  the bug.
- one request per order at a time: an order whose request is in flight is left alone until
  the answer is in. Requests leave before ``reconcile`` returns; their answers are handled
  when they arrive.
- with ``max_position``, the pre-trade check (planning.py ``pre_trade_check``): an insert or
  amend-up that could take the position past the limit, counting everything the side could
  still fill, waits for a later reconcile (``skipped_exposure``).
- an action that finds its bucket empty is skipped for this reconcile (the next tick
  retries) and counted (``throttled_local``).
- errors by code (docs/thalex-protocol.md §6.1): 1 → the order is gone; 3/4 → pause that
  bucket for a growing interval; request-content errors (price, tick, size, margin, collar,
  open-order limits…) → the level is marked refused for that price and amount, and not
  retried until the target changes; anything else is counted and logged.
"""
from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any, Optional, Sequence

from app.clock import utc
from app.exchange.client import NotConnected, ThalexError
from app.exchange.protocol import ORDER_NOT_FOUND, REQUEST_CONTENT_CODES, SLOW_DOWN_CODES
from app.exchange.rate_limit import TokenBucket
from app.gateway.context import GatewayContext
from app.gateway.planning import Action, Amend, Cancel, Insert, plan_reconcile
from app.gateway.records import Actions
from app.gateway.tracker import GONE, REJECTED, OrderTracker, TrackedOrder


class OrderMode:
    """Orders one by one, tracked by client_order_id."""

    def __init__(self, context: GatewayContext, tracker: OrderTracker) -> None:
        self._context = context
        self._tracker = tracker
        self._ids = itertools.count(context.params.first_client_order_id)
        #: No channel of its own: the orders' reports come on session.orders (the tracker's).
        self.channels: dict[str, Any] = {}

    # -- the mode's interface (app/gateway/gateway.py Mode) ---------------------------------

    def reconcile(self, instrument: str, tick_size: float, bids: Sequence[Sequence[float]],
                  asks: Sequence[Sequence[float]], stamps: Any, max_position: Optional[float],
                  position: float) -> Actions:
        context, stats = self._context, self._context.stats
        plan = plan_reconcile(self._tracker, instrument, bids, asks, tick_size,
                              context.params.amend_threshold_ticks, max_position, position, stats)
        skipped = plan.skipped
        # The plan is decided; what goes out now is what finds a token.
        received_at = getattr(stamps, "received_at", None)
        quoted_at = getattr(stamps, "quoted_at", None)
        now = context.clock()
        sent = {Insert: 0, Amend: 0, Cancel: 0}
        for action in plan.actions:
            bucket = context.cancel_bucket if isinstance(action, Cancel) else context.order_bucket
            if not bucket.take(now):
                stats["throttled_local"] += 1
                skipped += 1
                continue
            self._send(action, instrument, received_at, quoted_at)
            sent[type(action)] += 1
        return Actions(sent[Insert], sent[Amend], sent[Cancel], skipped)

    def open_orders(self, instrument: str) -> list[TrackedOrder]:
        return self._tracker.live(instrument)

    def live_order_ids(self) -> set[str]:
        return {o.order_id for o in self._tracker.orders.values() if not o.final and o.order_id is not None}

    def session_lost(self) -> list[str]:
        return self._tracker.session_lost()

    def session_reset(self) -> None:
        """Nothing of the mode's own outlives a session: its orders are the tracker's."""

    # -- requests ----------------------------------------------------------------------------

    def _send(self, action: Action, instrument: str, received_at: Optional[datetime],
              quoted_at: Optional[datetime]) -> None:
        context, params = self._context, self._context.params
        previous: Optional[tuple[float, float]] = None
        if isinstance(action, Insert):
            order = TrackedOrder(client_order_id=next(self._ids), instrument=instrument, direction=action.direction,
                                 level=action.level, target_price=action.price, target_amount=action.amount,
                                 price=action.price, amount=action.amount, remaining_amount=action.amount)
            self._tracker.add(order)
            request: dict[str, Any] = {
                "direction": order.direction, "instrument_name": instrument, "amount": order.amount,
                "price": order.price, "order_type": "limit", "time_in_force": "good_till_cancelled",
                "post_only": True, "label": params.label, "client_order_id": order.client_order_id,
            }
            if params.reject_post_only:
                request["reject_post_only"] = True
            method = "private/insert"
            context.stats["inserts"] += 1
        elif isinstance(action, Amend):
            order = action.order
            previous = (order.target_price, order.target_amount)
            order.target_price, order.target_amount = action.price, action.amount
            request = {"client_order_id": order.client_order_id, "price": action.price, "amount": action.amount}
            method = "private/amend"
            context.stats["amends"] += 1
        else:
            order = action.order
            request = {"client_order_id": order.client_order_id}
            method = "private/cancel"
            context.stats["cancels"] += 1
        order.in_flight = method
        # From now on the order carries the stamps of the quote behind this request; all
        # three set together, right before the request leaves, so no ack mixes two quotes.
        order.received_at, order.quoted_at, order.order_sent_at = received_at, quoted_at, utc(context.clock())
        try:
            reply = context.client.send_request(method, request)
        except NotConnected as exc:
            self._no_answer(order, method, exc)
            return
        context.track(self._await_reply(order, method, reply, previous))

    def _no_answer(self, order: TrackedOrder, method: str, exc: BaseException) -> None:
        # The order's state is unknown. A pending insert is cleared up by a cancel on the
        # next reconcile; after a drop, the tracker's session_lost already gave up on it.
        order.in_flight = None
        self._context.stats["request_failures"] += 1
        self._context.log_once(("request_failure", method), "%s for order %d got no answer: %r (counting further "
                               "ones in stats['request_failures'])", method, order.client_order_id, exc)

    async def _await_reply(self, order: TrackedOrder, method: str, reply: asyncio.Future,
                           previous: Optional[tuple[float, float]]) -> None:
        context = self._context
        bucket = context.cancel_bucket if method == "private/cancel" else context.order_bucket
        try:
            result = await asyncio.wait_for(reply, context.params.request_timeout_s)
        except ThalexError as exc:
            order.in_flight = None
            self._on_error(order, method, exc, previous, bucket)
            return
        except (NotConnected, asyncio.TimeoutError) as exc:
            self._no_answer(order, method, exc)
            return
        except asyncio.CancelledError:
            order.in_flight = None
            raise
        order.in_flight = None
        bucket.recovered(context.clock())
        if isinstance(result, dict):
            self._tracker.on_status(result)

    def _on_error(self, order: TrackedOrder, method: str, exc: ThalexError,
                  previous: Optional[tuple[float, float]], bucket: TokenBucket) -> None:
        context, code = self._context, exc.code
        tried = (order.target_price, order.target_amount)
        if method == "private/insert":
            self._tracker.finish(order, REJECTED)  # never existed: the level is free again
        elif previous is not None:
            order.target_price, order.target_amount = previous  # the amend did not happen
        if code == ORDER_NOT_FOUND:
            context.stats["errors_by_code"][code] += 1
            if not order.final:
                self._tracker.finish(order, GONE)  # filled or cancelled meanwhile; the feed may tell which
            return
        if code in SLOW_DOWN_CODES:
            context.stats["throttled_venue"] += 1
            pause = bucket.pause(context.clock())
            context.count_error(code, f"{method} throttled by the venue: pausing {pause:.2f} s")
            return
        if code in REQUEST_CONTENT_CODES and method != "private/cancel":
            # The same request would get the same answer: not again until the target changes.
            self._tracker.refuse(order, *tried)
            context.count_error(code, f"{method} {order.instrument} {order.direction} level {order.level} at "
                                      f"{tried[0]} x {tried[1]} refused: {exc.message}; not retried at that price")
            return
        context.count_error(code, f"{method} for order {order.client_order_id} failed: {exc}")
