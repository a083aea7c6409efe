"""The mass-quote mode of the gateway: ``private/mass_quote`` and MM protection (``GatewayParams.mass_quote``).

For an approved market-making account only (docs/thalex-protocol.md §4.7).

Contract (this part of the gateway's, app/gateway/gateway.py)
- ``reconcile`` sends one ``private/mass_quote`` for the instrument with each side that
  changed; a side sent replaces the venue's side atomically. A level within the amend
  threshold goes out at its old price and amount, so the venue keeps it and its priority
  (app/gateway/planning.py ``held_side``). At most one mass quote in flight per instrument:
  a decision meanwhile is skipped, and ``on_requote(instrument)`` asks the caller to decide
  again once the answer is in.
- the product's MM protection (``products`` maps instrument → product) is set in the same
  write, before its first quote on a session. When ``session.mm_protection`` says the venue
  pulled the quotes (the protection is used up), the product pauses for
  ``mm_refill_delay_s``, is refilled, and ``on_requote`` is called for its instruments. A
  refused protection or mass quote stops quoting the product for the session, logged and
  counted.
- quotes have no client_order_id: they are tracked by order_id from ``session.orders`` (the
  tracker hands them here), and their acks carry the stamps of the mass quote that placed
  them.
- with ``max_position``, the pre-trade check (planning.py ``fit_side``) cuts a side about to
  be sent from its deepest level until the position, plus what the venue may still fill of
  this side (``_exposure``), plus the new side in full, stays within the limit; a side not
  sent adds nothing. ``on_requote`` follows the answer, when the held-back levels may fit.
  Replacement is not volume-safe: what the venue holds can fill until it reads the new side,
  and a quote it keeps can fill in part and then be replaced by a fresh one. The account of
  what the venue may fill rests on the order of one connection: the venue answers a request
  after it has carried it out, and reports every fill before anything it answers later. So
  a fill reported before the answer is of the side being replaced, and after a successful
  answer the venue holds the new side and nothing older; a request with no answer may still
  have been carried out, so both sides count until a later one is answered.
- a filled or pulled quote, a failed or throttled request, a lost protection group: the
  side is no longer known to be what was sent, and goes out again with the next decision.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional, Sequence

from app.clock import utc
from app.exchange.client import NotConnected, ThalexError
from app.exchange.messages import Notification
from app.exchange.protocol import FINAL_STATUSES, INVALID_PROT_GROUP, PROT_NOT_SET, SLOW_DOWN_CODES
from app.gateway.context import GatewayContext
from app.gateway.planning import Level, desired_levels, fit_side, held_side
from app.gateway.records import Actions, fills_of
from app.gateway.tracker import OrderTracker, TrackedOrder

log = logging.getLogger(__name__)


class MassQuoteMode:
    """Both sides of an instrument per request; quotes tracked by order_id."""

    def __init__(self, context: GatewayContext, tracker: OrderTracker, products: dict[str, str]) -> None:
        self._context = context
        #: instrument → MM-protection product ("F" + underlying, docs/thalex-protocol.md §4.7),
        #: from public/instruments.
        self._products = dict(products)
        #: order_id → each live quote, as session.orders reports it.
        self._quotes: dict[str, TrackedOrder] = {}
        #: (instrument, direction) → the side as last sent, or None when the venue's side is
        #: not known to be it (never sent, a fill, a pull, a failed request): sent again.
        self._sent_sides: dict[tuple[str, str], Optional[tuple[Level, ...]]] = {}
        #: (instrument, direction) → the most the venue may still fill of what it holds (or
        #: may hold) on that side, beyond the fills reported: the pre-trade check's account.
        self._exposure: dict[tuple[str, str], float] = {}
        #: instruments whose mass quote is unanswered: one at a time, as orders are.
        self._in_flight: set[str] = set()
        #: instruments to re-quote once their mass quote is answered: a decision came while it
        #: was in flight, or the pre-trade check held levels back.
        self._requote_wanted: set[str] = set()
        #: instrument → (received_at, quoted_at, order_sent_at) of its last mass quote.
        self._stamps: dict[str, tuple] = {}
        #: product → "set" | "pulled" (until refilled) | "refused" (the account may not mass quote).
        self._protection: dict[str, str] = {}
        tracker.quote_handler = self._apply_quote
        tracker.fill_listeners.append(self._on_fill)
        self.channels = {"session.mm_protection": self._on_protection}

    # -- the mode's interface (app/gateway/gateway.py Mode) ---------------------------------

    def reconcile(self, instrument: str, tick_size: float, bids: Sequence[Sequence[float]],
                  asks: Sequence[Sequence[float]], stamps: Any, max_position: Optional[float],
                  position: float) -> Actions:
        """Both sides of the instrument in one private/mass_quote, each side only if it changed.
        The first quote of a product on a session sets its MM protection first."""
        context, stats = self._context, self._context.stats
        product = self._products.get(instrument)
        if product is None:
            raise ValueError(f"mass quoting {instrument}: no product for it (OrderGateway(products=...))")
        if self._protection.get(product) in ("pulled", "refused"):
            stats["skipped_protection"] += 1
            return Actions(skipped=1)
        if instrument in self._in_flight:
            stats["skipped_in_flight"] += 1
            self._requote_wanted.add(instrument)  # this decision's ladder goes out once the answer is in
            return Actions(skipped=1)
        item: dict[str, Any] = {"i": instrument}
        sides: dict[str, tuple[Level, ...]] = {}
        skipped = 0
        for direction, key, ladder in (("buy", "b", bids), ("sell", "a", asks)):
            last = self._sent_sides.get((instrument, direction))
            side = held_side(desired_levels(ladder), last or (), tick_size, context.params.amend_threshold_ticks)
            if side != last and max_position is not None:
                exposure = self._exposure.get((instrument, direction), 0.0)
                side, cut = fit_side(side, exposure, direction, position, max_position)
                stats["skipped_exposure"] += cut
                skipped += cut
            if side != last:
                item[key] = [[price, amount] for price, amount in side]
                sides[direction] = side
        if not sides:
            return Actions(skipped=skipped)
        now = context.clock()
        if not context.order_bucket.take(now):
            stats["throttled_local"] += 1
            return Actions(skipped=skipped + 1)
        try:
            if product not in self._protection:
                self._set_protection(product)
            params: dict[str, Any] = {"quotes": [item], "label": context.params.label, "post_only": True}
            if context.params.reject_post_only:
                params["reject_post_only"] = True
            # The stamps go with every quote the venue reports for this instrument from now on.
            self._stamps[instrument] = (getattr(stamps, "received_at", None), getattr(stamps, "quoted_at", None),
                                        utc(now))
            reply = context.client.send_request("private/mass_quote", params)
        except NotConnected as exc:
            stats["request_failures"] += 1
            context.log_once(("request_failure", "private/mass_quote"), "mass_quote got no answer: %r", exc)
            return Actions(skipped=skipped + 1)
        for direction, side in sides.items():
            self._sent_sides[(instrument, direction)] = side
        self._in_flight.add(instrument)
        stats["mass_quotes"] += 1
        if skipped:
            self._requote_wanted.add(instrument)  # the held-back levels fit once the old side is gone
        sent = {direction: sum(amount for _price, amount in side) for direction, side in sides.items()}
        context.track(self._await_quote_reply(instrument, product, reply, sent))
        return Actions(skipped=skipped, quotes=1)

    def open_orders(self, instrument: str) -> list[TrackedOrder]:
        return [q for q in self._quotes.values() if q.instrument == instrument]

    def live_order_ids(self) -> set[str]:
        return set(self._quotes)

    def session_lost(self) -> list[str]:
        """The connection dropped: the quotes' order_ids (they may still rest, until the venue
        notices), and everything of the session forgotten."""
        orphans = list(self._quotes)
        self.session_reset()
        return orphans

    def session_reset(self) -> None:
        """The session's quotes and protection groups are gone (new session, cancel_session)."""
        self._quotes.clear()
        self._sent_sides.clear()
        self._exposure.clear()
        self._in_flight.clear()
        self._requote_wanted.clear()
        self._protection.clear()

    # -- MM protection ----------------------------------------------------------------------

    def _set_protection(self, product: str, refill: bool = False) -> None:
        """private/set_mm_protection for ``product`` (sets or, with ``refill``, refills it);
        written now, answered later."""
        params = self._context.params
        self._protection[product] = "set"
        reply = self._context.client.send_request("private/set_mm_protection", {
            "product": product, "trade_amount": params.mm_trade_amount, "quote_amount": params.mm_quote_amount})
        self._context.track(self._await_protection(product, reply, refill))

    async def _await_protection(self, product: str, reply: asyncio.Future, refill: bool) -> None:
        context = self._context
        try:
            await asyncio.wait_for(reply, context.params.request_timeout_s)
            if refill:  # quote again now, not at the next market event
                for instrument in self._instruments_of(product):
                    context.emit(context.on_requote, instrument)
        except ThalexError as exc:
            if exc.code in SLOW_DOWN_CODES:
                self._protection.pop(product, None)  # set again with the next quote
                context.count_error(exc.code, f"set_mm_protection {product} throttled")
                return
            # The account may not mass quote (or the product is wrong): nothing to retry.
            self._protection[product] = "refused"
            context.count_error(exc.code, f"set_mm_protection {product} refused: {exc.message}; no quotes for "
                                          f"{product} on this session (is the account a market-making account?)")
        except (NotConnected, asyncio.TimeoutError) as exc:
            self._protection.pop(product, None)
            context.stats["request_failures"] += 1
            context.log_once(("request_failure", "private/set_mm_protection"), "set_mm_protection %s got no "
                             "answer: %r", product, exc)

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
            self._context.stats["protection_pulls"] += 1
            for instrument in self._instruments_of(product):
                self._forget_sides(instrument)
            log.warning("MM protection %s used up: the venue pulled the quotes; refilling in %.1f s", product,
                        self._context.params.mm_refill_delay_s)
            asyncio.get_running_loop().call_later(self._context.params.mm_refill_delay_s, self._refill, product)

    def _refill(self, product: str) -> None:
        if self._context.closed or self._protection.get(product) != "pulled":
            return  # closed, or the session changed meanwhile (a new one sets its own)
        try:
            self._set_protection(product, refill=True)
        except NotConnected:
            self._protection.pop(product, None)  # set with the next quote, on the next session
            return
        self._context.stats["protection_refills"] += 1

    # -- answers and reports ----------------------------------------------------------------

    async def _await_quote_reply(self, instrument: str, product: str, reply: asyncio.Future,
                                 sent: dict[str, float]) -> None:
        """The answer to a mass quote that sent ``sent`` (direction → the side's total amount)."""
        context, stats = self._context, self._context.stats
        try:
            result = await asyncio.wait_for(reply, context.params.request_timeout_s)
        except ThalexError as exc:
            # Refused as a whole: the venue kept what it held, and the exposure with it.
            if exc.code in SLOW_DOWN_CODES:
                stats["throttled_venue"] += 1
                pause = context.order_bucket.pause(context.clock())
                context.count_error(exc.code, f"mass_quote throttled by the venue: pausing {pause:.2f} s")
                self._forget_sides(instrument)  # nothing changed at the venue: send again after the pause
            else:
                # Not about one level (those come back in the result): the session or the account
                # may not mass quote (a persistent session, no market-making account). Retrying
                # cannot help; quoting the product stops, loudly.
                self._protection[product] = "refused"
                context.count_error(exc.code, f"mass_quote {instrument} refused: {exc.message}; no more quotes "
                                              f"for {product} on this session")
            return
        except (NotConnected, asyncio.TimeoutError) as exc:
            stats["request_failures"] += 1
            context.log_once(("request_failure", "private/mass_quote"), "mass_quote %s got no answer: %r",
                             instrument, exc)
            self._forget_sides(instrument)
            for direction, amount in sent.items():  # carried out or not: both sides may fill
                key = (instrument, direction)
                self._exposure[key] = self._exposure.get(key, 0.0) + amount
            return
        finally:
            self._in_flight.discard(instrument)
        for direction, amount in sent.items():
            # Carried out: the venue holds the new side and nothing older (a level it refused
            # still counts, which errs on the safe side).
            self._exposure[(instrument, direction)] = amount
        context.order_bucket.recovered(context.clock())
        errors = result.get("errors") if isinstance(result, dict) else None
        for error in errors if isinstance(errors, list) else ():
            code = error.get("code") if isinstance(error, dict) else None
            stats["quote_levels_failed"] += 1
            if code in (PROT_NOT_SET, INVALID_PROT_GROUP) and self._protection.get(product) == "set":
                self._protection.pop(product, None)  # the group is gone: set it with the next quote
                self._forget_sides(instrument)
            # Other refusals (price, size, tick): that level is not sent again until it changes.
            context.count_error(code if isinstance(code, int) else -1, f"mass_quote {instrument} level refused: "
                                                                       f"{error}")
        if instrument in self._requote_wanted:
            self._requote_wanted.discard(instrument)
            context.emit(context.on_requote, instrument)

    def _apply_quote(self, status: dict) -> TrackedOrder:
        """One OrderStatus of a quote (the tracker's quote_handler): track it while it lives.
        Its first report gets the stamps of the instrument's last mass quote (the one that
        placed it); a quote never goes backwards (fills only grow)."""
        order_id = str(status["order_id"])
        quote = self._quotes.get(order_id)
        if quote is None:
            instrument = str(status.get("instrument_name"))
            received_at, quoted_at, sent_at = self._stamps.get(instrument, (None, None, None))
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
        if fills_of(status) or (quote.final and quote.delete_reason not in ("replaced", None)):
            # Filled, or pulled by the venue: the side is no longer what was sent.
            self._sent_sides[(quote.instrument, quote.direction)] = None
        return quote

    def _on_fill(self, instrument: str, direction: str, amount: float) -> None:
        """A new fill of a quote (the tracker's fill listener): that much less may still fill."""
        key = (instrument, direction)
        self._exposure[key] = max(0.0, self._exposure.get(key, 0.0) - amount)

    def _instruments_of(self, product: str) -> list[str]:
        return [instrument for instrument, its_product in self._products.items() if its_product == product]

    def _forget_sides(self, instrument: str) -> None:
        for direction in ("buy", "sell"):
            self._sent_sides[(instrument, direction)] = None
