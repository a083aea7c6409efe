"""The matching engine: order books, order rules, fills, fees, positions, marks and funding.

Pure and synchronous on purpose: no I/O, no clock, no randomness. Every call takes ``now``
(unix seconds) from its caller, so tests/unit/test_venue_engine.py and
tests/property/test_venue_engine.py drive it directly and the server (server.py) only
wraps it. What happened during a call is appended to ``events`` (events.py) for the server
to publish; the instruments whose market data changed are in ``dirty``.

``Engine`` is its roles composed over one shared state, each in its own module:
- state.py        the books, accounts, live orders, protection groups, events; lookups
- matching.py     insert/amend/cancel, price-time matching, self-trade prevention, collars,
                  fills and fees booked, cancel-on-disconnect
- mass_quotes.py  mass quotes and MM protection groups (on top of matching)
- reports.py      open orders, portfolio, account summary, trade history; tickers, books, index
- marks.py        one instrument's index, mark, funding and 24 h statistics
and, here, the market step (``advance``) that moves every instrument's mark and funding.
"""
from __future__ import annotations

import math

from app.venue.marks import fair_price
from app.venue.mass_quotes import MassQuotes
from app.venue.reports import Reports


class Engine(MassQuotes, Reports):
    """All books and accounts of the venue."""

    def advance(self, index: dict[str, float], dt: float, now: float) -> None:
        """One market step: new index per underlying; premium EMA, mark and funding move on
        (docs/thalex-protocol.md §5.3, marks.py)."""
        alpha = 1.0 - math.exp(-dt / self.config.mark_ema_seconds)
        dampener = self.config.funding_dampener_bps / 10_000.0
        self.index_time = now
        for name, ins in self.instruments.items():
            market = self.markets[name]
            idx = index.get(ins.underlying, market.index)
            market.advance(idx, fair_price(ins, self.books[name], idx), alpha, dampener, dt, now, ins)
            self.dirty.add(name)
