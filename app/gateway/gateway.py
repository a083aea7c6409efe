"""The order gateway: the quote agent's desired ladders as orders on one venue session.

Contract
- runs on a ThalexClient that is connected and logged in (the market-data source's
  session, design D1). ``start()`` sets cancel-on-disconnect (§4.1) and subscribes
  ``session.orders``; it registers a session hook and a disconnect listener, so every
  reconnect of the client sets cancel-on-disconnect again before anything is sent.
  Every order the gateway inserts is therefore non-persistent and dies with its
  session (design D2).
- ``reconcile(instrument, tick_size, bids, asks, stamps)`` compares the desired ladder
  (best first, ``(price, amount)`` pairs) with the orders the gateway has per side and
  level, and sends what differs: an insert (post-only GTC limit, with the label and
  a fresh client_order_id) where a level has no live order; an amend (by
  client_order_id) only when the price is more than ``amend_threshold_ticks`` ticks
  from what was last asked for, or the amount changed; a cancel for each order beyond
  the desired number of levels. Empty ladders cancel everything of the instrument
  (that is how a HALTED risk state takes effect). Prices go out as given: rounding to
  the tick is the quote core's job, and a price the venue rejects shows the bug.
- one request per order at a time: an order whose request is in flight is left alone
  until the answer is in. Requests leave before ``reconcile`` returns; their answers
  are handled when they arrive (``wait_idle()`` waits for them).
- ``session.orders`` is the truth: each update (and each request's answer) replaces
  the local state of the order with the same client_order_id, except that an order
  never goes backwards (fills only grow; a final state stays final), because answers
  and feed items may arrive in either order.
- rates: local token buckets, a little under the venue's limits (§6.2: 10/s for inserts
  and amends, 50/s once cancel-on-disconnect is set; 1000/s for cancels). An action
  that finds its bucket empty is skipped for this reconcile (the next tick retries)
  and counted (``throttled_local``).
- errors by code (§6.1): 1 → the order is gone; 3/4 → pause that bucket for a growing
  interval; request-content errors (price, tick, size, margin, collar, open-order
  limits…) → the level is marked failed for that price and amount, and not retried
  until the target changes; anything else is counted and logged.
- out: ``on_ack(Ack)`` for every order status received, with the D9 stamps of the
  quote whose request last changed the order (received_at, quoted_at, order_sent_at)
  and ack_received_at; ``on_fill(Fill)`` once per new fill, keyed by (trade_id,
  order_id). ``position(instrument)`` (signed: the account's position read with
  private/portfolio when the session opened, plus the fills since),
  ``open_orders(instrument)`` and ``stats``.
- after a drop: everything the gateway had is gone (COD deletes it; client_order_ids
  were session-local); on the new session, before anything else, COD is set again,
  the old orders whose order_id is known are cancelled by id (in case the venue had
  not noticed the drop yet), and positions are read again.
- ``cancel_all()`` (private/cancel_session: only this session's orders; other bots' and
  the UI's survive) and ``close()`` (cancel_session, then no more requests).
- mass quoting (``mass_quote``, an approved market-making account, §4.7): ``reconcile``
  sends one ``private/mass_quote`` for the instrument with each side that changed (a level
  within the amend threshold goes out at its old price and amount, so the venue keeps it
  and its priority); at most one in flight per instrument. The product's MM protection
  (``products`` maps instrument → product) is set in the same write before its first
  quote on a session; when ``session.mm_protection`` says the venue pulled the quotes, the
  product pauses for ``mm_refill_delay_s`` and is refilled. Quotes have no client_order_id:
  they are tracked by order_id from ``session.orders``, and their acks carry the stamps of
  the mass quote that placed them. The pre-trade check counts the side being replaced as
  fillable, at full size, until the venue has read the new one (replacement is not
  volume-safe), and holds back the new side's deepest levels when both would not fit;
  ``on_requote(instrument)`` asks the caller to decide again once the answer is in (also
  after a decision skipped while a quote was in flight, and after a refill). A refused
  protection or mass quote stops quoting the product for the session, logged and counted.

Fills come from ``session.orders`` only, not ``account.trade_history``: the order feed
carries them first (trade history waits for the exchange's database, §4.9), it carries
the order's client_order_id, so the fill can be matched to the quote that placed it,
and it holds exactly this session's orders. (Fees are only in trade history; the
gateway does not need them.)
"""
from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import math
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, NamedTuple, Optional, Sequence

from app.clock import utc
from app.exchange.client import NotConnected, ThalexClient, ThalexError
from app.exchange.messages import Notification
from app.exchange.protocol import (
    FINAL_STATUSES,
    INVALID_PROT_GROUP,
    ORDER_NOT_FOUND,
    POST_ONLY_CANCEL,
    PROT_NOT_SET,
    REQUEST_CONTENT_CODES,
    SLOW_DOWN_CODES,
)
from app.exchange.rate_limit import TokenBucket
from app.gateway.params import GatewayParams
from models.orders import Ack, Fill, OrderFill, OrderLeg

log = logging.getLogger(__name__)

#: Local states: not yet answered; refused at insert (never existed); gone without a
#: final report from the venue (error 1, or the session ended under us).
PENDING, REJECTED, GONE = "pending", "rejected", "gone"


class QuoteStamps(NamedTuple):
    """The D9 stamps of the quote behind a reconcile (a QuoteDecision record has the same fields)."""

    received_at: Optional[datetime] = None
    quoted_at: Optional[datetime] = None


class Actions(NamedTuple):
    """What one reconcile sent, and how many actions it had to leave for a later tick."""

    inserts: int = 0
    amends: int = 0
    cancels: int = 0
    skipped: int = 0
    #: private/mass_quote requests (mass quoting: at most one per reconcile).
    quotes: int = 0


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


def _fills(status: dict) -> list[dict]:
    fills = status.get("fills")  # required by OAS but missing in a real capture (§10): optional
    return [f for f in fills if isinstance(f, dict)] if isinstance(fills, list) else []


def ack_record(status: dict, order: Optional[TrackedOrder], ack_received_at: datetime) -> Ack:
    """models.orders.Ack of one OrderStatus (§4.10); KeyError/TypeError if a required field is missing."""
    legs = status.get("legs")
    return Ack(
        order_id=str(status["order_id"]),
        order_type=status["order_type"],
        time_in_force=status["time_in_force"],
        direction=status["direction"],
        amount=float(status["amount"]),
        filled_amount=float(status["filled_amount"]),
        remaining_amount=float(status["remaining_amount"]),
        status=status["status"],
        fills=[OrderFill(trade_id=str(f["trade_id"]), price=float(f["price"]), amount=float(f["amount"]),
                         maker_taker=f["maker_taker"], leg_index=int(f.get("leg_index", 0)), time=f.get("time"))
               for f in _fills(status)],
        change_reason=status["change_reason"],
        insert_reason=status["insert_reason"],
        create_time=float(status["create_time"]),
        persistent=bool(status["persistent"]),
        instrument_name=status.get("instrument_name"),
        legs=None if not isinstance(legs, list) else [
            OrderLeg(instrument_name=leg["instrument_name"], quantity=float(leg["quantity"]),
                     filled_amount=float(leg["filled_amount"]), remaining_amount=float(leg["remaining_amount"]))
            for leg in legs],
        price=None if status.get("price") is None else float(status["price"]),
        label=status.get("label"),
        client_order_id=status.get("client_order_id"),
        delete_reason=status.get("delete_reason"),
        conditional_order_id=status.get("conditional_order_id"),
        bot_id=status.get("bot_id"),
        close_time=status.get("close_time"),
        reduce_only=status.get("reduce_only"),
        received_at=order.received_at if order else None,
        quoted_at=order.quoted_at if order else None,
        order_sent_at=order.order_sent_at if order else None,
        ack_received_at=ack_received_at,
    )


class OrderGateway:
    """Orders for one venue session. ``await start()``, then ``reconcile`` per quote; ``close()``.

    ``reconcile`` is synchronous: each request is on the socket when it returns (the hot
    path, design D1); its answer is awaited by a task of its own.

    ``OrderGateway(client, label="P", order_rate_cod=50.0)`` or
    ``OrderGateway(client, GatewayParams(...))``: keyword arguments override fields of
    ``params`` (see GatewayParams for each one).
    """

    def __init__(self, client: ThalexClient, params: Optional[GatewayParams] = None, *,
                 clock: Callable[[], float] = time.time,
                 on_ack: Optional[Callable[[Ack], Any]] = None,
                 on_fill: Optional[Callable[[Fill], Any]] = None,
                 products: Optional[dict[str, str]] = None,
                 on_requote: Optional[Callable[[str], Any]] = None,
                 **overrides: Any) -> None:
        self.client = client
        self.params = replace(params or GatewayParams(), **overrides)
        self.on_ack = on_ack
        self.on_fill = on_fill
        #: Mass quoting: called with an instrument once the venue has answered its mass quote,
        #: when a decision was skipped meanwhile or the pre-trade check held levels back (the
        #: old side is gone now: room for them), and once a pulled protection is refilled.
        #: The caller decides again.
        self.on_requote = on_requote
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
            "acks": 0, "fills": 0, "duplicate_fills": 0,
            "unknown_orders": 0,  # updates for orders this gateway does not know (e.g. no client_order_id)
            "unrecordable_updates": 0,  # updates an Ack could not be built from (missing fields)
            "orphans_cancelled": 0, "orphans_gone": 0,  # previous sessions' orders, after a reconnect
            "callback_errors": 0,
            # mass quoting
            "mass_quotes": 0, "quote_levels_failed": 0,
            "protection_pulls": 0, "protection_refills": 0,
            "skipped_protection": 0,  # a reconcile while the product's protection is pulled or refused
            "errors_by_code": Counter(),
        }
        self._ids = itertools.count(self.params.first_client_order_id)
        self._orders: dict[int, TrackedOrder] = {}
        #: (instrument, direction) → level → client_order_id of the level's current order.
        self._slots: dict[tuple[str, str], dict[int, int]] = {}
        #: (instrument, direction, level) → (price, amount) the venue refused: not sent again.
        self._failed: dict[tuple[str, str, int], tuple[float, float]] = {}
        self._finished: OrderedDict[int, None] = OrderedDict()
        self._seen_fills: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._positions: dict[str, float] = {}
        #: order_ids that may still rest under the previous session: cancelled after a reconnect.
        self._orphans: list[str] = []
        self._tasks: set[asyncio.Task] = set()
        self._logged: set[tuple] = set()
        self._started = False
        self._closed = False
        self._order_bucket, self._cancel_bucket = self._new_buckets()
        # Mass quoting (params.mass_quote).
        #: instrument → MM-protection product ("F" + underlying, §4.7), from public/instruments.
        self._products = dict(products or {})
        #: order_id → each live quote, as session.orders reports it.
        self._quotes: dict[str, TrackedOrder] = {}
        #: (instrument, direction) → the side as last sent, or None when the venue's side is
        #: not known to be it (never sent, a fill, a pull, a failed request): sent again.
        self._sent_sides: dict[tuple[str, str], Optional[tuple[tuple[float, float], ...]]] = {}
        #: instruments whose mass quote is unanswered: one at a time, as orders are.
        self._quote_in_flight: set[str] = set()
        #: instruments to re-quote once their mass quote is answered: a decision came while it
        #: was in flight, or the pre-trade check held levels back.
        self._requote_wanted: set[str] = set()
        #: instrument → (received_at, quoted_at, order_sent_at) of its last mass quote.
        self._quote_stamps: dict[str, tuple] = {}
        #: product → "set" | "pulled" (until refilled) | "refused" (the account may not mass quote).
        self._protection: dict[str, str] = {}

    # -- life cycle ----------------------------------------------------------------

    def _new_buckets(self) -> tuple[TokenBucket, TokenBucket]:
        p, now = self.params, self._clock()
        # A new connection's venue buckets start full at the pre-COD rate (server.py, §6.2).
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
        await self.client.subscribe(["session.orders"], self._on_session_orders)
        if self.params.mass_quote:
            await self.client.subscribe(["session.mm_protection"], self._on_protection)
        self._started = True
        log.info("order gateway on %s: cancel-on-disconnect set (%.0f s), inserts and amends at most %.1f/s",
                 self.client.account, self.params.cod_timeout_s, self._order_bucket.rate)

    async def _open_session(self) -> None:
        """On every connection: COD before any order, old session's orders cancelled, positions read."""
        result = await self.client.call("private/set_cancel_on_disconnect",
                                        {"timeout_secs": self.params.cod_timeout_s})
        rate = self.params.order_rate_cod
        if isinstance(result, dict) and isinstance(result.get("message_rate"), (int, float)):
            rate = min(rate, float(result["message_rate"]))  # the venue says what it allows this session
        self._order_bucket.set_rate(rate * self.params.rate_headroom, self._clock())
        self._forget_quotes()  # a new session has no quotes and no protection groups
        await self._cancel_orphans()
        # Position = the account's position when the session opened + this session's fills.
        # Read after the orphans are gone, so no fill of theirs can fall between the two.
        portfolio = await self.client.call("private/portfolio")
        positions = {}
        for entry in portfolio if isinstance(portfolio, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("position"), (int, float)):
                positions[entry["instrument_name"]] = float(entry["position"])
        self._positions = positions

    async def _on_new_session(self, client: ThalexClient) -> None:
        """Session hook: the client reconnected and logged in; COD again before it resubscribes."""
        if self._closed or not self._started:
            return
        self._order_bucket, self._cancel_bucket = self._new_buckets()
        await self._open_session()

    def _on_disconnect(self) -> None:
        """The connection dropped: with COD the venue deletes the session's orders, and
        client_order_ids were session-local anyway. Everything live is gone; the ones with
        an order_id are cancelled by id after the reconnect, in case the venue has not yet
        noticed the drop (a half-open connection lives until the COD timeout)."""
        for order in self._orders.values():
            if not order.final:
                if order.order_id is not None:
                    self._orphans.append(order.order_id)
                self._finish(order, GONE)
        self._slots.clear()
        self._orphans.extend(self._quotes)
        self._forget_quotes()

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
                    self._count_error(exc.code, f"cancelling order {order_id} of the previous session: {exc}")
            else:
                self.stats["orphans_cancelled"] += 1
            self._orphans.pop(0)
            if isinstance(status, dict):
                self._on_status(status)

    async def cancel_all(self) -> None:
        """Delete every order of this session, in flight included (private/cancel_session, §4.6).

        Orders of other sessions survive. Not held back by the local bucket (an emergency
        stop must go out); a throttled attempt is retried after the back-off. The local
        state follows from the session.orders updates that the venue sends.
        """
        self._cancel_bucket.take(self._clock())  # counted, so the local bucket stays in step with the venue's
        for _attempt in range(3):
            try:
                await self.client.call("private/cancel_session", timeout=self.params.request_timeout_s)
                self._forget_quotes()  # cancel_session also resets the protection groups (§4.6)
                return
            except ThalexError as exc:
                self._count_error(exc.code, f"cancel_session: {exc}")
                if exc.code not in SLOW_DOWN_CODES:
                    raise
                await asyncio.sleep(self._cancel_bucket.pause(self._clock()))
        raise ThalexError("private/cancel_session", 4, "still throttled after 3 attempts")

    async def close(self) -> None:
        """Shutdown: cancel_session, wait (briefly) for answers in flight; reconcile does nothing after.

        Does not close the client (the market-data source owns it). If the session is
        already gone, its orders went with it (COD)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.cancel_all()
        except (ThalexError, NotConnected, asyncio.TimeoutError) as exc:
            log.warning("cancel_session on close failed (cancel-on-disconnect deletes the orders "
                        "when the session ends): %s", exc)
        await self.wait_idle(self.params.request_timeout_s)

    async def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Wait until every request sent so far has its answer (or failed)."""
        while self._tasks:
            done, _ = await asyncio.wait(set(self._tasks), timeout=timeout)
            if not done:
                return

    # -- queries ---------------------------------------------------------------------

    def position(self, instrument: str) -> float:
        """Signed position (buy +, sell −): at session start, plus this gateway's fills since."""
        return self._positions.get(instrument, 0.0)

    def paused_for(self, cancels: bool = False) -> float:
        """Seconds until inserts and amends (or, with ``cancels``, cancels) may go out again
        after a venue throttle; 0 when not paused."""
        bucket = self._cancel_bucket if cancels else self._order_bucket
        return max(0.0, bucket.paused_until - self._clock())

    def open_orders(self, instrument: str) -> list[TrackedOrder]:
        """Copies of the orders not known to be final (pending ones included), bids first, by level."""
        orders = [o for o in self._orders.values() if o.instrument == instrument and o.live]
        orders += [q for q in self._quotes.values() if q.instrument == instrument]
        return [copy.copy(o) for o in sorted(orders, key=lambda o: (o.direction != "buy", o.level,
                                                                   -o.price if o.direction == "buy" else o.price))]

    # -- reconcile -------------------------------------------------------------------

    def reconcile(self, instrument: str, tick_size: float, bids: Sequence[Sequence[float]],
                  asks: Sequence[Sequence[float]], stamps: Any = None,
                  max_position: Optional[float] = None) -> Actions:
        """Send what it takes to make the instrument's orders match ``bids`` and ``asks``.

        ``stamps``: anything with ``received_at`` and ``quoted_at`` (QuoteStamps, a
        QuoteDecision). Levels with an amount ≤ 0 count as absent. Returns what was sent.

        ``max_position``: the pre-trade check. The desired ladder fits the limit, but the
        way there may not: an order whose cancel or amend-down is still unanswered can
        fill while the new one rests. So an insert or amend-up goes out only if the
        position plus everything the side could still fill (each live order at the larger
        of what rests and what was asked for) stays within ±max_position; otherwise it
        waits for the next reconcile, when the reductions have been answered
        (``skipped_exposure``).
        """
        if not tick_size > 0:
            raise ValueError(f"tick_size must be > 0, got {tick_size!r}")
        if self._closed:
            return Actions()  # shutting down: nothing new goes out
        if not self._started:
            raise RuntimeError("OrderGateway.reconcile before start(): cancel-on-disconnect is not set")
        if self.params.mass_quote:
            return self._reconcile_quotes(instrument, tick_size, bids, asks, stamps, max_position)
        cancels: list[tuple] = []
        by_level: list[list[tuple]] = []
        skipped = 0
        for direction, ladder in (("buy", bids), ("sell", asks)):
            desired = [(float(p), float(a)) for p, a in ladder if a > 0]
            side_cancels, side_actions, side_skipped = self._plan_side(instrument, direction, desired, tick_size)
            cancels.extend(side_cancels)
            skipped += side_skipped
            for level, action in side_actions:
                while len(by_level) <= level:
                    by_level.append([])
                by_level[level].append(action)
        # Cancels first (they reduce exposure, and have their own bucket), then level by
        # level, bid and ask alternating: with few tokens left, the best levels of both
        # sides go out before any deeper one.
        plan = cancels + [action for level in by_level for action in level]
        received_at = getattr(stamps, "received_at", None)
        quoted_at = getattr(stamps, "quoted_at", None)
        now = self._clock()
        sent = Counter()
        exposure = self._exposure(instrument) if max_position is not None else {}
        position = self.position(instrument)
        for action in plan:
            kind = action[0]
            if max_position is not None and kind != "cancel":
                direction, added = self._added_exposure(action)
                sign = 1.0 if direction == "buy" else -1.0
                if added > 0 and sign * position + exposure[direction] + added > max_position + 1e-9:
                    self.stats["skipped_exposure"] += 1
                    skipped += 1
                    continue
                exposure[direction] += max(0.0, added)
            bucket = self._cancel_bucket if kind == "cancel" else self._order_bucket
            if not bucket.take(now):
                self.stats["throttled_local"] += 1
                skipped += 1
                continue
            self._launch(action, instrument, received_at, quoted_at)
            sent[kind] += 1
        return Actions(sent["insert"], sent["amend"], sent["cancel"], skipped)

    def _exposure(self, instrument: str) -> dict[str, float]:
        """Per direction, what the live orders could still fill: each at the larger of its
        remaining amount and the remaining amount last asked for (an amend may be in flight)."""
        out = {"buy": 0.0, "sell": 0.0}
        for order in self._orders.values():
            if order.instrument == instrument and order.live:
                out[order.direction] += self._order_exposure(order)
        return out

    @staticmethod
    def _order_exposure(order: TrackedOrder) -> float:
        return max(order.remaining_amount, order.target_amount - order.filled_amount, 0.0)

    def _added_exposure(self, action: tuple) -> tuple[str, float]:
        """(direction, how much an insert or amend adds to what the side could fill)."""
        if action[0] == "insert":
            return action[1], action[4]
        _, order, _price, amount = action
        return order.direction, max(0.0, amount - order.filled_amount - self._order_exposure(order))

    def _plan_side(self, instrument: str, direction: str, desired: list[tuple[float, float]],
                   tick_size: float) -> tuple[list[tuple], list[tuple[int, tuple]], int]:
        """(cancels, [(level, action)], skipped) for one side; sends nothing."""
        slots = self._slots.get((instrument, direction), {})
        cancels: list[tuple] = []
        actions: list[tuple[int, tuple]] = []
        skipped = 0
        for level in sorted(slots):
            order = self._orders[slots[level]]
            if level < len(desired) and order.status != PENDING:
                continue
            # Beyond the ladder: cancel. A pending order whose insert got no answer
            # (timeout) is cancelled too: that tells whether it exists (code 1: it does not).
            if order.in_flight is not None:
                if level >= len(desired):
                    self.stats["skipped_in_flight"] += 1
                    skipped += 1
                continue
            cancels.append(("cancel", order))
        for level, (price, amount) in enumerate(desired):
            key = (instrument, direction, level)
            refused = self._failed.get(key)
            if refused is not None:
                if refused == (price, amount):
                    self.stats["skipped_failed"] += 1
                    skipped += 1
                    continue
                del self._failed[key]  # a new target: try again
            coid = slots.get(level)
            if coid is None:
                actions.append((level, ("insert", direction, level, price, amount)))
                continue
            order = self._orders[coid]
            if order.in_flight is not None:
                self.stats["skipped_in_flight"] += 1
                skipped += 1
                continue
            if order.status == PENDING:
                continue  # its insert got no answer: the cancel planned above finds out
            moved = abs(price - order.target_price) / tick_size > self.params.amend_threshold_ticks + 1e-9
            resized = not math.isclose(amount, order.target_amount, rel_tol=1e-9, abs_tol=1e-12)
            if moved or resized:
                actions.append((level, ("amend", order, price, amount)))
        return cancels, actions, skipped

    def _launch(self, action: tuple, instrument: str, received_at: Optional[datetime],
                quoted_at: Optional[datetime]) -> None:
        kind = action[0]
        if kind == "insert":
            _, direction, level, price, amount = action
            coid = next(self._ids)
            order = TrackedOrder(client_order_id=coid, instrument=instrument, direction=direction, level=level,
                                 target_price=price, target_amount=amount, price=price, amount=amount,
                                 remaining_amount=amount)
            self._orders[coid] = order
            self._slots.setdefault((instrument, direction), {})[level] = coid
            params: dict[str, Any] = {
                "direction": direction, "instrument_name": instrument, "amount": amount, "price": price,
                "order_type": "limit", "time_in_force": "good_till_cancelled", "post_only": True,
                "label": self.params.label, "client_order_id": coid,
            }
            if self.params.reject_post_only:
                params["reject_post_only"] = True
            method, previous = "private/insert", None
            self.stats["inserts"] += 1
        elif kind == "amend":
            _, order, price, amount = action
            previous = (order.target_price, order.target_amount)
            order.target_price, order.target_amount = price, amount
            params = {"client_order_id": order.client_order_id, "price": price, "amount": amount}
            method = "private/amend"
            self.stats["amends"] += 1
        else:
            _, order = action
            params = {"client_order_id": order.client_order_id}
            method, previous = "private/cancel", None
            self.stats["cancels"] += 1
        order.in_flight = method
        # From now on the order carries the stamps of the quote behind this request; all
        # three set together, right before the request leaves, so no ack mixes two quotes.
        order.received_at, order.quoted_at, order.order_sent_at = received_at, quoted_at, utc(self._clock())
        try:
            reply = self.client.send_request(method, params)
        except NotConnected as exc:
            self._no_answer(order, method, exc)
            return
        self._track(self._await_reply(order, method, reply, previous))

    def _track(self, awaiting: Any) -> None:
        """Run ``awaiting`` (a request's answer) as a task that wait_idle() waits for."""
        task = asyncio.get_running_loop().create_task(awaiting)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _no_answer(self, order: TrackedOrder, method: str, exc: BaseException) -> None:
        # The order's state is unknown. A pending insert is cleared up by a cancel on the
        # next reconcile; after a drop, _on_disconnect already gave up on it.
        order.in_flight = None
        self.stats["request_failures"] += 1
        self._log_once(("request_failure", method), "%s for order %d got no answer: %r (counting further ones "
                       "in stats['request_failures'])", method, order.client_order_id, exc)

    async def _await_reply(self, order: TrackedOrder, method: str, reply: asyncio.Future,
                           previous: Optional[tuple[float, float]]) -> None:
        bucket = self._cancel_bucket if method == "private/cancel" else self._order_bucket
        try:
            result = await asyncio.wait_for(reply, self.params.request_timeout_s)
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
        bucket.recovered(self._clock())
        if isinstance(result, dict):
            self._on_status(result)

    def _on_error(self, order: TrackedOrder, method: str, exc: ThalexError,
                  previous: Optional[tuple[float, float]], bucket: TokenBucket) -> None:
        code = exc.code
        tried = (order.target_price, order.target_amount)
        if method == "private/insert":
            self._finish(order, REJECTED)  # never existed: the level is free again
        elif previous is not None:
            order.target_price, order.target_amount = previous  # the amend did not happen
        if code == ORDER_NOT_FOUND:
            self.stats["errors_by_code"][code] += 1
            if not order.final:
                self._finish(order, GONE)  # filled or cancelled meanwhile; the feed may tell which
            return
        if code in SLOW_DOWN_CODES:
            self.stats["throttled_venue"] += 1
            pause = bucket.pause(self._clock())
            self._count_error(code, f"{method} throttled by the venue: pausing {pause:.2f} s")
            return
        if code in REQUEST_CONTENT_CODES and method != "private/cancel":
            # The same request would get the same answer: not again until the target changes.
            self._failed[(order.instrument, order.direction, order.level)] = tried
            self._count_error(code, f"{method} {order.instrument} {order.direction} level {order.level} at "
                                    f"{tried[0]} x {tried[1]} refused: {exc.message}; not retried at that price")
            return
        self._count_error(code, f"{method} for order {order.client_order_id} failed: {exc}")

    def _count_error(self, code: int, message: str) -> None:
        self.stats["errors_by_code"][code] += 1
        self._log_once(("error", code), "%s (error %d, logged once; counted in stats['errors_by_code'])",
                       message, code)

    def _log_once(self, key: tuple, message: str, *args: Any) -> None:
        if key in self._logged:
            log.debug(message, *args)
        else:
            self._logged.add(key)
            log.warning(message, *args)

    # -- mass quoting (params.mass_quote, §4.7) ---------------------------------------------

    def _reconcile_quotes(self, instrument: str, tick_size: float, bids: Sequence[Sequence[float]],
                          asks: Sequence[Sequence[float]], stamps: Any, max_position: Optional[float]) -> Actions:
        """Both sides of the instrument in one private/mass_quote, each side only if it changed.

        A side sent replaces the venue's side atomically; a level that moved no more than the
        amend threshold is sent at its old price and amount, which the venue keeps (with its
        priority). The first quote of a product on a session sets its MM protection first."""
        product = self._products.get(instrument)
        if product is None:
            raise ValueError(f"mass quoting {instrument}: no product for it (OrderGateway(products=...))")
        if self._protection.get(product) in ("pulled", "refused"):
            self.stats["skipped_protection"] += 1
            return Actions(skipped=1)
        if instrument in self._quote_in_flight:
            self.stats["skipped_in_flight"] += 1
            self._requote_wanted.add(instrument)  # this decision's ladder goes out once the answer is in
            return Actions(skipped=1)
        position = self.position(instrument)
        item: dict[str, Any] = {"i": instrument}
        sides: dict[str, tuple[tuple[float, float], ...]] = {}
        skipped = 0
        for direction, key, ladder in (("buy", "b", bids), ("sell", "a", asks)):
            last = self._sent_sides.get((instrument, direction))
            side = self._held_side([(float(p), float(a)) for p, a in ladder if a > 0], last or (), tick_size)
            if max_position is not None:
                side, cut = self._fit_side(instrument, direction, side, last or (), position, max_position)
                skipped += cut
            if side != last:
                item[key] = [[price, amount] for price, amount in side]
                sides[direction] = side
        if not sides:
            return Actions(skipped=skipped)
        now = self._clock()
        if not self._order_bucket.take(now):
            self.stats["throttled_local"] += 1
            return Actions(skipped=skipped + 1)
        try:
            if product not in self._protection:
                self._set_protection(product)
            params: dict[str, Any] = {"quotes": [item], "label": self.params.label, "post_only": True}
            if self.params.reject_post_only:
                params["reject_post_only"] = True
            # The stamps go with every quote the venue reports for this instrument from now on.
            self._quote_stamps[instrument] = (getattr(stamps, "received_at", None), getattr(stamps, "quoted_at", None),
                                              utc(now))
            reply = self.client.send_request("private/mass_quote", params)
        except NotConnected as exc:
            self.stats["request_failures"] += 1
            self._log_once(("request_failure", "private/mass_quote"), "mass_quote got no answer: %r", exc)
            return Actions(skipped=skipped + 1)
        for direction, side in sides.items():
            self._sent_sides[(instrument, direction)] = side
        self._quote_in_flight.add(instrument)
        self.stats["mass_quotes"] += 1
        if skipped:
            self._requote_wanted.add(instrument)  # the held-back levels fit once the old side is gone
        self._track(self._await_quote_reply(instrument, product, reply))
        return Actions(skipped=skipped, quotes=1)

    def _held_side(self, desired: list[tuple[float, float]], last: tuple[tuple[float, float], ...],
                   tick_size: float) -> tuple[tuple[float, float], ...]:
        """``desired``, with each level that moved no more than the amend threshold from the
        same level as last sent (same amount) kept as it was."""
        side = []
        for level, (price, amount) in enumerate(desired):
            if level < len(last):
                old_price, old_amount = last[level]
                if (abs(price - old_price) / tick_size <= self.params.amend_threshold_ticks + 1e-9
                        and math.isclose(amount, old_amount, rel_tol=1e-9, abs_tol=1e-12)):
                    price = old_price
            side.append((price, amount))
        if len({price for price, _ in side}) < len(side):  # prices on a side must be distinct (§4.7)
            return tuple(desired)
        return tuple(side)

    def _fit_side(self, instrument: str, direction: str, side: tuple[tuple[float, float], ...],
                  last: tuple[tuple[float, float], ...], position: float, max_position: float
                  ) -> tuple[tuple[tuple[float, float], ...], int]:
        """The pre-trade check of a mass quote: the side, cut from its deepest level, so that the
        position plus everything that could still fill stays within ±max_position.

        Replacement is not volume-safe (§4.7): until the venue has read the new side, the old
        one can fill, and then the new one. So what could fill is the new side plus every
        resting quote it does not keep: the side last sent, at full size (fills not yet
        reported are in neither the position nor the quotes' remaining amounts), and any other
        quote the venue still reports. A level is kept only when the venue reports a quote at
        that price that never filled and has that amount (the venue replaces a quote whose
        remaining amount differs)."""
        mine = [q for q in self._quotes.values() if q.instrument == instrument and q.direction == direction]
        untouched = {(q.price, q.amount) for q in mine if q.filled_amount == 0}
        kept = {level for level in side if level in last and level in untouched}
        at_risk = sum(amount for price, amount in last if (price, amount) not in kept)
        at_risk += sum(q.remaining_amount for q in mine if (q.price, q.amount) not in last)
        sign = 1.0 if direction == "buy" else -1.0
        room = max_position - sign * position - at_risk
        used = 0.0
        for level, (_price, amount) in enumerate(side):
            used += amount
            if used > room + 1e-9:
                self.stats["skipped_exposure"] += len(side) - level
                return side[:level], len(side) - level
        return side, 0

    def _set_protection(self, product: str, refill: bool = False) -> None:
        """private/set_mm_protection for ``product`` (sets or, with ``refill``, refills it);
        written now, answered later."""
        self._protection[product] = "set"
        reply = self.client.send_request("private/set_mm_protection", {
            "product": product, "trade_amount": self.params.mm_trade_amount,
            "quote_amount": self.params.mm_quote_amount})
        self._track(self._await_protection(product, reply, refill))

    async def _await_protection(self, product: str, reply: asyncio.Future, refill: bool) -> None:
        try:
            await asyncio.wait_for(reply, self.params.request_timeout_s)
            if refill:  # quote again now, not at the next market event
                for instrument in self._instruments_of(product):
                    self._emit(self.on_requote, instrument)
        except ThalexError as exc:
            if exc.code in SLOW_DOWN_CODES:
                self._protection.pop(product, None)  # set again with the next quote
                self._count_error(exc.code, f"set_mm_protection {product} throttled")
                return
            # The account may not mass quote (or the product is wrong): nothing to retry.
            self._protection[product] = "refused"
            self._count_error(exc.code, f"set_mm_protection {product} refused: {exc.message}; no quotes for "
                                        f"{product} on this session (is the account a market-making account?)")
        except (NotConnected, asyncio.TimeoutError) as exc:
            self._protection.pop(product, None)
            self.stats["request_failures"] += 1
            self._log_once(("request_failure", "private/set_mm_protection"), "set_mm_protection %s got no "
                           "answer: %r", product, exc)

    async def _await_quote_reply(self, instrument: str, product: str, reply: asyncio.Future) -> None:
        try:
            result = await asyncio.wait_for(reply, self.params.request_timeout_s)
        except ThalexError as exc:
            if exc.code in SLOW_DOWN_CODES:
                self.stats["throttled_venue"] += 1
                pause = self._order_bucket.pause(self._clock())
                self._count_error(exc.code, f"mass_quote throttled by the venue: pausing {pause:.2f} s")
                self._forget_sides(instrument)  # nothing changed at the venue: send again after the pause
            else:
                # Not about one level (those come back in the result): the session or the account
                # may not mass quote (a persistent session, no market-making account). Retrying
                # cannot help; quoting the product stops, loudly.
                self._protection[product] = "refused"
                self._count_error(exc.code, f"mass_quote {instrument} refused: {exc.message}; no more quotes for "
                                            f"{product} on this session")
            return
        except (NotConnected, asyncio.TimeoutError) as exc:
            self.stats["request_failures"] += 1
            self._log_once(("request_failure", "private/mass_quote"), "mass_quote %s got no answer: %r",
                           instrument, exc)
            self._forget_sides(instrument)
            return
        finally:
            self._quote_in_flight.discard(instrument)
        self._order_bucket.recovered(self._clock())
        errors = result.get("errors") if isinstance(result, dict) else None
        for error in errors if isinstance(errors, list) else ():
            code = error.get("code") if isinstance(error, dict) else None
            self.stats["quote_levels_failed"] += 1
            if code in (PROT_NOT_SET, INVALID_PROT_GROUP) and self._protection.get(product) == "set":
                self._protection.pop(product, None)  # the group is gone: set it with the next quote
                self._forget_sides(instrument)
            # Other refusals (price, size, tick): that level is not sent again until it changes.
            self._count_error(code if isinstance(code, int) else -1, f"mass_quote {instrument} level refused: {error}")
        if instrument in self._requote_wanted:
            self._requote_wanted.discard(instrument)
            self._emit(self.on_requote, instrument)

    def _on_protection(self, notification: Notification) -> None:
        """session.mm_protection: a group used up (remaining ≤ 0) means the venue pulled the
        product's quotes. Quoting it pauses for mm_refill_delay_s, then refills."""
        items = notification.payload
        if not isinstance(items, list):
            raise TypeError(f"session.mm_protection notification must be a list, got {type(items).__name__}")
        for item in items:
            if not isinstance(item, dict) or item.get("reason") != "executions":
                continue
            product, remaining = item.get("product"), item.get("remaining_amount")
            if not isinstance(remaining, (int, float)) or remaining > 1e-9 or self._protection.get(product) != "set":
                continue
            self._protection[product] = "pulled"
            self.stats["protection_pulls"] += 1
            for instrument in self._instruments_of(product):
                self._forget_sides(instrument)
            log.warning("MM protection %s used up: the venue pulled the quotes; refilling in %.1f s", product,
                        self.params.mm_refill_delay_s)
            asyncio.get_running_loop().call_later(self.params.mm_refill_delay_s, self._refill, product)

    def _refill(self, product: str) -> None:
        if self._closed or self._protection.get(product) != "pulled":
            return  # closed, or the session changed meanwhile (a new one sets its own)
        try:
            self._set_protection(product, refill=True)
        except NotConnected:
            self._protection.pop(product, None)  # set with the next quote, on the next session
            return
        self.stats["protection_refills"] += 1

    def _apply_quote(self, status: dict) -> TrackedOrder:
        """One OrderStatus of a quote: track it while it lives. Its first report gets the stamps
        of the instrument's last mass quote (the one that placed it)."""
        order_id = str(status["order_id"])
        quote = self._quotes.get(order_id)
        if quote is None:
            instrument = str(status.get("instrument_name"))
            received_at, quoted_at, sent_at = self._quote_stamps.get(instrument, (None, None, None))
            price = float(status.get("price", 0.0))
            quote = TrackedOrder(client_order_id=None, instrument=instrument, direction=str(status.get("direction")),
                                 level=0, target_price=price, target_amount=float(status.get("amount", 0.0)),
                                 price=price, amount=float(status.get("amount", 0.0)), status="open",
                                 order_id=order_id, received_at=received_at, quoted_at=quoted_at,
                                 order_sent_at=sent_at)
        filled = float(status.get("filled_amount", 0.0))
        if filled < quote.filled_amount:
            return quote  # an older report than one already applied
        quote.filled_amount = filled
        quote.remaining_amount = float(status.get("remaining_amount", 0.0))
        quote.status = str(status.get("status"))
        quote.delete_reason = status.get("delete_reason")
        if quote.status in FINAL_STATUSES or quote.remaining_amount <= 0:
            quote.final = True
            self._quotes.pop(order_id, None)
        else:
            self._quotes[order_id] = quote
        if _fills(status) or (quote.final and quote.delete_reason not in ("replaced", None)):
            # Filled, or pulled by the venue: the side is no longer what was sent.
            self._sent_sides[(quote.instrument, quote.direction)] = None
        return quote

    def _instruments_of(self, product: str) -> list[str]:
        return [instrument for instrument, its_product in self._products.items() if its_product == product]

    def _forget_sides(self, instrument: str) -> None:
        for direction in ("buy", "sell"):
            self._sent_sides[(instrument, direction)] = None

    def _forget_quotes(self) -> None:
        """The session's quotes and protection groups are gone (new session, cancel_session)."""
        self._quotes.clear()
        self._sent_sides.clear()
        self._quote_in_flight.clear()
        self._requote_wanted.clear()
        self._protection.clear()

    # -- order updates -------------------------------------------------------------------

    def _on_session_orders(self, notification: Notification) -> None:
        items = notification.payload
        if not isinstance(items, list):
            raise TypeError(f"session.orders notification must be a list, got {type(items).__name__}")
        for status in items:
            if isinstance(status, dict):
                self._on_status(status)
            else:
                self.stats["unrecordable_updates"] += 1

    def _on_status(self, status: dict) -> None:
        """One OrderStatus, from a request's answer or session.orders: state, then Ack, then fills."""
        ack_received_at = utc(self._clock())
        coid = status.get("client_order_id")
        order = self._orders.get(coid) if isinstance(coid, int) else None
        if order is not None:
            self._apply(order, status)
        elif self.params.mass_quote and coid is None and status.get("order_id") is not None:
            order = self._apply_quote(status)
        else:
            self.stats["unknown_orders"] += 1
        self.stats["acks"] += 1
        try:
            ack = ack_record(status, order, ack_received_at)
        except (KeyError, TypeError, ValueError) as exc:
            self.stats["unrecordable_updates"] += 1
            self._log_once(("unrecordable",), "an order update without %s: %r", exc, status)
        else:
            self._emit(self.on_ack, ack)
        self._take_fills(status, order, ack_received_at)

    def _apply(self, order: TrackedOrder, status: dict) -> None:
        """Replace the order's state with the venue's, unless the update is older than what we know."""
        new_status = status.get("status")
        filled = float(status.get("filled_amount", 0.0))
        remaining = float(status.get("remaining_amount", 0.0))
        final = new_status in FINAL_STATUSES or remaining <= 0  # remaining 0 ⇒ inactive (§4.10)
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
            self._finish(order, order.status)
            if order.delete_reason == POST_ONLY_CANCEL and not was_final:
                # Post-only would have crossed: the same price would be cancelled again.
                self.stats["post_only_cancelled"] += 1
                self._failed[(order.instrument, order.direction, order.level)] = (order.target_price,
                                                                                  order.target_amount)
                self._log_once(("post_only", order.instrument), "%s %s level %d at %s would cross the book: "
                               "cancelled by the venue; not retried at that price", order.instrument,
                               order.direction, order.level, order.target_price)

    def _finish(self, order: TrackedOrder, status: str) -> None:
        """The order is final (as the venue says, or as we infer): free its level, keep it a while."""
        order.status = status
        if order.final:
            return
        order.final = True
        slots = self._slots.get((order.instrument, order.direction))
        if slots is not None and slots.get(order.level) == order.client_order_id:
            del slots[order.level]
        self._finished[order.client_order_id] = None
        while len(self._finished) > self.params.finished_orders_kept:
            old, _ = self._finished.popitem(last=False)
            self._orders.pop(old, None)

    def _take_fills(self, status: dict, order: Optional[TrackedOrder], ack_received_at: datetime) -> None:
        instrument = status.get("instrument_name") or (order.instrument if order else None)
        direction = status.get("direction") or (order.direction if order else None)
        order_id = str(status.get("order_id", order.order_id if order else ""))
        for raw in _fills(status):
            # A self-trade fills two of our orders under one trade_id: the key is both.
            key = (str(raw.get("trade_id")), order_id)
            if key in self._seen_fills:
                self.stats["duplicate_fills"] += 1  # e.g. the "existing" snapshot repeats all fills
                continue
            if instrument is None or direction not in ("buy", "sell"):
                self.stats["unrecordable_updates"] += 1  # a combination order's fill: the gateway places none
                continue
            try:
                amount = float(raw["amount"])
                fill = Fill(trade_id=key[0], order_id=order_id, instrument_name=instrument, direction=direction,
                            maker_taker=raw["maker_taker"], price=float(raw["price"]), amount=amount,
                            leg_index=int(raw.get("leg_index", 0)), client_order_id=status.get("client_order_id"),
                            time=raw.get("time"), order_sent_at=order.order_sent_at if order else None,
                            ack_received_at=ack_received_at)
            except (KeyError, TypeError, ValueError) as exc:
                self.stats["unrecordable_updates"] += 1
                self._log_once(("bad_fill",), "a fill without %s: %r", exc, raw)
                continue
            self._seen_fills[key] = None
            if len(self._seen_fills) > self.params.fills_remembered:
                self._seen_fills.popitem(last=False)
            signed = amount if direction == "buy" else -amount
            # Rounded: a long run of float additions must still read 0.0 when flat.
            self._positions[instrument] = round(self._positions.get(instrument, 0.0) + signed, 10)
            self.stats["fills"] += 1
            self._emit(self.on_fill, fill)

    def _emit(self, callback: Optional[Callable[[Any], Any]], record: Any) -> None:
        if callback is None:
            return
        try:
            callback(record)
        except Exception:  # the agent's producer failing must not corrupt the order state
            self.stats["callback_errors"] += 1
            log.exception("the gateway's %s callback failed", type(record).__name__)
