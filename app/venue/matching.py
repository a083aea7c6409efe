"""Order entry and matching: the rules an order meets, from insert to its last fill.

``Matching`` builds on the engine's shared state (state.py). Rules implemented, with their
section of docs/thalex-protocol.md:
- insert/buy/sell (docs/thalex-protocol.md §4.2): limit and market, GTC and IOC, post_only (repriced one tick
  inside the opposite best, or cancelled with reject_post_only), reduce_only (capped to
  the position and watched afterwards), price collars around the mark, labels,
  session-local client_order_id, optional self-trade prevention;
- price-time matching: fills at the maker's price, best price first, oldest first;
- fills booked: position, maker/taker fees on price × amount (docs/thalex-protocol.md §4.11, §5.4), open interest,
  the Trade record, and the MM protection group a quote's fills count against (docs/thalex-protocol.md §4.7);
- amend (docs/thalex-protocol.md §4.3, volume-safe), cancel, cancel_all, cancel_session and the session's end
  under cancel-on-disconnect (docs/thalex-protocol.md §4.4–4.6, §6.3).
"""
from __future__ import annotations

import math
from typing import Any, Optional

from app.exchange.protocol import (
    DUPLICATE_ORDER_ID,
    INVALID_QUANTITY,
    INVALID_REQUEST,
    INVALID_TIME_IN_FORCE,
    MAX_CLIENT_ORDER_ID,
    ORDER_NOT_FOUND,
    POST_ONLY_CANCEL,
    PRICE_COLLAR_BREACH,
)
from app.venue.accounts import Position
from app.venue.errors import VenueError
from app.venue.events import AccountTradeEvent, OrderEvent, PositionEvent, ProtectionEvent, TradeEvent
from app.venue.instruments import Instrument
from app.venue.orders import BUY, DIRECTION_NAMES, DIRECTIONS, GTC, IOC, LIMIT, MARKET, Fill, Order
from app.venue.state import EngineState, check_label, finite


class Matching(EngineState):
    """Insert, amend and cancel orders; match them; book their fills."""

    # -- order entry -------------------------------------------------------------------------

    def insert(
        self,
        account: str,
        session: int,
        *,
        instrument_name: Any,
        direction: Any,
        amount: Any,
        now: float,
        price: Any = None,
        order_type: Any = LIMIT,
        time_in_force: Any = None,
        post_only: Any = False,
        reject_post_only: Any = False,
        reduce_only: Any = False,
        collar: Any = None,
        label: Any = None,
        client_order_id: Any = None,
        stp_level: Any = None,
        stp_action: Any = None,
        is_quote: bool = False,
    ) -> dict:
        """Validate and execute one order; returns its OrderStatus (change_reason ``insert``)."""
        ins = self.instrument(instrument_name)
        if direction not in DIRECTIONS:
            raise VenueError(INVALID_REQUEST, f"direction must be buy or sell, got {direction!r}")
        side = DIRECTIONS[direction]
        if order_type not in (LIMIT, MARKET):
            raise VenueError(INVALID_REQUEST, f"order_type must be limit or market, got {order_type!r}")
        if time_in_force is None:
            time_in_force = GTC if order_type == LIMIT else IOC
        if time_in_force not in (GTC, IOC):
            raise VenueError(INVALID_TIME_IN_FORCE, f"unknown time_in_force {time_in_force!r}")
        for flag_name, flag in (("post_only", post_only), ("reject_post_only", reject_post_only),
                                ("reduce_only", reduce_only)):
            if not isinstance(flag, bool):
                raise VenueError(INVALID_REQUEST, f"{flag_name} must be a boolean")
        if order_type == MARKET and time_in_force == GTC:
            raise VenueError(INVALID_TIME_IN_FORCE, "market orders cannot be good_till_cancelled")
        if post_only and time_in_force == IOC:
            raise VenueError(INVALID_TIME_IN_FORCE, "post_only orders cannot be immediate_or_cancel")
        if post_only and order_type == MARKET:
            raise VenueError(INVALID_REQUEST, "market orders cannot be post_only")
        if reject_post_only and not post_only:
            raise VenueError(INVALID_REQUEST, "reject_post_only requires post_only")
        units = ins.units(finite(amount, "amount"))
        if units < ins.min_units:
            raise VenueError(INVALID_QUANTITY, f"amount is below the minimum order amount {ins.min_order_amount}")
        if order_type == LIMIT:
            if price is None:
                raise VenueError(INVALID_REQUEST, "limit orders need a price")
            ticks: Optional[int] = ins.ticks(finite(price, "price"))
        else:
            if price is not None:
                raise VenueError(INVALID_REQUEST, "market orders take no price")
            ticks = None
        check_label(label)
        if client_order_id is not None:
            if isinstance(client_order_id, bool) or not isinstance(client_order_id, int) \
                    or not 0 <= client_order_id <= MAX_CLIENT_ORDER_ID:
                raise VenueError(INVALID_REQUEST, "client_order_id must be an integer from 0 to 2^64-1")
            if (session, client_order_id) in self.by_client_id:
                raise VenueError(DUPLICATE_ORDER_ID, f"client_order_id {client_order_id} is in use")
        stp = self._stp_rule(stp_level, stp_action)
        limit = self._collared_limit(ins, side, ticks, order_type, collar, default_reject=order_type == LIMIT)
        if order_type == LIMIT:
            ticks = limit
        acc = self.account(account)
        self.session_accounts.setdefault(session, account)
        if reduce_only:
            units = self._reduce_only_cap(acc.position(ins), side, units)

        order = Order(
            order_id=self._next_order_id(), account=account, session=session, instrument=ins, direction=side,
            order_type=order_type, time_in_force=time_in_force, ticks=ticks, units=units, label=label,
            client_order_id=client_order_id, post_only=post_only, reject_post_only=reject_post_only,
            reduce_only=reduce_only, persistent=session not in self.cod_sessions, is_quote=is_quote,
            create_time=now,
        )
        fills = self._place(order, limit, stp, now)
        status = order.status("insert", fills)
        if not acc.quiet:
            self.events.append(OrderEvent(account, session, status))
        self._settle_side_effects(now)
        return status

    def _stp_rule(self, level: Any, action: Any) -> Optional[str]:
        """The STP action to apply, or None when self-trades are allowed."""
        if level is not None and level not in ("customer", "account", "disabled"):
            raise VenueError(INVALID_REQUEST, f"unknown stp_level {level!r}")
        if action is not None and action not in ("cancel_aggressive_partial_fill", "cancel_aggressive_no_fill"):
            raise VenueError(INVALID_REQUEST, f"unknown stp_action {action!r}")
        if not self.config.stp_enabled or level == "disabled":
            return None
        return f"{level or 'customer'}:{action or 'cancel_aggressive_partial_fill'}"

    def _collared_limit(self, ins: Instrument, side: int, ticks: Optional[int], order_type: str,
                        collar: Any, default_reject: bool) -> Optional[int]:
        """The price limit after the collar rule; for market orders, the collar itself bounds the sweep."""
        if collar is None:
            collar = "reject" if default_reject else "clamp"
        if collar not in ("ignore", "reject", "clamp"):
            raise VenueError(INVALID_REQUEST, f"collar must be ignore, reject or clamp, got {collar!r}")
        low, high = self.collars(ins.instrument_name)
        low_ticks = math.ceil(low / ins.tick_size - 1e-9)
        high_ticks = math.floor(high / ins.tick_size + 1e-9)
        if ticks is None:
            if collar == "ignore":
                raise VenueError(INVALID_REQUEST, "collar ignore is not allowed for market orders")
            return high_ticks if side == BUY else max(low_ticks, 1)
        if collar == "ignore":
            return ticks
        breach = ticks > high_ticks if side == BUY else ticks < low_ticks
        if not breach:
            return ticks
        if collar == "reject":
            raise VenueError(PRICE_COLLAR_BREACH, f"price is outside the collar [{low:.2f}, {high:.2f}]")
        return high_ticks if side == BUY else low_ticks

    @staticmethod
    def _reduce_only_cap(pos: Position, side: int, units: int) -> int:
        if pos.units == 0 or (pos.units > 0) == (side == BUY):
            raise VenueError(INVALID_REQUEST, "reduce_only order would open or increase a position")
        return min(units, abs(pos.units))

    # -- placing and matching ----------------------------------------------------------------

    def _place(self, order: Order, limit: Optional[int], stp: Optional[str], now: float) -> list[Fill]:
        """Post-only check, match, then rest (GTC) or cancel the rest (IOC). Returns the order's new fills."""
        book = self.books[order.instrument.instrument_name]
        if order.post_only:
            opposite = book.best(-order.direction)
            crosses = opposite is not None and (
                order.ticks >= opposite if order.direction == BUY else order.ticks <= opposite)
            if crosses:
                if order.reject_post_only:
                    self._close(order, POST_ONLY_CANCEL, now)
                    return []
                order.ticks = opposite - order.direction  # one tick inside the opposite best
                if order.ticks <= 0:
                    self._close(order, POST_ONLY_CANCEL, now)
                    return []
            fills: list[Fill] = []
        else:
            fills = self._match(order, limit, stp, now)
        if order.delete_reason is not None:
            return fills
        if order.filled >= order.units:
            self._close(order, "filled", now)
        elif order.time_in_force == IOC:
            self._close(order, "immediate_cancel", now)
        else:
            self._rest(order, now)
        return fills

    def _rest(self, order: Order, now: float) -> None:
        name = order.instrument.instrument_name
        self.books[name].add(order)
        self.orders[order.order_id] = order
        self.session_orders.setdefault(order.session, {})[order.order_id] = order
        if order.client_order_id is not None:
            self.by_client_id[(order.session, order.client_order_id)] = order
        if order.reduce_only:
            self.reduce_only_orders[order.order_id] = order
        self.markets[name].book_time = now
        self.dirty.add(name)

    def _close(self, order: Order, reason: str, now: float) -> None:
        """Take ``order`` out of the book and the registries, marked with its delete reason."""
        name = order.instrument.instrument_name
        book = self.books[name]
        if order.ticks is not None and book.contains(order):
            book.remove(order)
            self.markets[name].book_time = now
            self.dirty.add(name)
        order.delete_reason = reason
        order.close_time = now
        self.orders.pop(order.order_id, None)
        self.reduce_only_orders.pop(order.order_id, None)
        session_orders = self.session_orders.get(order.session)
        if session_orders is not None:
            session_orders.pop(order.order_id, None)
        if order.client_order_id is not None:
            key = (order.session, order.client_order_id)
            if self.by_client_id.get(key) is order:
                del self.by_client_id[key]

    def _self_trade(self, taker: Order, maker: Order, stp: str) -> bool:
        if stp.startswith("account:"):
            return maker.account == taker.account
        customer = self.customers.get(taker.account, taker.account)
        return self.customers.get(maker.account, maker.account) == customer

    def _would_self_trade(self, taker: Order, limit: Optional[int], stp: str) -> bool:
        """True if matching ``taker`` now would reach an order it must not trade with."""
        book = self.books[taker.instrument.instrument_name]
        needed = taker.remaining
        for ticks, level in book.levels(-taker.direction):
            if limit is not None and (ticks > limit if taker.direction == BUY else ticks < limit):
                return False
            for maker in level.values():
                if self._self_trade(taker, maker, stp):
                    return True
                needed -= maker.remaining
                if needed <= 0:
                    return False
        return False

    def _match(self, taker: Order, limit: Optional[int], stp: Optional[str], now: float) -> list[Fill]:
        """Trade ``taker`` against the opposite side at the makers' prices, best first, oldest first."""
        book = self.books[taker.instrument.instrument_name]
        fills: list[Fill] = []
        if stp is not None and stp.endswith("no_fill") and self._would_self_trade(taker, limit, stp):
            self._close(taker, "self_trade_prevention", now)
            return fills
        opposite = -taker.direction
        while taker.filled < taker.units:
            best = book.best(opposite)
            if best is None or (limit is not None and (best > limit if taker.direction == BUY else best < limit)):
                break
            for maker in list(book.level(opposite, best).values()):
                if taker.filled >= taker.units:
                    break
                if stp is not None and self._self_trade(taker, maker, stp):
                    self._close(taker, "self_trade_prevention", now)
                    return fills
                units = min(taker.units - taker.filled, maker.remaining)
                fills.append(self._execute(taker, maker, best, units, now))
        return fills

    # -- fills -------------------------------------------------------------------------------

    def _execute(self, taker: Order, maker: Order, ticks: int, units: int, now: float) -> Fill:
        """One trade of ``units`` at ``ticks`` between ``taker`` and the resting ``maker``."""
        ins = taker.instrument
        name = ins.instrument_name
        market = self.markets[name]
        trade_id = self._next_trade_id()
        price = ins.price(ticks)
        amount = ins.amount(units)
        taker_fill = Fill(trade_id, ticks, units, now, "taker")
        maker_fill = Fill(trade_id, ticks, units, now, "maker")
        taker.filled += units
        maker.filled += units
        taker.fills.append(taker_fill)
        maker.fills.append(maker_fill)
        for order, fill, rate in ((maker, maker_fill, self.config.maker_fee_rate),
                                  (taker, taker_fill, self.config.taker_fee_rate)):
            self._book_fill(order, fill, price, amount, rate, now)
        if maker.filled >= maker.units:
            self._close(maker, "filled", now)
        maker_account = self.accounts[maker.account]
        if not maker_account.quiet:
            self.events.append(OrderEvent(maker.account, maker.session, maker.status("fill", [maker_fill])))

        direction = DIRECTION_NAMES[taker.direction]
        market.last_ticks = ticks
        market.add_trade(now, price, units, amount)
        market.recent_trades.append([price, amount, direction, now, name, False])
        market.book_time = now
        self.events.append(TradeEvent(name, price, amount, direction, now))
        self.dirty.add(name)
        return taker_fill

    def _book_fill(self, order: Order, fill: Fill, price: float, amount: float, fee_rate: float,
                   now: float) -> None:
        """Position, fee, open interest, MM protection and the Trade record for one side of a trade."""
        ins = order.instrument
        market = self.markets[ins.instrument_name]
        acc = self.accounts[order.account]
        pos = acc.position(ins)
        before = pos.units
        position_pnl, funding_pnl = pos.apply_fill(order.direction, fill.units, price, market.funding_mark)
        market.open_interest_units += max(pos.units, 0) - max(before, 0)
        fee = price * amount * fee_rate
        pos.fees += fee
        self._touched_positions[(order.account, ins.instrument_name)] = None
        if order.is_quote:
            group = self.protection.get((order.session, ins.product))
            if group is not None:
                group.remaining -= amount
                if group.remaining <= 1e-12:
                    self._exhausted[(order.session, ins.product)] = None
        if acc.quiet:
            return
        trade = {
            "trade_type": "normal",
            "trade_id": fill.trade_id,
            "order_id": order.order_id,
            "instrument_name": ins.instrument_name,
            "direction": DIRECTION_NAMES[order.direction],
            "price": price,
            "amount": amount,
            "time": now,
            "position_after": ins.amount(pos.units),
            "session_realised_after": acc.realised(),
            "position_pnl": position_pnl,
            "perpetual_funding_pnl": funding_pnl,
            "fee": fee,
            "fee_rate": fee_rate,
            "fee_basis": price,
            "index": market.index,
            "funding_mark": market.funding_mark,
            "maker_taker": fill.maker_taker,
            "leg_index": 0,
        }
        if order.label is not None:
            trade["label"] = order.label
        if order.client_order_id is not None:
            trade["client_order_id"] = order.client_order_id
        acc.trades.append(trade)
        self.events.append(AccountTradeEvent(order.account, trade))
        self.events.append(PositionEvent(order.account, ins.instrument_name))

    def _settle_side_effects(self, now: float) -> None:
        """After an aggressor is done: pull exhausted MM groups, shrink or drop reduce-only orders."""
        while self._exhausted:
            session, product = next(iter(self._exhausted))
            del self._exhausted[(session, product)]
            group = self.protection.get((session, product))
            if group is None:
                continue
            for order in list(self.session_orders.get(session, {}).values()):
                if order.is_quote and order.instrument.product == product:
                    self._close(order, "mm_protection", now)
                    self._notify(order, "cancel")
            account = self.session_accounts.get(session)
            if account is not None and not self.accounts[account].quiet:
                self.events.append(ProtectionEvent(account, session, product, group.remaining, "executions"))
        touched, self._touched_positions = self._touched_positions, {}
        for account, name in touched:
            pos = self.accounts[account].positions[name]
            for order in [o for o in self.reduce_only_orders.values()
                          if o.account == account and o.instrument.instrument_name == name]:
                reduces = pos.units != 0 and (pos.units > 0) != (order.direction == BUY)
                if not reduces:
                    self._close(order, "immediate_cancel", now)
                    self._notify(order, "cancel")
                elif order.remaining > abs(pos.units):
                    order.units = order.filled + abs(pos.units)
                    self.dirty.add(name)
                    self._notify(order, "amend")

    # -- order updates -----------------------------------------------------------------------

    def _emit(self, order: Order, change_reason: str, fills: Optional[list[Fill]] = None) -> dict:
        """Publish the order's new status and return it (the reply to the request that changed it)."""
        status = order.status(change_reason, fills)
        if not self.accounts[order.account].quiet:
            self.events.append(OrderEvent(order.account, order.session, status))
        return status

    def _notify(self, order: Order, change_reason: str) -> None:
        """Publish the order's new status, if anyone can see it (not for internal accounts)."""
        if not self.accounts[order.account].quiet:
            self.events.append(OrderEvent(order.account, order.session, order.status(change_reason)))

    # -- amend and cancel --------------------------------------------------------------------

    def _find(self, account: str, session: int, order_id: Any, client_order_id: Any) -> Order:
        if (order_id is None) == (client_order_id is None):
            raise VenueError(INVALID_REQUEST, "give exactly one of order_id and client_order_id")
        if order_id is not None:
            order = self.orders.get(order_id) if isinstance(order_id, str) else None
            if order is None or order.account != account:
                raise VenueError(ORDER_NOT_FOUND, f"order {order_id!r} not found")
            return order
        order = self.by_client_id.get((session, client_order_id)) \
            if isinstance(client_order_id, int) and not isinstance(client_order_id, bool) else None
        if order is None:
            raise VenueError(ORDER_NOT_FOUND, f"order with client_order_id {client_order_id!r} not found")
        return order

    def amend(self, account: str, session: int, *, price: Any, amount: Any, now: float,
              order_id: Any = None, client_order_id: Any = None, collar: Any = None) -> dict:
        """Volume-safe amend (docs/thalex-protocol.md §4.3): ``amount`` is the new original amount; at or below filled it cancels."""
        order = self._find(account, session, order_id, client_order_id)
        ins = order.instrument
        if price is None or amount is None:
            raise VenueError(INVALID_REQUEST, "amend needs price and amount")
        ticks = ins.ticks(finite(price, "price"))
        units = ins.units(finite(amount, "amount"))
        if units <= order.filled:
            self._close(order, "client_cancel", now)
            status = self._emit(order, "amend")
            return status
        if units < ins.min_units:
            raise VenueError(INVALID_QUANTITY, f"amount is below the minimum order amount {ins.min_order_amount}")
        ticks = self._collared_limit(ins, order.direction, ticks, LIMIT, collar, default_reject=True)
        if order.reduce_only:
            pos = self.accounts[account].position(ins)
            units = order.filled + self._reduce_only_cap(pos, order.direction, units - order.filled)
        book = self.books[ins.instrument_name]
        if ticks == order.ticks and units <= order.units:
            order.units = units  # same price, smaller: keeps its place in the queue
            self.markets[ins.instrument_name].book_time = now
            self.dirty.add(ins.instrument_name)
            return self._emit(order, "amend")
        book.remove(order)
        order.ticks = ticks
        order.units = units
        del self.orders[order.order_id]  # _place re-registers it if it rests again
        fills = self._place(order, ticks, None, now)
        status = self._emit(order, "amend", fills)
        self._settle_side_effects(now)
        return status

    def cancel(self, account: str, session: int, *, now: float, order_id: Any = None,
               client_order_id: Any = None) -> dict:
        order = self._find(account, session, order_id, client_order_id)
        self._close(order, "client_cancel", now)
        return self._emit(order, "cancel")

    def cancel_all(self, account: str, now: float) -> int:
        """Cancel every live order of ``account``, from every session (docs/thalex-protocol.md §4.5)."""
        orders = [o for o in self.orders.values() if o.account == account]
        for order in orders:
            self._close(order, "client_bulk_cancel", now)
            self._notify(order, "cancel")
        return len(orders)

    # -- sessions ----------------------------------------------------------------------------

    def set_cancel_on_disconnect(self, session: int) -> None:
        self.cod_sessions.add(session)

    def cancel_session(self, session: int, now: float, reason: str = "session_end") -> int:
        """Delete the non-persistent orders of ``session`` and reset its MM protection (docs/thalex-protocol.md §4.6, §6.3)."""
        orders = [o for o in self.session_orders.get(session, {}).values() if not o.persistent]
        account = self.session_accounts.get(session)
        for order in orders:
            self._close(order, reason, now)
            self._notify(order, "cancel")
        for key in [k for k in self.protection if k[0] == session]:
            group = self.protection.pop(key)
            if account is not None and not self.accounts[account].quiet:
                self.events.append(ProtectionEvent(account, session, group.product, group.remaining, reason))
        return len(orders)

    def close_session(self, session: int, now: float) -> None:
        """The session's connection is gone: COD orders die, client order ids are forgotten."""
        if session in self.cod_sessions:
            self.cancel_session(session, now)
            self.cod_sessions.discard(session)
        for key in [k for k in self.by_client_id if k[0] == session]:
            del self.by_client_id[key]
        if not self.session_orders.get(session):
            self.session_orders.pop(session, None)
        self.session_accounts.pop(session, None)
