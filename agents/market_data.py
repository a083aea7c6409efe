"""Market-data source: the venue's public feeds into the quoting path and onto Kafka.

Contract
- consumes: the venue's websocket (CRYPTICS_VENUE_URL, or Thalex testnet/production),
  for every instrument in CRYPTICS_INSTRUMENTS: ``ticker.<instrument>.raw``,
  ``book.<instrument>.none.all.raw`` and ``price_index.<underlying>`` (the
  underlying comes from ``public/instruments``); with credentials also the
  private ``account.portfolio``. (The session's order and trade feeds,
  ``session.orders`` and ``account.trade_history``, belong to the order gateway on
  the same session: it alone knows the stamps that go with each order.)
- produces: records on the ``ticker``, ``book``, ``trade``, ``index`` and
  ``position`` topics (Avro, key = instrument or index name), every one stamped
  ``received_at`` (docs/architecture.md#d9-latency-stamps). Before that, each ticker, book and index notification goes
  to the in-process channel as a ``MarketEvent``: the ``market_listeners`` of the source
  (the quote agent) are called with it as the notification is read (docs/architecture.md#d1-the-hot-path-stays-in-one-process).
- tables: none. It keeps a local L2 book per instrument (app/exchange/book.py);
  when a book stops adding up, the gap is counted and the channel resubscribed,
  and the book starts over from the next snapshot.
- web view: ``GET /market-data/`` → counts per channel, gaps, the client's stats, the
  deferred producer's counters (app/pipeline/producer.py) and each local book.

One venue session per account (D2): with a database configured, the source opens
the session only while it holds the quoting lease (app/stack/lease.py); standby workers
wait for it. Without a database (a lone worker) it connects at once.

Hot path first (D1): the handlers are plain functions, which the client runs in the
event loop's read callback. Each one builds a MarketEvent (a few numbers, about 1 µs)
and hands it to the market listeners, so the quote agent's orders are on the socket
before its Kafka value is even built; the Kafka produce is deferred until the socket's
burst is handled (``produce_later``) and never awaited. The in-process channel is a
list of callables, not a Faust channel: a Faust channel and its agent stream cost a task
switch per event (the measurement is in docs/architecture.md#d1-the-hot-path-stays-in-one-process).

Bad input from the venue (missing fields, wrong types) raises in the handler;
the client logs and counts it (``bad_notifications``) and nothing else is lost. A
field that only the Kafka record reads fails when the record is built, after the
handler: it is logged and counted the same way (``_bad_record``).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional, Protocol

import faust
from mode import Service

from app.clock import utc_now
from app.exchange.auth import Credentials
from app.exchange.book import BookGap, LocalBook
from app.exchange.client import ThalexClient
from app.exchange.messages import Notification
from app.exchange.protocol import book_channel, price_index_channel, ticker_channel
from app.faust_app import app, deferred_producer, produce_later, settings
from app.stack.lease import QuotingLease
from models.market import BookUpdate, IndexPrice, Ticker
from models.position import Position

log = logging.getLogger(__name__)

_TICKER_REQUIRED = ("mark_price", "mark_timestamp", "delta", "index")
_TICKER_OPTIONAL = tuple(
    name for name in Ticker._options.fields if name not in _TICKER_REQUIRED + ("instrument_name", "received_at")
)
_INDEX_OPTIONAL = ("expiration_print_average", "expiration_progress", "expected_expiration_price",
                   "previous_settlement_price")


NAN = float("nan")


@dataclass(slots=True)
class MarketEvent:
    """One ticker, book or index notification as the quote agent reads it: only what the
    hot path needs, built in about 1 µs (the Kafka value takes ~6 µs, and is built after)."""

    kind: str  # "ticker", "book" or "index"
    name: str  # the instrument; the index name for "index"
    received_at: datetime
    index: float = NAN  # "index": the index price; "ticker": the index the ticker carries
    mark: float = NAN
    mark_timestamp: Optional[float] = None
    funding_rate: Optional[float] = None
    best_bid: float = NAN  # "book": the local book's top after this update (NaN: empty side)
    best_ask: float = NAN

    @classmethod
    def of(cls, record: faust.Record) -> "MarketEvent":
        """The event of a Ticker, BookUpdate or IndexPrice record (e.g. one read back from Kafka)."""
        if isinstance(record, IndexPrice):
            return cls("index", record.index_name, record.received_at, index=record.price)
        if isinstance(record, Ticker):
            return cls("ticker", record.instrument_name, record.received_at, index=record.index,
                       mark=record.mark_price, mark_timestamp=record.mark_timestamp, funding_rate=record.funding_rate)
        if isinstance(record, BookUpdate):
            return cls("book", record.instrument_name, record.received_at, best_bid=_nan_if_none(record.best_bid_price),
                       best_ask=_nan_if_none(record.best_ask_price))
        raise TypeError(f"no market event for a {type(record).__name__}")


def _nan_if_none(value: Optional[float]) -> float:
    return NAN if value is None else value


def number(payload: dict, key: str) -> float:
    """A required JSON number; anything else is a clear error."""
    value = payload[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number, got {value!r}")
    return float(value)


def optional_number(payload: dict, key: str) -> Optional[float]:
    value = payload.get(key)
    return None if value is None else number(payload, key)


def _require_object(payload: Any, what: str) -> dict:
    if not isinstance(payload, dict):
        raise TypeError(f"{what} notification must be an object, got {type(payload).__name__}")
    return payload


def ticker_event(instrument: str, payload: Any, received_at: datetime) -> MarketEvent:
    payload = _require_object(payload, "ticker")
    return MarketEvent("ticker", instrument, received_at, index=number(payload, "index"),
                       mark=number(payload, "mark_price"), mark_timestamp=number(payload, "mark_timestamp"),
                       funding_rate=optional_number(payload, "funding_rate"))


# The Kafka values of the market-data topics are built as plain dictionaries (the Avro
# records' fields, what the codec encodes): a Faust record of the same fields costs ~26 µs
# to build and turn back into a dictionary, the dictionary ~6 µs. ``Model.from_data(value)``
# gives the record (models/market.py), as a consumer reads it.

def ticker_value(instrument: str, payload: Any, received_at: datetime) -> dict:
    """The ticker topic's value (schemas/ticker) for one ticker notification."""
    _require_object(payload, "ticker")
    value = {"instrument_name": instrument}
    for key in _TICKER_REQUIRED:
        value[key] = number(payload, key)
    for key in _TICKER_OPTIONAL:
        value[key] = optional_number(payload, key)
    value["received_at"] = received_at
    return value


def _index_name(payload: Any) -> str:
    name = _require_object(payload, "price_index")["index_name"]
    if not isinstance(name, str):
        raise TypeError(f"index_name must be a string, got {name!r}")
    return name


def index_event(payload: Any, received_at: datetime) -> MarketEvent:
    return MarketEvent("index", _index_name(payload), received_at, index=number(payload, "price"))


def index_value(payload: Any, received_at: datetime) -> dict:
    """The index topic's value (schemas/index) for one price_index notification."""
    value = {"index_name": _index_name(payload), "price": number(payload, "price"),
             "timestamp": number(payload, "timestamp")}
    for key in _INDEX_OPTIONAL:
        value[key] = optional_number(payload, key)
    value["received_at"] = received_at
    return value


def book_value(instrument: str, payload: dict, snapshot: bool, trades: list[dict],
               best_bid: Optional[tuple[float, float]], best_ask: Optional[tuple[float, float]],
               received_at: datetime) -> dict:
    """The book topic's value (schemas/book) for one book notification, with the local book's
    top after applying it; ``trades`` from _book_trades."""
    return {
        "instrument_name": instrument,
        "time": number(payload, "time"),
        "snapshot": snapshot,
        "bid_changes": _book_levels(payload.get("bid_changes", [])),
        "ask_changes": _book_levels(payload.get("ask_changes", [])),
        "trades": trades,
        "total_bid_amount": optional_number(payload, "total_bid_amount"),
        "total_ask_amount": optional_number(payload, "total_ask_amount"),
        "best_bid_price": best_bid[0] if best_bid else None,
        "best_bid_amount": best_bid[1] if best_bid else None,
        "best_ask_price": best_ask[0] if best_ask else None,
        "best_ask_amount": best_ask[1] if best_ask else None,
        "received_at": received_at,
    }


_POSITION_OPTIONAL = ("iv", "index", "start_price", "average_price", "unrealised_pnl", "realised_pnl",
                      "entry_value", "perpetual_funding_entry_value", "unrealised_perpetual_funding")


def position_records(payload: Any, received_at: datetime) -> list[Position]:
    """``account.portfolio``: a list of PortfolioEntry lines (all on the snapshot, changed ones after)."""
    if not isinstance(payload, list):
        raise TypeError(f"account.portfolio notification must be a list, got {type(payload).__name__}")
    records = []
    for entry in payload:
        if not isinstance(entry, dict) or not isinstance(entry.get("instrument_name"), str):
            raise TypeError(f"a portfolio entry must be an object with an instrument_name, got {entry!r}")
        records.append(Position(
            instrument_name=entry["instrument_name"], position=number(entry, "position"),
            mark_price=number(entry, "mark_price"),
            **{key: optional_number(entry, key) for key in _POSITION_OPTIONAL}, received_at=received_at))
    return records


def trade_value(instrument: str, trade: dict, received_at: datetime) -> dict:
    """The trade topic's value (schemas/trade) of one of _book_trades' trades."""
    return {"instrument_name": instrument, **trade, "received_at": received_at}


def _book_levels(changes: list) -> list[dict]:
    """schemas/book BookLevel values. LocalBook.apply has already checked the shape and the numbers."""
    return [{"price": float(c[0]), "amount": float(c[1]),
             "outright_amount": float(c[2]) if len(c) > 2 else float(c[1])} for c in changes]


def _book_trades(trades: Any) -> list[dict]:
    """schemas/book BookTrade values of a book notification's ``trades``."""
    if not isinstance(trades, list):
        raise TypeError(f"trades must be a list, got {type(trades).__name__}")
    out = []
    for t in trades:
        if not isinstance(t, list) or len(t) < 4 or t[2] not in ("buy", "sell"):
            raise TypeError(f"a trade must be [price, amount, direction, timestamp, implied_taker], got {t!r}")
        out.append({"price": float(t[0]), "amount": float(t[1]), "direction": t[2], "timestamp": float(t[3]),
                    "implied_taker": bool(t[4]) if len(t) > 4 else False})
    return out


class SessionListener(Protocol):
    async def session_opened(self, client: ThalexClient, instruments: dict[str, dict]) -> None: ...

    async def session_closing(self, client: ThalexClient) -> None: ...


class MarketDataSource(Service):
    """One venue connection feeding the quoting path and the pipeline."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client: Optional[ThalexClient] = None
        self.lease: Optional[QuotingLease] = None
        #: public/instruments of the venue, by name (tick sizes for the quoter).
        self.instruments: dict[str, dict] = {}
        #: Told when a venue session opens and before it closes (the quote agent).
        self.session_listeners: list[SessionListener] = []
        #: The in-process channel: called with the MarketEvent of each ticker, book and index
        #: notification, in arrival order, before anything else (the quote agent). A listener
        #: must not raise.
        self.market_listeners: list[Callable[[MarketEvent], None]] = []
        self.books: dict[str, LocalBook] = {}
        #: Notifications handled, per channel (what the venue sent that we turned into records).
        self.received: Counter[str] = Counter()
        #: Book gaps detected, per instrument.
        self.gaps: Counter[str] = Counter()
        self._resubscribing: set[str] = set()

    async def on_start(self) -> None:
        if settings.venue_ws_url is None:
            log.warning("no venue URL (CRYPTICS_VENUE_URL): the market-data source stays idle")
            return
        if settings.database_url is None:
            await self.open_session()  # a lone worker with no database: nobody to share the account with
            return
        # Of all workers, only the lease holder opens the venue session (docs/architecture.md#d2-one-active-quoter-per-venue-account).
        self.lease = QuotingLease(settings.database_dsn, self.account_identity(), self.open_session,
                                  self.close_session)
        self.add_future(self.lease.run())

    async def on_stop(self) -> None:
        await self.close_session()

    @staticmethod
    def account_identity() -> str:
        """What the lease is about: one venue account (URL, key, sub-account)."""
        return f"{settings.venue_ws_url}|{settings.thalex_key_id}|{settings.thalex_account}"

    async def open_session(self) -> None:
        """Connect, log in, subscribe; then tell the session listeners (the quote agent)."""
        url = settings.venue_ws_url
        credentials = None
        if settings.thalex_key_id is not None:
            credentials = Credentials.from_file(settings.thalex_key_id, settings.thalex_private_key_file,
                                                settings.thalex_account)
        client = ThalexClient(url, credentials)
        client.add_disconnect_listener(self._on_disconnect)
        await client.start()
        self.client = client
        self.instruments = {i["instrument_name"]: i for i in await client.call("public/instruments")}
        channels: dict[str, Any] = {}
        for name in settings.instrument_names:
            if name not in self.instruments:
                raise RuntimeError(f"the venue lists no instrument {name!r} (CRYPTICS_INSTRUMENTS)")
            self.books[name] = LocalBook(name, full_depth=True)
            channels[ticker_channel(name)] = self._ticker_handler(name)
            channels[book_channel(name)] = self._book_handler(name)
            channels[price_index_channel(self.instruments[name]["underlying"])] = self._on_index
        if credentials is not None:
            channels["account.portfolio"] = self._on_portfolio
        for channel, handler in channels.items():
            await client.subscribe([channel], handler)
        log.info("market data: subscribed %s on %s", sorted(channels), url)
        for listener in self.session_listeners:
            await listener.session_opened(client, self.instruments)

    async def close_session(self) -> None:
        """Leave the venue: listeners first (they cancel their orders), then the connection."""
        client, self.client = self.client, None
        if client is None:
            return
        for listener in self.session_listeners:
            try:
                await listener.session_closing(client)
            except Exception:
                log.exception("a session listener failed while closing")
        await client.close(cancel_session=client.credentials is not None)
        for book in self.books.values():
            book.reset()

    def _on_disconnect(self) -> None:
        # Whatever the venue sent while we were away is lost: a gap in every synced book.
        # The books start over from the snapshot that follows the resubscribe.
        for name, book in self.books.items():
            if book.synced:
                self.gaps[name] += 1
                log.warning("book gap #%d: %s: connection lost", self.gaps[name], name)
            book.reset()

    def _hot(self, event: MarketEvent) -> None:
        for listener in self.market_listeners:
            listener(event)

    def _ticker_handler(self, instrument: str):
        def on_ticker(n: Notification) -> None:
            received_at = utc_now()
            self._hot(ticker_event(instrument, n.payload, received_at))
            self.received[n.channel] += 1
            produce_later("ticker", instrument, lambda: ticker_value(instrument, n.payload, received_at),
                          self._bad_record)
        return on_ticker

    def _on_index(self, n: Notification) -> None:
        received_at = utc_now()
        event = index_event(n.payload, received_at)
        self._hot(event)
        self.received[n.channel] += 1
        produce_later("index", event.name, lambda: index_value(n.payload, received_at), self._bad_record)

    def _bad_record(self, exc: Exception) -> None:
        """A notification the hot path could read but whose record could not be built (a
        field only the record has is wrong): counted like any bad notification."""
        if self.client is not None:
            self.client.stats["bad_notifications"] += 1

    def _on_portfolio(self, n: Notification) -> None:
        for position in position_records(n.payload, utc_now()):
            produce_later("position", position.instrument_name, position)
        self.received[n.channel] += 1

    def _book_handler(self, instrument: str):
        def on_book(n: Notification) -> None:
            received_at = utc_now()
            book = self.books[instrument]
            payload = n.payload
            gap: Optional[BookGap] = None
            try:
                book.apply(payload, n.snapshot)
            except BookGap as exc:
                gap = exc
            best_bid, best_ask = (book.best_bid(), book.best_ask()) if book.synced else (None, None)
            if book.synced:  # a book that does not add up is no input to quote from
                self._hot(MarketEvent("book", instrument, received_at, best_bid=best_bid[0] if best_bid else NAN,
                                      best_ask=best_ask[0] if best_ask else NAN))
            trades = _book_trades(payload.get("trades", []))
            self.received[n.channel] += 1
            # Every notification the venue sent is recorded, including the one that revealed a gap.
            produce_later("book", instrument, lambda: book_value(instrument, payload, n.snapshot, trades, best_bid,
                                                                 best_ask, received_at), self._bad_record)
            for trade in trades:
                produce_later("trade", instrument, trade_value(instrument, trade, received_at))
            if gap is not None:
                self._on_gap(instrument, n.channel, gap)
        return on_book

    def _on_gap(self, instrument: str, channel: str, gap: BookGap) -> None:
        self.gaps[instrument] += 1
        log.warning("book gap #%d: %s; resubscribing %s", self.gaps[instrument], gap, channel)
        if channel in self._resubscribing or self.client is None:
            return
        self._resubscribing.add(channel)

        async def resubscribe() -> None:
            try:
                await self.client.resubscribe(channel)
            except Exception as exc:  # the connection dropped meanwhile: the reconnect resubscribes
                log.warning("resubscribing %s failed: %s", channel, exc)
            finally:
                self._resubscribing.discard(channel)

        self.add_future(resubscribe())

    def view(self) -> dict:
        books = {}
        for name, book in self.books.items():
            bids, asks = book.levels()
            books[name] = {"synced": book.synced, "time": book.time, "bids": bids, "asks": asks}
        return {
            "venue": settings.venue_ws_url,
            "session_open": self.client is not None,
            "lease": None if self.lease is None else {
                "held": self.lease.held, "acquisitions": self.lease.acquisitions, "losses": self.lease.losses},
            "account": self.client.account if self.client else None,
            "received": dict(self.received),
            "gaps": dict(self.gaps),
            "client": dict(self.client.stats) if self.client else {},
            "producer": dict(deferred_producer.stats),  # every record the worker publishes itself
            "books": books,
        }


source = MarketDataSource()
app.service(source)  # type: ignore[arg-type]  # started and stopped with the worker


@app.page("/market-data/")
async def market_data_view(web, request):
    return web.json(source.view())
