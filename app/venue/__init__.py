"""The simulated Thalex venue: the exchange every test, benchmark and demo trades against.

It speaks Thalex's JSON-RPC over a loopback websocket (``ws://host:port/ws/api/v2``),
as described field by field in docs/thalex-protocol.md, around a moving simulated market.
The protocol's own facts (error codes, order statuses, label and id rules, the channel
grammar) are in app/exchange/protocol.py, shared with the client and the order gateway.

Modules, in reading order:
- config.py       ``VenueConfig``: every parameter, with defaults
- errors.py       ``VenueError``, the refusal of a request (its codes: app/exchange/protocol.py)
- instruments.py  the listed perpetuals; wire numbers ↔ integer ticks and units
- orders.py       an order and its OrderStatus
- book.py         one price-time priority order book
- accounts.py     positions, P&L, fees, funding
- marks.py        one instrument's index, mark, funding and 24 h statistics
- events.py       what the engine reports for the server to publish
- the matching engine (pure, synchronous), one role a module:
  - state.py        the state the roles share: books, accounts, live orders, protection groups
  - matching.py     order entry, price-time matching, STP, collars, fills and fees booked
  - mass_quotes.py  mass quotes and MM protection (on top of matching)
  - reports.py      open orders, portfolio, summary, trade history; tickers, books, index
  - engine.py       ``Engine``: the roles composed, and the market step (marks and funding)
- market.py       the seeded index, house liquidity and the takers
- auth.py         JWT login, trusted keys, ``create_keypair``
- latency.py      the tick-to-order latency probe
- the server, one layer a module:
  - transport.py    ``Connection``: one websocket session, its outbox, frames and rate buckets
  - feeds.py        public subscription channels and their notifications
  - publishing.py   connections, subscriptions, and the fan-out after every engine action
  - routing.py      the JSON-RPC method table and its handlers
  - server.py       ``Venue`` (aiohttp websocket server: life cycle, timers) and ``serve``

Use::

    venue = Venue(VenueConfig(port=0, trusted_keys_dir=keys))
    await venue.start()            # venue.url → ws://127.0.0.1:PORT/ws/api/v2
    ...
    venue.latency_stats()
    await venue.stop()
"""
from app.venue.auth import create_keypair, default_account, sign_token
from app.venue.config import VenueConfig
from app.venue.engine import Engine
from app.venue.errors import VenueError
from app.venue.instruments import DEFAULT_INSTRUMENTS, Instrument
from app.venue.market import Market
from app.venue.server import PATH, Venue, serve

__all__ = [
    "VenueConfig", "Venue", "serve", "create_keypair", "sign_token", "default_account", "Engine", "Market",
    "Instrument", "DEFAULT_INSTRUMENTS", "VenueError", "PATH",
]
