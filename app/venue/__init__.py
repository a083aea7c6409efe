"""The simulated Thalex venue: the exchange every test, benchmark and demo trades against.

It speaks Thalex's JSON-RPC over a loopback websocket (``ws://host:port/ws/api/v2``),
as described field by field in thalex_api.md, around a moving simulated market.

Modules, in reading order:
- config.py      ``VenueConfig``: every parameter, with defaults
- errors.py      the error codes (thalex_api.md §6.1) and ``VenueError``
- instruments.py the listed perpetuals; wire numbers ↔ integer ticks and units
- orders.py      an order and its OrderStatus
- book.py        one price-time priority order book
- accounts.py    positions, P&L, fees, funding
- engine.py      the matching engine (pure, synchronous): order rules, fills, marks
- market.py      the seeded index, house liquidity and the takers
- auth.py        JWT login, trusted keys, ``create_keypair``
- feeds.py       subscription channels and their notifications
- latency.py     the tick-to-order latency probe
- server.py      ``Venue`` (aiohttp websocket server) and ``serve``

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
