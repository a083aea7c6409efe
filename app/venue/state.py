"""The engine's shared state: what every role of the engine reads and writes.

``EngineState`` holds the books, the market data (marks.py), the accounts, the registries
of live orders, the MM protection groups and the outgoing ``events`` (events.py), with the
lookups every role uses. The roles build on it: matching.py (order entry and fills),
mass_quotes.py (mass quotes and MM protection, on top of matching), reports.py (what the
queries and channels show); engine.py composes them into ``Engine``.

Pure and synchronous on purpose: no I/O, no clock, no randomness. Every call takes ``now``
(unix seconds) from its caller, so the tests drive the engine directly and the server only
wraps it. What happened during a call is appended to ``events`` for the server to publish;
the instruments whose market data changed are in ``dirty``.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from app.exchange.protocol import INVALID_REQUEST, LABEL_PATTERN, UNKNOWN_INSTRUMENT
from app.venue.accounts import Account
from app.venue.book import OrderBook
from app.venue.config import VenueConfig
from app.venue.errors import VenueError
from app.venue.instruments import DEFAULT_INSTRUMENTS, Instrument
from app.venue.marks import MarketState
from app.venue.orders import Order


def finite(value: Any, name: str) -> float:
    """``value`` as a float, if it is a finite JSON number; else INVALID_REQUEST naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VenueError(INVALID_REQUEST, f"{name} must be a number")
    return float(value)


def check_label(label: Any) -> None:
    """A label is optional; given, it follows the documented rule (docs/thalex-protocol.md §5.5), else INVALID_REQUEST."""
    if label is not None and (not isinstance(label, str) or not LABEL_PATTERN.match(label)):
        raise VenueError(INVALID_REQUEST, "label must be 1-64 characters from [A-Za-z0-9<>|_-]")


class Protection:
    """An MM protection group: one session, one product (docs/thalex-protocol.md §4.7).

    Set by set_mm_protection (mass_quotes.py); every fill of one of the session's quotes
    on the product counts against ``remaining`` (matching.py)."""

    __slots__ = ("product", "trade_amount", "quote_amount", "remaining")

    def __init__(self, product: str, trade_amount: float, quote_amount: float) -> None:
        self.product = product
        self.trade_amount = trade_amount
        self.quote_amount = quote_amount
        self.remaining = trade_amount


class EngineState:
    """All books and accounts of the venue, and the lookups the roles share."""

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
        #: Live reduce-only orders, watched after every fill of their account (docs/thalex-protocol.md §4.2).
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
        #: several levels may overshoot a protection group (docs/thalex-protocol.md §4.7). Dicts, not sets,
        #: so they are handled in the order they happened, whatever the hash seed.
        self._exhausted: dict[tuple[int, str], None] = {}
        self._touched_positions: dict[tuple[str, str], None] = {}

    # -- accounts and lookups ----------------------------------------------------------------

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

    def collars(self, name: str) -> tuple[float, float]:
        """(collar_low, collar_high): new asks below low and new bids above high breach the collar."""
        return self.markets[name].collars(self.config.collar_fraction)

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
