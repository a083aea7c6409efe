"""Mass quotes and market-maker protection (docs/thalex-protocol.md §4.7).

``MassQuotes`` builds on matching.py: a mass quote replaces a session's quotes side by side
and places the new levels as GTC limit orders through the same matching. The rules:
- mass_quote needs a non-persistent session (set_cancel_on_disconnect first) and an MM
  protection group for each product it quotes;
- a level resting at the same price with the same remaining amount keeps its place, every
  other old quote of that side is replaced (not volume-safe);
- per item and side, errors are counted and listed in the reply instead of failing it all;
- set_mm_protection sets (refills) a group; the fills of the session's quotes count against
  it (matching.py), and a used-up group pulls the session's quotes on that product;
- cancel_mass_quote cancels the account's quotes and resets their groups.
The house liquidity (market.py) quotes through ``replace_quotes`` too.
"""
from __future__ import annotations

from typing import Any, Optional

from app.exchange.protocol import (
    INVALID_PROT_GROUP,
    INVALID_QUANTITY,
    INVALID_REQUEST,
    PERSISTENT_SESSION,
    PROT_NOT_SET,
    QUOTE_EXCEEDS_PROT_GROUP_SIZE,
    UNKNOWN_PRODUCT,
)
from app.venue.errors import VenueError
from app.venue.events import OrderEvent, ProtectionEvent
from app.venue.instruments import Instrument
from app.venue.matching import Matching
from app.venue.orders import BUY, DIRECTION_NAMES, GTC, LIMIT, SELL, Order
from app.venue.state import Protection, check_label, finite

#: At most this many quote items per mass_quote, and price levels per side of one item.
MAX_QUOTE_ITEMS = 100
MAX_QUOTE_LEVELS = 10


class MassQuotes(Matching):
    """Mass quotes, their replacement rules and the MM protection groups."""

    def set_mm_protection(self, account: str, session: int, *, product: Any, now: float,
                          trade_amount: Any = None, quote_amount: Any = None, amount: Any = None) -> None:
        """Set (refill) the protection group of ``session`` for ``product`` (docs/thalex-protocol.md §4.7)."""
        if product not in self.products:
            raise VenueError(UNKNOWN_PRODUCT, f"unknown product {product!r}")
        if amount is not None:
            trade_amount = quote_amount = amount
        if trade_amount is None or quote_amount is None:
            raise VenueError(INVALID_REQUEST, "set_mm_protection needs trade_amount and quote_amount")
        trade = finite(trade_amount, "trade_amount")
        quote = finite(quote_amount, "quote_amount")
        if trade <= 0 or quote <= 0:
            raise VenueError(INVALID_REQUEST, "trade_amount and quote_amount must be positive")
        if quote < trade:
            raise VenueError(INVALID_REQUEST, "quote_amount must be at least trade_amount")
        self.account(account)
        self.session_accounts.setdefault(session, account)
        self.protection[(session, product)] = Protection(product, trade, quote)
        self.events.append(ProtectionEvent(account, session, product, trade, "refill"))

    def mass_quote(self, account: str, session: int, *, quotes: Any, now: float, label: Any = None,
                   post_only: Any = False, reject_post_only: Any = False) -> dict:
        """Replace this session's quotes side by side (docs/thalex-protocol.md §4.7); returns {n_success, n_fail, errors}."""
        if session not in self.cod_sessions:
            raise VenueError(PERSISTENT_SESSION, "mass_quote needs a non-persistent session (set_cancel_on_disconnect)")
        if not isinstance(quotes, list) or len(quotes) > MAX_QUOTE_ITEMS:
            raise VenueError(INVALID_REQUEST, f"quotes must be a list of at most {MAX_QUOTE_ITEMS} items")
        check_label(label)
        if not isinstance(post_only, bool) or not isinstance(reject_post_only, bool):
            raise VenueError(INVALID_REQUEST, "post_only and reject_post_only must be booleans")
        if reject_post_only and not post_only:
            raise VenueError(INVALID_REQUEST, "reject_post_only requires post_only")
        self.account(account)
        self.session_accounts.setdefault(session, account)
        result = {"n_success": 0, "n_fail": 0, "errors": []}

        def fail(error: VenueError, side: Optional[str], price: Any, count: int = 1) -> None:
            result["n_fail"] += count
            entry = error.to_json()
            if side is not None:
                entry["side"] = side
            if price is not None:
                entry["price"] = price
            result["errors"].append(entry)

        for item in quotes:
            if not isinstance(item, dict):
                fail(VenueError(INVALID_REQUEST, "a quote item must be an object"), None, None)
                continue
            sides = [(key, direction) for key, direction in (("b", BUY), ("a", SELL)) if key in item]
            try:
                ins = self.instrument(item.get("i"))
                group = self.protection.get((session, ins.product))
                if group is None:
                    raise VenueError(PROT_NOT_SET, f"set_mm_protection first for {ins.product}")
                if group.remaining <= 1e-12:
                    raise VenueError(INVALID_PROT_GROUP, f"protection group {ins.product} is exhausted; refill it")
            except VenueError as exc:
                fail(exc, None, None, max(1, len(sides)))
                continue
            for key, direction in sides:
                side_name = DIRECTION_NAMES[direction]
                try:
                    raw_levels = self._quote_levels(item[key])
                except VenueError as exc:
                    fail(exc, side_name, None)
                    continue
                levels: list[tuple[int, int]] = []
                seen: set[int] = set()
                for raw_price, raw_amount in raw_levels:
                    try:
                        ticks = ins.ticks(finite(raw_price, "price"))
                        units = ins.units(finite(raw_amount, "amount"))
                        if ticks in seen:
                            raise VenueError(INVALID_REQUEST, "prices on one side must be distinct")
                        if units < ins.min_units:
                            raise VenueError(INVALID_QUANTITY, "amount is below the minimum order amount")
                        if ins.amount(units) > group.quote_amount + 1e-12:
                            raise VenueError(QUOTE_EXCEEDS_PROT_GROUP_SIZE,
                                             f"quote larger than quote_amount {group.quote_amount}")
                    except VenueError as exc:
                        fail(exc, side_name, raw_price)
                        continue
                    seen.add(ticks)
                    levels.append((ticks, units))
                self.replace_quotes(account, session, ins, direction, levels, now=now, label=label,
                                    post_only=post_only, reject_post_only=reject_post_only)
                result["n_success"] += len(levels)
        return result

    @staticmethod
    def _quote_levels(side: Any) -> list[tuple[Any, Any]]:
        """[(price, amount)] of one quote side: an array of pairs, or {"p", "a"} (a = 0 deletes)."""
        if isinstance(side, dict):
            if "p" not in side or "a" not in side:
                raise VenueError(INVALID_REQUEST, "a single-level quote needs p and a")
            if finite(side["a"], "amount") == 0:
                return []
            return [(side["p"], side["a"])]
        if not isinstance(side, list) or len(side) > MAX_QUOTE_LEVELS:
            raise VenueError(INVALID_REQUEST, f"a quote side is up to {MAX_QUOTE_LEVELS} [price, amount] pairs")
        levels = []
        for pair in side:
            if not isinstance(pair, list) or len(pair) != 2:
                raise VenueError(INVALID_REQUEST, "a quote level is [price, amount]")
            levels.append((pair[0], pair[1]))
        return levels

    def replace_quotes(self, account: str, session: int, ins: Instrument, direction: int,
                       levels: list[tuple[int, int]], *, now: float, label: Any = None,
                       post_only: bool = False, reject_post_only: bool = False) -> None:
        """Make ``session``'s quotes on one side of ``ins`` exactly ``levels`` [(ticks, units)].

        A quote already resting at the same price with the same remaining amount is
        kept, with its priority; every other old quote is deleted (``replaced``) and
        every other level inserted as a new GTC limit order. Not volume-safe (docs/thalex-protocol.md §4.7).
        """
        wanted = dict(levels)
        name = ins.instrument_name
        for order in list(self.session_orders.get(session, {}).values()):
            if order.is_quote and order.direction == direction and order.instrument.instrument_name == name:
                if wanted.get(order.ticks) == order.remaining:
                    del wanted[order.ticks]
                else:
                    self._close(order, "replaced", now)
                    self._notify(order, "cancel")
        acc = self.account(account)
        for ticks, units in wanted.items():
            order = Order(
                order_id=self._next_order_id(), account=account, session=session, instrument=ins,
                direction=direction, order_type=LIMIT, time_in_force=GTC, ticks=ticks, units=units, label=label,
                client_order_id=None, post_only=post_only, reject_post_only=reject_post_only, reduce_only=False,
                persistent=session not in self.cod_sessions, is_quote=True, create_time=now,
            )
            fills = self._place(order, ticks, None, now)
            if not acc.quiet:
                self.events.append(OrderEvent(account, session, order.status("insert", fills)))
        self._settle_side_effects(now)

    def cancel_mass_quote(self, account: str, now: float, product: Any = None) -> None:
        """Cancel the account's mass quotes in every session and reset their protection groups."""
        if product is not None and product not in self.products:
            raise VenueError(UNKNOWN_PRODUCT, f"unknown product {product!r}")
        sessions: set[int] = set()
        for order in [o for o in self.orders.values() if o.account == account and o.is_quote]:
            if product is None or order.instrument.product == product:
                sessions.add(order.session)
                self._close(order, "client_bulk_cancel", now)
                self._notify(order, "cancel")
        for key in [k for k in self.protection if (product is None or k[1] == product)]:
            if key[0] in sessions or self.session_accounts.get(key[0]) == account:
                group = self.protection.pop(key)
                self.events.append(ProtectionEvent(account, key[0], group.product, group.remaining, "client_cancel"))
