"""The order gateway: the quote agent's desired ladders as orders on one venue session.

Contract (overview; each module below holds its part)
- runs on a ThalexClient that is connected and logged in (the market-data source's
  session, docs/architecture.md#d1-the-hot-path-stays-in-one-process). ``start()`` sets
  cancel-on-disconnect (docs/thalex-protocol.md §4.1) and subscribes ``session.orders``; it
  registers a session hook and a disconnect listener, so every reconnect of the client sets
  cancel-on-disconnect again before anything is sent. Every order the gateway places is
  therefore non-persistent and dies with its session
  (docs/architecture.md#d2-one-active-quoter-per-venue-account).
- ``reconcile(instrument, tick_size, bids, asks, stamps, max_position=None)`` makes the
  instrument's orders match the desired ladder (best first, ``(price, amount)`` pairs; a
  level with an amount ≤ 0 counts as absent) and returns what it sent (``Actions``). Empty
  ladders cancel everything of the instrument (that is how a HALTED risk state takes
  effect). Requests leave before it returns; their answers are handled when they arrive
  (``wait_idle()`` waits for them). While the client reconnects, until the new session is
  subscribed to ``session.orders`` again (``client.connected``), it sends nothing
  (``skipped_not_connected``): no order may fill unseen. How, depends on the mode:
  - orders (app/gateway/orders.py): an insert, amend or cancel per order, one request per
    order at a time; the amend threshold (``amend_threshold_ticks``) spares the venue
    small moves;
  - mass quotes (app/gateway/mass_quote.py, ``mass_quote``, an approved market-making
    account, docs/thalex-protocol.md §4.7): one ``private/mass_quote`` per instrument and
    decision, under MM protection; ``on_requote(instrument)`` asks for a new decision.
  ``max_position`` is the pre-trade check: the way from the ladder that rests to the one
  wanted must not pass ±max_position either, counting what could still fill meanwhile
  (app/gateway/planning.py holds the rules of both modes, without a socket).
- rates: local token buckets (app/exchange/rate_limit.py), a little under the venue's
  limits (docs/thalex-protocol.md §6.2: 10/s for inserts, amends and mass quotes, 50/s
  once cancel-on-disconnect is set; 1000/s for cancels), new with each session.
- out (app/gateway/tracker.py, records.py): ``on_ack(Ack)`` for every order status
  received, with the stamps of the quote whose request last changed the order
  (docs/architecture.md#d9-latency-stamps); ``on_fill(Fill)`` once per new fill.
  ``position(instrument)``: the position keeper's (app/trading/position.py; the account's
  position read with private/portfolio when the session opened, plus the fills since);
  ``open_orders(instrument)`` and ``stats``.
- after a drop: everything the gateway had is gone (cancel-on-disconnect deletes it;
  client_order_ids were session-local); on the new session, before anything else,
  cancel-on-disconnect is set again, the old orders whose order_id is known are cancelled
  by id (in case the venue had not noticed the drop yet), and positions are read again.
- earlier sessions' orders in the records (``records``, given when there is a database):
  after each session opens, a task compares the orders the records say are open (once every
  update published before has been persisted) with the venue's open orders, and produces the
  ending of each one the venue no longer holds: an ``Ack`` with change_reason ``reconciled``,
  ``filled`` or deleted with its session (``session_end``) as the venue's trade history says,
  and a ``Fill`` for each of its trades not yet recorded. An earlier session's order the venue
  still holds is cancelled by id. This session's own orders are left to their own reports.
  (app/gateway/leftovers.py, docs/architecture.md#d17-orders-that-end-with-a-session.) These
  fills were in the portfolio the session started from: the position keeper does not take them.
- ``cancel_all()`` (private/cancel_session: only this session's orders; other bots' and the
  UI's survive) and ``close()`` (cancel_session, then no more requests; it waits, briefly,
  for the final report of every order the session held, so that their endings are recorded
  by the session itself).

The package: params.py (GatewayParams), context.py (what the parts share), tracker.py (the
orders' state, acks and fills), records.py (stamps, actions, Ack and Fill), planning.py
(pure planning), orders.py and mass_quote.py (the two modes), leftovers.py (earlier sessions'
orders in the records, pure), and this module (life cycle, session, buckets, dispatch).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Callable, Optional, Protocol, Sequence

from app.clock import utc
from app.exchange.client import NotConnected, ThalexClient, ThalexError
from app.exchange.protocol import ORDER_NOT_FOUND, SLOW_DOWN_CODES
from app.exchange.rate_limit import TokenBucket
from app.gateway.context import Callback, GatewayContext
from app.gateway.leftovers import (
    FILLED_REASON,
    OrderRecords,
    RecordedOrder,
    closing_status,
    split_leftovers,
    trades_by_order,
    unrecorded_fills,
    unrecorded_trades,
)
from app.gateway.mass_quote import MassQuoteMode
from app.gateway.orders import OrderMode
from app.gateway.params import GatewayParams
from app.gateway.records import Actions, ack_record, fill_record
from app.gateway.tracker import OrderTracker, TrackedOrder, open_copies
from app.trading.position import PositionKeeper

log = logging.getLogger(__name__)

#: Seconds between tries of the earlier sessions' orders check when the records or the venue failed.
LEFTOVERS_RETRY_S = 5.0
#: Trades per private/trade_history page (the most the venue gives, docs/thalex-protocol.md §4.8).
TRADE_HISTORY_PAGE = 1000
#: Lost fills are looked for from this many seconds before the newest recorded fill: the fills
#: a stopped worker had not handed on are its last ones, on any partition, and a fill's time
#: is the venue's or, without it, the local arrival time.
LOST_FILLS_LOOKBACK_S = 60.0
#: ... and over the last hour when no fill is recorded at all.
LOST_FILLS_FIRST_LOOKBACK_S = 3600.0


class Mode(Protocol):
    """How the gateway places orders: OrderMode (orders.py) or MassQuoteMode (mass_quote.py)."""

    #: Extra subscriptions the mode needs, channel → handler.
    channels: dict[str, Callable[[Any], None]]

    def reconcile(self, instrument: str, tick_size: float, bids: Sequence[Sequence[float]],
                  asks: Sequence[Sequence[float]], stamps: Any, max_position: Optional[float],
                  position: float) -> Actions: ...

    def open_orders(self, instrument: str) -> list[TrackedOrder]:
        """The instrument's orders not known to be final (the gateway's, not copies)."""

    def session_lost(self) -> list[str]:
        """The connection dropped: forget the session; the order_ids that may still rest."""

    def session_reset(self) -> None:
        """The venue forgot the session's orders (a new session, cancel_session)."""

    def live_order_ids(self) -> set[str]:
        """The order_ids of every order not known to be final, of every instrument."""


class _FinalReports:
    """The orders of a closing session still waiting for their final report (a status listener)."""

    def __init__(self, open_ids: set[str]) -> None:
        self.waiting = set(open_ids)
        self._finished: set[str] = set()
        #: Set while nothing is waiting.
        self.done = asyncio.Event()
        self._update()

    def on_status(self, order_id: str, final: bool) -> None:
        if final:
            self._finished.add(order_id)
            self.waiting.discard(order_id)
        elif order_id not in self._finished:  # an answer in flight (an insert) that the venue deletes next
            self.waiting.add(order_id)
        self._update()

    def _update(self) -> None:
        if self.waiting:
            self.done.clear()
        else:
            self.done.set()


def _in_context(name: str, doc: str) -> property:
    """An attribute of the gateway kept in its GatewayContext, where the tracker and the modes read it."""
    return property(lambda gateway: getattr(gateway._context, name),
                    lambda gateway, value: setattr(gateway._context, name, value), doc=doc)


class OrderGateway:
    """Orders for one venue session. ``await start()``, then ``reconcile`` per quote; ``close()``.

    ``reconcile`` is synchronous: each request is on the socket when it returns (the hot
    path, docs/architecture.md#d1-the-hot-path-stays-in-one-process); its answer is awaited
    by a task of its own.

    ``OrderGateway(client, label="P", order_rate_cod=50.0)`` or
    ``OrderGateway(client, GatewayParams(...))``: keyword arguments override fields of
    ``params`` (see GatewayParams for each one). ``positions``: the quoting session's
    PositionKeeper, which the gateway sets and updates (a fresh one when not given).
    ``records``: the records of our orders (app/gateway/leftovers.py ``OrderRecords``); with
    them, each session that opens records the ending of the orders earlier sessions left open.
    """

    def __init__(self, client: ThalexClient, params: Optional[GatewayParams] = None, *,
                 clock: Callable[[], float] = time.time,
                 on_ack: Callback = None,
                 on_fill: Callback = None,
                 products: Optional[dict[str, str]] = None,
                 on_requote: Callback = None,
                 positions: Optional[PositionKeeper] = None,
                 records: Optional[OrderRecords] = None,
                 **overrides: Any) -> None:
        self.client = client
        self.params = replace(params or GatewayParams(), **overrides)
        self.positions = positions if positions is not None else PositionKeeper()
        self._clock = clock
        #: Counts of what the gateway did and met. errors_by_code counts venue error replies.
        self.stats: dict[str, Any] = {
            "inserts": 0, "amends": 0, "cancels": 0,
            "throttled_local": 0,  # an action skipped because its local bucket was empty or paused
            "throttled_venue": 0,  # code 3/4 replies: the venue slowed us down (also in errors_by_code)
            "skipped_in_flight": 0,  # an action waiting for the order's outstanding request
            "skipped_failed": 0,  # a level not retried at the price and amount the venue refused
            "skipped_exposure": 0,  # held back by the pre-trade check until reductions are answered
            "post_only_cancelled": 0,  # post-only orders the venue cancelled instead of resting them
            "request_failures": 0,  # requests that timed out or lost their connection
            "skipped_not_connected": 0,  # reconciles while the session was reopening: nothing sent
            "acks": 0, "fills": 0, "duplicate_fills": 0,
            "unknown_orders": 0,  # updates for orders this gateway does not know (e.g. no client_order_id)
            "unrecordable_updates": 0,  # updates an Ack could not be built from (missing fields)
            "orphans_cancelled": 0, "orphans_gone": 0,  # previous sessions' orders, after a reconnect
            # earlier sessions' orders the records held open (app/gateway/leftovers.py): checks done,
            # endings recorded as cancelled or filled, their fills recorded, and ones still resting
            # that were cancelled by id
            "leftover_checks": 0, "leftovers_cancelled": 0, "leftovers_filled": 0, "leftover_fills": 0,
            "leftovers_resting": 0,
            "lost_fills": 0,  # trades of our label in no record, recorded from the trade history
            "final_reports_missing": 0,  # close(): orders whose final report did not come in time
            "callback_errors": 0,
            # mass quoting
            "mass_quotes": 0, "quote_levels_failed": 0,
            "protection_pulls": 0, "protection_refills": 0,
            "skipped_protection": 0,  # a reconcile while the product's protection is pulled or refused
            "errors_by_code": Counter(),
        }
        self._context = GatewayContext(client, self.params, clock, self.stats, *self._new_buckets(),
                                       on_ack=on_ack, on_fill=on_fill, on_requote=on_requote)
        self._tracker = OrderTracker(self._context, self.positions)
        self._mode: Mode = (MassQuoteMode(self._context, self._tracker, products or {}) if self.params.mass_quote
                            else OrderMode(self._context, self._tracker))
        #: order_ids that may still rest under the previous session: cancelled after a reconnect.
        self._orphans: list[str] = []
        self._started = False
        self._records = records
        #: While the earlier sessions' orders are checked: every order_id this session has had a
        #: status for (they are its own to report).
        self._this_session: Optional[set[str]] = None
        self._leftovers_task: Optional[asyncio.Task] = None
        if records is not None:
            self._tracker.status_listeners.append(self._note_session_order)

    # -- the agent's callbacks (settable after construction; the context holds them) -------

    on_ack = _in_context("on_ack", "Called with the Ack of every order status received.")
    on_fill = _in_context("on_fill", "Called with the Fill of every new fill (once per (trade_id, order_id)).")
    on_requote = _in_context(
        "on_requote", "Mass quoting: called with an instrument once the venue has answered its mass quote, when a "
        "decision was skipped meanwhile or the pre-trade check held levels back (the old side is gone now: room "
        "for them), and once a pulled protection is refilled. The caller decides again.")

    # -- life cycle ----------------------------------------------------------------

    def _new_buckets(self) -> tuple[TokenBucket, TokenBucket]:
        p, now = self.params, self._clock()
        # A new connection's venue buckets start full at the pre-COD rate (docs/thalex-protocol.md §6.2).
        return (TokenBucket(p.order_rate * p.rate_headroom, now, p.throttle_backoff_s, p.throttle_backoff_max_s),
                TokenBucket(p.cancel_rate * p.rate_headroom, now, p.throttle_backoff_s, p.throttle_backoff_max_s))

    async def start(self) -> None:
        """Cancel-on-disconnect, positions, then the order feed. Raises ThalexError if the venue
        refuses cancel-on-disconnect: quoting on a persistent session could leave orphan orders."""
        if self.client.ping_interval >= self.params.cod_timeout_s:
            log.warning("the client pings every %.1f s, not within cancel-on-disconnect's %.1f s: the venue "
                        "will end the session when it is idle", self.client.ping_interval, self.params.cod_timeout_s)
        self.client.add_disconnect_listener(self._on_disconnect)
        self.client.add_session_hook(self._on_new_session)
        await self._open_session()
        await self.client.subscribe(["session.orders"], self._tracker.on_session_orders)
        for channel, handler in self._mode.channels.items():
            await self.client.subscribe([channel], handler)
        self._started = True
        self._check_leftovers()
        log.info("order gateway on %s: cancel-on-disconnect set (%.0f s), inserts and amends at most %.1f/s",
                 self.client.account, self.params.cod_timeout_s, self._context.order_bucket.rate)

    async def _open_session(self) -> None:
        """On every connection: COD before any order, old session's orders cancelled, positions read."""
        if self._records is not None:
            # This session's orders are told apart from earlier ones' from its first status on
            # (the answers to the orphans' cancels included: those close their orders already).
            self._stop_leftovers()
            self._this_session = set()
        result = await self.client.call("private/set_cancel_on_disconnect",
                                        {"timeout_secs": self.params.cod_timeout_s})
        rate = self.params.order_rate_cod
        if isinstance(result, dict) and isinstance(result.get("message_rate"), (int, float)):
            rate = min(rate, float(result["message_rate"]))  # the venue says what it allows this session
        self._context.order_bucket.set_rate(rate * self.params.rate_headroom, self._clock())
        self._mode.session_reset()  # a new session has no quotes and no protection groups
        await self._cancel_orphans()
        # Position = the account's position when the session opened + this session's fills.
        # Read after the orphans are gone, so no fill of theirs can fall between the two.
        self.positions.reset_from_portfolio(await self.client.call("private/portfolio"))

    async def _on_new_session(self, client: ThalexClient) -> None:
        """Session hook: the client reconnected and logged in; COD again before it resubscribes."""
        if self._context.closed or not self._started:
            return
        self._context.order_bucket, self._context.cancel_bucket = self._new_buckets()
        await self._open_session()
        self._check_leftovers()

    def _on_disconnect(self) -> None:
        """The connection dropped: with COD the venue deletes the session's orders. The ones
        with an order_id are cancelled by id after the reconnect, in case the venue has not
        yet noticed the drop (a half-open connection lives until the COD timeout)."""
        self._orphans.extend(self._mode.session_lost())

    async def _cancel_orphans(self) -> None:
        # One at a time, each taken off the list only once answered: if the connection
        # drops again meanwhile, the rest wait for the next session.
        while self._orphans:
            order_id = self._orphans[0]
            try:
                status = await self.client.call("private/cancel", {"order_id": order_id})
            except ThalexError as exc:
                status = None
                if exc.code == ORDER_NOT_FOUND:
                    self.stats["orphans_gone"] += 1  # the expected case: COD deleted it
                else:
                    self._context.count_error(exc.code, f"cancelling order {order_id} of the previous session: "
                                                        f"{exc}")
            else:
                self.stats["orphans_cancelled"] += 1
            self._orphans.pop(0)
            if isinstance(status, dict):
                self._tracker.on_status(status)

    # -- earlier sessions' orders in the records (app/gateway/leftovers.py) --------------------

    def _note_session_order(self, order_id: str, final: bool) -> None:
        if self._this_session is not None:
            self._this_session.add(order_id)

    def _check_leftovers(self) -> None:
        """A session opened: check the records for orders of earlier sessions, in a task of its own
        (the records may have to catch up first; quoting does not wait for it)."""
        if self._records is None or self._context.closed or self._this_session is None:
            return
        self._leftovers_task = asyncio.get_running_loop().create_task(self._leftovers(self._this_session))

    def _stop_leftovers(self) -> None:
        task, self._leftovers_task = self._leftovers_task, None
        if task is not None and not task.done():
            task.cancel()

    async def _leftovers(self, this_session: set[str]) -> None:
        """Record the ending of every order an earlier session left open in the records; retried
        until it succeeds, the session ends (the next one checks again) or the gateway closes."""
        while not self._context.closed:
            try:
                await self._close_leftovers(this_session)
            except asyncio.CancelledError:
                raise
            except NotConnected:
                return  # this session is gone; the next one checks again
            except Exception as exc:  # the database, the broker or the venue failed: try again
                self._context.log_once(("leftovers", type(exc).__name__), "checking earlier sessions' orders "
                                       "failed (%s: %s); trying again every %.0f s", type(exc).__name__, exc,
                                       LEFTOVERS_RETRY_S)
                await asyncio.sleep(LEFTOVERS_RETRY_S)
                continue
            self.stats["leftover_checks"] += 1
            if self._this_session is this_session:
                self._this_session = None  # done: this session's orders need no telling apart any more
            return

    async def _close_leftovers(self, this_session: set[str]) -> None:
        recorded = await self._records.open_orders(self.params.label)  # type: ignore[union-attr]
        closed = await self._close_recorded_leftovers(recorded, this_session) if recorded else set()
        await self._record_lost_fills(this_session, closed)

    async def _record_lost_fills(self, this_session: set[str], closed: set[str]) -> None:
        """A Fill for each trade of our label since a little before the newest recorded fill that
        no recorded fill has (app/gateway/leftovers.py ``unrecorded_trades``), leaving out this
        session's orders and those in ``closed``. Without any recorded fill, the last
        LOST_FILLS_FIRST_LOOKBACK_S."""
        records = self._records
        # The recorded trade ids reach a little further back than the trades asked for: a trade
        # at the window's edge is then never taken for a lost one.
        newest, recorded = await records.recorded_fills(LOST_FILLS_LOOKBACK_S + 5.0)  # type: ignore[union-attr]
        since = (newest if newest is not None else self._clock() - LOST_FILLS_FIRST_LOOKBACK_S) - LOST_FILLS_LOOKBACK_S
        trades = await self._trade_history(since, label=self.params.label)
        # This session's orders as of the answer: the venue reported each of its fills before
        # answering, and each order's first status put it in this_session.
        lost = unrecorded_trades(trades, recorded, this_session | closed)
        if not lost:
            return
        context, learnt_at = self._context, utc(self._clock())
        for trade in lost:
            try:
                fill = fill_record(trade, trade, None, str(trade["trade_id"]), str(trade["order_id"]),
                                   str(trade["instrument_name"]), str(trade["direction"]), learnt_at)
            except (KeyError, TypeError, ValueError) as exc:
                self.stats["unrecordable_updates"] += 1
                context.log_once(("unrecordable trade",), "a trade without %s: %r", exc, trade)
                continue
            self.stats["lost_fills"] += 1
            context.emit(context.on_fill, fill)
        log.warning("%d fills of earlier sessions were in no record (a worker stopped before it handed them on): "
                    "recorded now from the venue's trade history", len(lost))

    async def _close_recorded_leftovers(self, recorded: list[RecordedOrder], this_session: set[str]) -> set[str]:
        """End the recorded open orders the venue no longer holds, cancel those it still holds;
        the order_ids whose endings (and fills) were recorded."""
        open_now = await self.client.call("private/open_orders")
        resting = {str(o["order_id"]) for o in open_now if isinstance(o, dict) and o.get("order_id") is not None} \
            if isinstance(open_now, list) else set()
        gone, still_resting = split_leftovers(recorded, resting, this_session)
        cancelled: list[tuple[RecordedOrder, dict]] = []
        for order in still_resting:
            # The venue has not deleted it yet (its session may still be half open): we do.
            try:
                status = await self.client.call("private/cancel", {"order_id": order.order_id})
            except ThalexError as exc:
                if exc.code != ORDER_NOT_FOUND:
                    raise
                gone.append(order)  # deleted or filled meanwhile: the trade history tells which
                continue
            if isinstance(status, dict):
                self.stats["leftovers_resting"] += 1
                cancelled.append((order, status))
        if not gone and not cancelled:
            return set()
        orders = gone + [order for order, _ in cancelled]
        trades = trades_by_order(await self._trade_history(min(o.create_time for o in orders)),
                                 (o.order_id for o in orders))
        for order, status in cancelled:
            self._record_leftover(status, unrecorded_fills(order, trades[order.order_id]))
        filled = 0
        for order in gone:
            status = closing_status(order, trades[order.order_id])
            if status["delete_reason"] == FILLED_REASON:
                filled += 1
                self.stats["leftovers_filled"] += 1
            else:
                self.stats["leftovers_cancelled"] += 1
            self._record_leftover(status, status["fills"])
        log.info("orders earlier sessions left open in the records: %d ended (%d of them filled), %d still "
                 "resting and cancelled now", len(gone), filled, len(cancelled))
        return {order.order_id for order in orders}

    async def _trade_history(self, since: float, label: Optional[str] = None) -> list[dict]:
        """Our account's trades from ``since`` (unix seconds) on, oldest first, every page; only
        those of orders with ``label`` if given."""
        params: dict[str, Any] = {"time_low": math.floor(since), "sort": "ascending", "limit": TRADE_HISTORY_PAGE}
        if label is not None:
            params["label"] = label
        trades: list[dict] = []
        while True:
            result = await self.client.call("private/trade_history", params)
            page = result.get("trades") if isinstance(result, dict) else None
            if not isinstance(page, list):
                raise TypeError(f"private/trade_history answered {result!r}, not a page of trades")
            trades.extend(page)
            bookmark = result.get("bookmark")
            if not bookmark or not page:
                return trades
            params = {**params, "bookmark": bookmark}

    def _record_leftover(self, status: dict, fills: list[dict]) -> None:
        """The Ack of an earlier session's order and a Fill per fill not yet recorded. Not through the
        tracker: the order is not this session's (its client_order_id may be one of ours now), and
        its fills are in the portfolio this session started from."""
        context = self._context
        learnt_at = utc(self._clock())
        try:
            ack = ack_record(status, None, learnt_at)
            instrument = str(status["instrument_name"])
            records = [fill_record(raw, status, None, str(raw["trade_id"]), ack.order_id, instrument, ack.direction,
                                   learnt_at) for raw in fills]
        except (KeyError, TypeError, ValueError) as exc:
            self.stats["unrecordable_updates"] += 1
            context.log_once(("unrecordable",), "an order update without %s: %r", exc, status)
            return
        context.emit(context.on_ack, ack)
        for fill in records:
            self.stats["leftover_fills"] += 1
            context.emit(context.on_fill, fill)

    async def cancel_all(self) -> None:
        """Delete every order of this session, in flight included (private/cancel_session,
        docs/thalex-protocol.md §4.6).

        Orders of other sessions survive. Not held back by the local bucket (an emergency
        stop must go out); a throttled attempt is retried after the back-off. The local
        state follows from the session.orders updates that the venue sends.
        """
        context = self._context
        context.cancel_bucket.take(self._clock())  # counted, so the local bucket stays in step with the venue's
        for _attempt in range(3):
            try:
                await self.client.call("private/cancel_session", timeout=self.params.request_timeout_s)
                self._mode.session_reset()  # cancel_session also resets the protection groups
                return
            except ThalexError as exc:
                context.count_error(exc.code, f"cancel_session: {exc}")
                if exc.code not in SLOW_DOWN_CODES:
                    raise
                # The session's bucket at the time of the pause (a reconnect makes new ones).
                await asyncio.sleep(context.cancel_bucket.pause(self._clock()))
        raise ThalexError("private/cancel_session", 4, "still throttled after 3 attempts")

    async def close(self) -> None:
        """Shutdown: cancel_session, wait (briefly) for answers in flight and for the final report
        of every order the session held; reconcile does nothing after.

        Does not close the client (the market-data source owns it). If the session is already
        gone, its orders went with it (COD), and the next session records their ending."""
        if self._context.closed:
            return
        self._context.closed = True
        self._stop_leftovers()
        reports = _FinalReports(self._mode.live_order_ids())
        self._tracker.status_listeners.append(reports.on_status)
        try:
            try:
                await self.cancel_all()
            except (ThalexError, NotConnected, asyncio.TimeoutError) as exc:
                log.warning("cancel_session on close failed (cancel-on-disconnect deletes the orders "
                            "when the session ends): %s", exc)
                await self.wait_idle(self.params.request_timeout_s)
                return
            await self.wait_idle(self.params.request_timeout_s)
            # The venue reports each order it deleted on session.orders: those reports are the
            # orders' endings in the records, worth a short wait.
            try:
                await asyncio.wait_for(reports.done.wait(), self.params.request_timeout_s)
            except asyncio.TimeoutError:
                self.stats["final_reports_missing"] += len(reports.waiting)
                log.warning("%d orders got no final report after cancel_session; the next session records "
                            "their ending (docs/architecture.md#d17-orders-that-end-with-a-session)",
                            len(reports.waiting))
        finally:
            self._tracker.status_listeners.remove(reports.on_status)

    async def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Wait until every request sent so far has its answer (or failed)."""
        while self._context.tasks:
            done, _ = await asyncio.wait(set(self._context.tasks), timeout=timeout)
            if not done:
                return

    # -- queries ---------------------------------------------------------------------

    def position(self, instrument: str) -> float:
        """Signed position (buy +, sell −): at session start, plus this session's fills since."""
        return self.positions.position(instrument)

    def paused_for(self, cancels: bool = False) -> float:
        """Seconds until inserts and amends (or, with ``cancels``, cancels) may go out again
        after a venue throttle; 0 when not paused."""
        bucket = self._context.cancel_bucket if cancels else self._context.order_bucket
        return max(0.0, bucket.paused_until - self._clock())

    def open_orders(self, instrument: str) -> list[TrackedOrder]:
        """Copies of the orders not known to be final (pending ones included), bids first, by level."""
        return open_copies(self._mode.open_orders(instrument))

    # -- reconcile -------------------------------------------------------------------

    def reconcile(self, instrument: str, tick_size: float, bids: Sequence[Sequence[float]],
                  asks: Sequence[Sequence[float]], stamps: Any = None,
                  max_position: Optional[float] = None) -> Actions:
        """Send what it takes to make the instrument's orders match ``bids`` and ``asks``.

        ``stamps``: anything with ``received_at`` and ``quoted_at`` (QuoteStamps, a
        QuoteDecision). Levels with an amount ≤ 0 count as absent. Returns what was sent.

        ``max_position``: the pre-trade check. The desired ladder fits the limit, but the
        way there may not: an order whose cancel or amend-down is still unanswered (a side
        being replaced, with mass quotes) can fill while the new one rests. So what could
        add to the position goes out only if the position plus everything the side could
        still fill stays within ±max_position; the rest waits for a later reconcile, when the
        reductions have been answered (``skipped_exposure``).
        """
        if not tick_size > 0:
            raise ValueError(f"tick_size must be > 0, got {tick_size!r}")
        if self._context.closed:
            return Actions()  # shutting down: nothing new goes out
        if not self._started:
            raise RuntimeError("OrderGateway.reconcile before start(): cancel-on-disconnect is not set")
        if not self.client.connected.is_set():
            # Reconnecting. The client sets ``connected`` after the login, the session hooks
            # (ours reads the position) and the resubscriptions, public channels first: a tick
            # can come before session.orders is subscribed again, and a fill of an order placed
            # then would reach neither the position nor the fill topic.
            self.stats["skipped_not_connected"] += 1
            return Actions()
        return self._mode.reconcile(instrument, tick_size, bids, asks, stamps, max_position,
                                    self.positions.position(instrument))
