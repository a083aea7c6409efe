"""The matching engine: order books, order rules, fills, fees, positions, marks and funding.

Pure and synchronous on purpose: no I/O, no clock, no randomness. Every call takes
``now`` (unix seconds) from its caller, so the property tests in
tests/test_venue_engine.py can drive it directly and the server (server.py) only
wraps it. What happened during a call is appended to ``events`` (order updates,
trades, position changes, MM-protection changes) for the server to publish; the
instruments whose market data changed are in ``dirty``.

Rules implemented, with their source in thalex_api.md:
- insert/buy/sell (§4.2): limit and market, GTC and IOC, post_only (repriced one tick
  inside the opposite best, or cancelled with reject_post_only), reduce_only
  (capped to the position and watched afterwards), price collars, labels,
  session-local client_order_id, optional self-trade prevention;
- amend (§4.3, volume-safe), cancel, cancel_all, cancel_session (§4.4–4.6);
- mass_quote with its replacement rules and MM protection (§4.7);
- fills at the maker's price, maker/taker fees on price × amount (§4.11, §5.4);
- mark = index + EMA of the premium of the book's mid price; funding on a 24 h basis,
  positive = longs pay (§5.3), accrued through the funding mark (accounts.py).
"""
from __future__ import annotations

import math
import re
from collections import deque
from typing import Any, Iterable, NamedTuple, Optional

from app.venue.accounts import Account, Position
from app.venue.book import OrderBook
from app.venue.config import VenueConfig
from app.venue.errors import (
    DUPLICATE_ORDER_ID,
    INVALID_PROT_GROUP,
    INVALID_QUANTITY,
    INVALID_REQUEST,
    INVALID_TIME_IN_FORCE,
    ORDER_NOT_FOUND,
    PERSISTENT_SESSION,
    PRICE_COLLAR_BREACH,
    PROT_NOT_SET,
    QUOTE_EXCEEDS_PROT_GROUP_SIZE,
    UNKNOWN_INSTRUMENT,
    UNKNOWN_PRODUCT,
    UNKNOWN_UNDERLYING,
    VenueError,
)
from app.venue.instruments import DEFAULT_INSTRUMENTS, Instrument
from app.venue.orders import BUY, DIRECTION_NAMES, DIRECTIONS, GTC, IOC, LIMIT, MARKET, SELL, Fill, Order

#: DOC's label rule (changelog v2.7.0): up to 64 characters from this set.
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9<>|_-]{1,64}$")
MAX_CLIENT_ORDER_ID = 2**64 - 1
MAX_QUOTE_ITEMS = 100
MAX_QUOTE_LEVELS = 10
#: Recent public trades kept per instrument for snapshots (book and recent_trades channels).
RECENT_TRADES = 100
DAY = 86_400.0


class OrderEvent(NamedTuple):
    """An order changed; ``status`` is the OrderStatus to publish."""
    account: str
    session: int
    status: dict


class TradeEvent(NamedTuple):
    """A public print. ``direction`` is the taker's side."""
    instrument: str
    price: float
    amount: float
    direction: str
    time: float


class AccountTradeEvent(NamedTuple):
    """A Trade record (§4.11) for one account's side of a print."""
    account: str
    trade: dict


class PositionEvent(NamedTuple):
    account: str
    instrument: str


class ProtectionEvent(NamedTuple):
    """A session.mm_protection item (§4.7)."""
    account: str
    session: int
    product: str
    remaining_amount: float
    reason: str


class Protection:
    """An MM protection group: one session, one product."""

    __slots__ = ("product", "trade_amount", "quote_amount", "remaining")

    def __init__(self, product: str, trade_amount: float, quote_amount: float) -> None:
        self.product = product
        self.trade_amount = trade_amount
        self.quote_amount = quote_amount
        self.remaining = trade_amount


class MarketState:
    """Per-instrument market data: index, mark, funding, last trade and 24 h statistics."""

    __slots__ = ("index", "mark", "premium_ema", "funding_mark", "funding_rate", "mark_time", "last_ticks",
                 "trades_24h", "low_24h", "high_24h", "volume_24h", "value_24h", "funding_samples",
                 "open_interest_units", "recent_trades", "book_time")

    def __init__(self, index: float, now: float) -> None:
        self.index = index
        self.mark = index
        self.premium_ema = 0.0
        #: Cumulative funding paid by one long contract since the venue started (USD).
        self.funding_mark = 0.0
        self.funding_rate = 0.0
        self.mark_time = now
        self.last_ticks: Optional[int] = None
        #: (time, price, units) of trades in the last 24 h, for the ticker's 24 h fields.
        self.trades_24h: deque[tuple[float, float, int]] = deque()
        #: (time, price) of the trades in trades_24h that can still become the 24 h low (high):
        #: prices rising (falling) from the front, whose front is the low (high). A ticker reads
        #: them in O(1) instead of scanning a day of trades (add_trade, expire_trades).
        self.low_24h: deque[tuple[float, float]] = deque()
        self.high_24h: deque[tuple[float, float]] = deque()
        #: Volume in volume units (exact), value in USD.
        self.volume_24h = 0
        self.value_24h = 0.0
        #: (time, funding_mark, funding_rate), one per minute, for the 24 h funding fields.
        self.funding_samples: deque[tuple[float, float, float]] = deque()
        self.open_interest_units = 0
        #: [price, amount, direction, time, instrument, implied_taker], newest last.
        self.recent_trades: deque[list] = deque(maxlen=RECENT_TRADES)
        self.book_time = now

    def add_trade(self, now: float, price: float, units: int, amount: float) -> None:
        self.trades_24h.append((now, price, units))
        self.volume_24h += units
        self.value_24h += price * amount
        low, high = self.low_24h, self.high_24h
        while low and low[-1][1] >= price:
            low.pop()
        low.append((now, price))
        while high and high[-1][1] <= price:
            high.pop()
        high.append((now, price))

    def expire_trades(self, now: float, ins: Instrument) -> None:
        """Forget the trades older than a day."""
        trades = self.trades_24h
        while trades and now - trades[0][0] > DAY:
            _t, price, units = trades.popleft()
            self.volume_24h -= units
            self.value_24h -= price * ins.amount(units)
        for extreme in (self.low_24h, self.high_24h):
            while extreme and now - extreme[0][0] > DAY:
                extreme.popleft()


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VenueError(INVALID_REQUEST, f"{name} must be a number")
    return float(value)


class Engine:
    """All books and accounts of the venue."""

    def __init__(self, config: VenueConfig, instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS,
                 now: float = 0.0) -> None:
        self.config = config
        self.instruments: dict[str, Instrument] = {i.instrument_name: i for i in instruments}
        self.books: dict[str, OrderBook] = {name: OrderBook() for name in self.instruments}
        self.markets: dict[str, MarketState] = {
            name: MarketState(i.initial_index, now) for name, i in self.instruments.items()
        }
        self.underlyings: dict[str, list[Instrument]] = {}
        for ins in self.instruments.values():
            self.underlyings.setdefault(ins.underlying, []).append(ins)
        self.products = {i.product for i in self.instruments.values()}
        self.index_time = now
        self.accounts: dict[str, Account] = {}
        #: account → customer; STP at level "customer" compares these.
        self.customers: dict[str, str] = {}
        #: Live orders, by id, by session and by (session, client_order_id).
        self.orders: dict[str, Order] = {}
        self.session_orders: dict[int, dict[str, Order]] = {}
        self.by_client_id: dict[tuple[int, int], Order] = {}
        #: Live reduce-only orders, watched after every fill of their account (§4.2).
        self.reduce_only_orders: dict[str, Order] = {}
        #: The account each session trades for (a session logs in once).
        self.session_accounts: dict[int, str] = {}
        #: Sessions that called set_cancel_on_disconnect (their new orders are non-persistent).
        self.cod_sessions: set[int] = set()
        self.protection: dict[tuple[int, str], Protection] = {}
        self.events: list = []
        self.dirty: set[str] = set()
        self._order_seq = 0
        self._trade_seq = 0
        #: Fills of one matching pass whose side effects (MM protection, reduce-only
        #: watching) wait until the aggressor is done, as an aggressor sweeping
        #: several levels may overshoot a protection group (§4.7). Dicts, not sets,
        #: so they are handled in the order they happened, whatever the hash seed.
        self._exhausted: dict[tuple[int, str], None] = {}
        self._touched_positions: dict[tuple[str, str], None] = {}

    # -- accounts and lookups ------------------------------------------------

    def account(self, number: str, customer: Optional[str] = None, quiet: bool = False) -> Account:
        """The account ``number``, opened with the configured balance on first use."""
        acc = self.accounts.get(number)
        if acc is None:
            acc = self.accounts[number] = Account(number, self.config.initial_balance, quiet=quiet)
        if customer is not None:
            self.customers[number] = customer
        return acc

    def instrument(self, name: Any) -> Instrument:
        ins = self.instruments.get(name) if isinstance(name, str) else None
        if ins is None:
            raise VenueError(UNKNOWN_INSTRUMENT, f"unknown instrument {name!r}")
        return ins

    def open_session(self, session: int, account: str, customer: Optional[str] = None,
                     quiet: bool = False) -> Account:
        """Bind ``session`` to ``account`` (at login); returns the account."""
        self.session_accounts[session] = account
        return self.account(account, customer, quiet)

    def take_events(self) -> list:
        events, self.events = self.events, []
        return events

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def _next_order_id(self) -> str:
        self._order_seq += 1
        return f"{self._order_seq:016X}"

    def _next_trade_id(self) -> str:
        self._trade_seq += 1
        return f"0080{self._trade_seq:028X}"

    def collars(self, name: str) -> tuple[float, float]:
        """(collar_low, collar_high): new asks below low and new bids above high breach the collar."""
        mark = self.markets[name].mark
        return mark * (1 - self.config.collar_fraction), mark * (1 + self.config.collar_fraction)

    # -- order entry ---------------------------------------------------------

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
        units = ins.units(_finite(amount, "amount"))
        if units < ins.min_units:
            raise VenueError(INVALID_QUANTITY, f"amount is below the minimum order amount {ins.min_order_amount}")
        if order_type == LIMIT:
            if price is None:
                raise VenueError(INVALID_REQUEST, "limit orders need a price")
            ticks: Optional[int] = ins.ticks(_finite(price, "price"))
        else:
            if price is not None:
                raise VenueError(INVALID_REQUEST, "market orders take no price")
            ticks = None
        if label is not None and (not isinstance(label, str) or not LABEL_PATTERN.match(label)):
            raise VenueError(INVALID_REQUEST, "label must be 1-64 characters from [A-Za-z0-9<>|_-]")
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

    def _place(self, order: Order, limit: Optional[int], stp: Optional[str], now: float) -> list[Fill]:
        """Post-only check, match, then rest (GTC) or cancel the rest (IOC). Returns the order's new fills."""
        book = self.books[order.instrument.instrument_name]
        if order.post_only:
            opposite = book.best(-order.direction)
            crosses = opposite is not None and (
                order.ticks >= opposite if order.direction == BUY else order.ticks <= opposite)
            if crosses:
                if order.reject_post_only:
                    self._close(order, "immediate_cancel", now)
                    return []
                order.ticks = opposite - order.direction  # one tick inside the opposite best
                if order.ticks <= 0:
                    self._close(order, "immediate_cancel", now)
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
        """Volume-safe amend (§4.3): ``amount`` is the new original amount; at or below filled it cancels."""
        order = self._find(account, session, order_id, client_order_id)
        ins = order.instrument
        if price is None or amount is None:
            raise VenueError(INVALID_REQUEST, "amend needs price and amount")
        ticks = ins.ticks(_finite(price, "price"))
        units = ins.units(_finite(amount, "amount"))
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
        """Cancel every live order of ``account``, from every session (§4.5)."""
        orders = [o for o in self.orders.values() if o.account == account]
        for order in orders:
            self._close(order, "client_bulk_cancel", now)
            self._notify(order, "cancel")
        return len(orders)

    def set_cancel_on_disconnect(self, session: int) -> None:
        self.cod_sessions.add(session)

    def cancel_session(self, session: int, now: float, reason: str = "session_end") -> int:
        """Delete the non-persistent orders of ``session`` and reset its MM protection (§4.6, §6.3)."""
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

    # -- mass quoting ----------------------------------------------------------

    def set_mm_protection(self, account: str, session: int, *, product: Any, now: float,
                          trade_amount: Any = None, quote_amount: Any = None, amount: Any = None) -> None:
        """Set (refill) the protection group of ``session`` for ``product`` (§4.7)."""
        if product not in self.products:
            raise VenueError(UNKNOWN_PRODUCT, f"unknown product {product!r}")
        if amount is not None:
            trade_amount = quote_amount = amount
        if trade_amount is None or quote_amount is None:
            raise VenueError(INVALID_REQUEST, "set_mm_protection needs trade_amount and quote_amount")
        trade = _finite(trade_amount, "trade_amount")
        quote = _finite(quote_amount, "quote_amount")
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
        """Replace this session's quotes side by side (§4.7); returns {n_success, n_fail, errors}."""
        if session not in self.cod_sessions:
            raise VenueError(PERSISTENT_SESSION, "mass_quote needs a non-persistent session (set_cancel_on_disconnect)")
        if not isinstance(quotes, list) or len(quotes) > MAX_QUOTE_ITEMS:
            raise VenueError(INVALID_REQUEST, f"quotes must be a list of at most {MAX_QUOTE_ITEMS} items")
        if label is not None and (not isinstance(label, str) or not LABEL_PATTERN.match(label)):
            raise VenueError(INVALID_REQUEST, "label must be 1-64 characters from [A-Za-z0-9<>|_-]")
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
                        ticks = ins.ticks(_finite(raw_price, "price"))
                        units = ins.units(_finite(raw_amount, "amount"))
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
            if _finite(side["a"], "amount") == 0:
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
        every other level inserted as a new GTC limit order. Not volume-safe (§4.7).
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

    # -- queries -----------------------------------------------------------

    def open_orders(self, account: str) -> list[dict]:
        return [o.status("existing", o.fills) for o in self.orders.values() if o.account == account]

    def session_open_orders(self, session: int) -> list[dict]:
        return [o.status("existing", o.fills) for o in self.session_orders.get(session, {}).values()]

    def portfolio_entry(self, pos: Position) -> dict:
        ins = pos.instrument
        market = self.markets[ins.instrument_name]
        return {
            "instrument_name": ins.instrument_name,
            "position": ins.amount(pos.units),
            "mark_price": market.mark,
            "index": market.index,
            # No daily settlement in the simulation: start_price stays the entry price.
            "start_price": pos.average_price,
            "average_price": pos.average_price,
            "unrealised_pnl": pos.unrealised_pnl(market.mark),
            "realised_pnl": pos.realised_pnl,
            "entry_value": pos.contracts * pos.average_price,
            "perpetual_funding_entry_value": pos.contracts * pos.funding_entry,
            "unrealised_perpetual_funding": pos.unrealised_funding(market.funding_mark),
        }

    def portfolio(self, account: str) -> list[dict]:
        acc = self.account(account)
        return [self.portfolio_entry(p) for p in acc.positions.values() if p.units != 0]

    def account_summary(self, account: str) -> dict:
        acc = self.account(account)
        unrealised = 0.0
        required = 0.0
        for pos in acc.positions.values():
            market = self.markets[pos.instrument.instrument_name]
            unrealised += pos.unrealised_pnl(market.mark) + pos.unrealised_funding(market.funding_mark)
            required += abs(pos.contracts) * market.mark * self.config.margin_rate
        realised = acc.realised()
        balance = acc.cash + realised
        margin = balance + unrealised
        return {
            "unrealised_pnl": unrealised,
            "cash_collateral": balance,
            "margin": margin,
            "required_margin": required,
            "remaining_margin": margin - required,
            "session_realised_pnl": realised,
            "cash": [{"currency": "USD", "balance": balance, "collateral_factor": 1.0,
                      "collateral_index_price": None, "transactable": True}],
        }

    def trade_history(self, account: str, params: dict) -> dict:
        """private/trade_history: filters and paging as in §4.8; the bookmark is an opaque offset."""
        trades = self.account(account).trades
        time_low = params.get("time_low")
        time_high = params.get("time_high")
        names = params.get("instrument_names")
        order_ids = params.get("order_ids")
        direction = params.get("direction")
        label = params.get("label")
        if isinstance(names, str):
            names = names.split(",")
        if isinstance(order_ids, str):
            order_ids = order_ids.split(",")
        selected = [
            t for t in trades
            if (time_low is None or t["time"] >= time_low) and (time_high is None or t["time"] <= time_high)
            and (names is None or t["instrument_name"] in names) and (order_ids is None or t["order_id"] in order_ids)
            and (direction is None or t["direction"] == direction) and (label is None or t.get("label") == label)
        ]
        sort = params.get("sort", "descending")
        if sort not in ("ascending", "descending"):
            raise VenueError(INVALID_REQUEST, "sort must be ascending or descending")
        if sort == "descending":
            selected.reverse()
        limit = params.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise VenueError(INVALID_REQUEST, "limit must be an integer from 1 to 1000")
        bookmark = params.get("bookmark")
        try:
            start = int(bookmark) if bookmark is not None else 0
        except (TypeError, ValueError):
            raise VenueError(INVALID_REQUEST, "invalid bookmark") from None
        page = selected[start:start + limit]
        out: dict = {"trades": page}
        if start + limit < len(selected):
            out["bookmark"] = str(start + limit)
        return out

    # -- market data ---------------------------------------------------------

    def ticker(self, name: str) -> dict:
        ins = self.instruments[name]
        book = self.books[name]
        market = self.markets[name]
        bid, ask = book.best_bid(), book.best_ask()
        low, high = self.collars(name)
        realised_funding, average_funding = self._funding_24h(market)
        if market.trades_24h:
            low_24h, high_24h = market.low_24h[0][1], market.high_24h[0][1]
            change = market.trades_24h[-1][1] - market.trades_24h[0][1]
        else:
            low_24h = high_24h = None
            change = None
        out = {
            "best_bid_price": ins.price(bid) if bid is not None else None,
            "best_bid_amount": ins.amount(book.level_units(BUY, bid)) if bid is not None else None,
            "best_ask_price": ins.price(ask) if ask is not None else None,
            "best_ask_amount": ins.amount(book.level_units(SELL, ask)) if ask is not None else None,
            "last_price": ins.price(market.last_ticks) if market.last_ticks is not None else None,
            "mark_price": market.mark,
            "mark_timestamp": market.mark_time,
            "delta": 1,
            "index": market.index,
            "volume_24h": ins.amount(market.volume_24h),
            "value_24h": market.value_24h,
            "change_24h": change,
            "collar_low": low,
            "collar_high": high,
            "open_interest": ins.amount(market.open_interest_units),
            "funding_rate": market.funding_rate,
            "funding_mark": market.funding_mark,
            "realised_funding_24h": realised_funding,
            "average_funding_rate_24h": average_funding,
        }
        if low_24h is not None:
            out["low_price_24h"] = low_24h
            out["high_price_24h"] = high_24h
        return out

    @staticmethod
    def _funding_24h(market: MarketState) -> tuple[float, float]:
        """(funding paid per long contract over the last 24 h, average funding rate)."""
        if not market.funding_samples:
            return 0.0, market.funding_rate
        realised = market.funding_mark - market.funding_samples[0][1]
        average = sum(s[2] for s in market.funding_samples) / len(market.funding_samples)
        return realised, average

    def lwt(self, name: str) -> dict:
        ins = self.instruments[name]
        book = self.books[name]
        market = self.markets[name]
        out: dict = {"m": market.mark}
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None:
            units = ins.amount(book.level_units(BUY, bid))
            out["b"] = [ins.price(bid), units, units]
        if ask is not None:
            units = ins.amount(book.level_units(SELL, ask))
            out["a"] = [ins.price(ask), units, units]
        if market.last_ticks is not None:
            out["l"] = ins.price(market.last_ticks)
        return out

    def public_book(self, name: str, levels: int = 5) -> dict:
        """public/book: up to 5 levels a side, [price, amount, outright_amount]."""
        ins = self.instruments[name]
        book = self.books[name]
        market = self.markets[name]

        def side(direction: int) -> list[list[float]]:
            return [[ins.price(t), ins.amount(u), ins.amount(u)] for t, u in book.depth(direction, levels)]

        return {
            "bids": side(BUY),
            "asks": side(SELL),
            "last": ins.price(market.last_ticks) if market.last_ticks is not None else None,
            "time": market.book_time,
        }

    def index(self, underlying: Any) -> dict:
        instruments = self.underlyings.get(underlying) if isinstance(underlying, str) else None
        if not instruments:
            raise VenueError(UNKNOWN_UNDERLYING, f"unknown underlying {underlying!r}")
        market = self.markets[instruments[0].instrument_name]
        return {"index_name": underlying, "price": market.index, "timestamp": self.index_time}

    def advance(self, index: dict[str, float], dt: float, now: float) -> None:
        """One market step: new index per underlying; premium EMA, mark and funding move on (§5.3)."""
        alpha = 1.0 - math.exp(-dt / self.config.mark_ema_seconds)
        dampener = self.config.funding_dampener_bps / 10_000.0
        self.index_time = now
        for name, ins in self.instruments.items():
            market = self.markets[name]
            idx = index.get(ins.underlying, market.index)
            book = self.books[name]
            bid, ask = book.best_bid(), book.best_ask()
            # The premium is that of the mid price; with one side empty, the index
            # constrained by the side that is there (no premium with an empty book).
            if bid is not None and ask is not None:
                fair = (ins.price(bid) + ins.price(ask)) / 2
            elif bid is not None:
                fair = max(idx, ins.price(bid))
            elif ask is not None:
                fair = min(idx, ins.price(ask))
            else:
                fair = idx
            market.index = idx
            market.premium_ema += alpha * ((fair - idx) - market.premium_ema)
            market.mark = idx + market.premium_ema
            market.mark_time = now
            rate = market.premium_ema / idx
            if abs(rate) <= dampener:
                rate = 0.0
            else:
                rate -= math.copysign(dampener, rate)
            market.funding_rate = rate
            market.funding_mark += rate * idx * dt / DAY
            if not market.funding_samples or now - market.funding_samples[-1][0] >= 60.0:
                market.funding_samples.append((now, market.funding_mark, rate))
            while market.funding_samples and now - market.funding_samples[0][0] > DAY:
                market.funding_samples.popleft()
            market.expire_trades(now, ins)
            self.dirty.add(name)
