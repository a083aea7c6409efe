"""Accounts and positions: the bookkeeping of fills, fees and perpetual funding.

A position keeps its size (signed volume units), its average entry price and its
average entry *funding mark*. The funding mark F of a perpetual is the cumulative
funding paid by one long contract since the venue started (docs/thalex-protocol.md §5.3,
engine.py advances it every market step). Funding then needs no per-step loop
over accounts: a position of q contracts entered at F0 has paid q·(F − F0) so far,
and closing c contracts realises c·(F − F0) of it. The same average-cost rule
realises position P&L: closing c contracts of a long entered at A at price P
realises c·(P − A).

PnL sign conventions: positive is money to the account. Funding: positive F
means longs pay (docs/thalex-protocol.md §5.3), so a long's funding P&L is −q·(F − F0).
"""
from __future__ import annotations

from typing import Optional

from app.venue.instruments import Instrument


class Position:
    """One account's position in one instrument."""

    __slots__ = ("instrument", "units", "average_price", "funding_entry", "realised_pnl",
                 "realised_funding", "fees", "last_portfolio_mark")

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        #: Signed size in volume units: long > 0, short < 0.
        self.units = 0
        #: Average entry price of the open position (0 when flat).
        self.average_price = 0.0
        #: Average funding mark at entry of the open position.
        self.funding_entry = 0.0
        #: Realised position P&L (USD), fees and funding excluded.
        self.realised_pnl = 0.0
        #: Funding realised by closing contracts (USD).
        self.realised_funding = 0.0
        #: Fees paid on this instrument (USD).
        self.fees = 0.0
        #: Mark at the last account.portfolio line sent, to resend on a >1 % move (docs/thalex-protocol.md §4.9).
        self.last_portfolio_mark: Optional[float] = None

    @property
    def contracts(self) -> float:
        return self.units * self.instrument.volume_tick_size

    def apply_fill(self, direction: int, units: int, price: float, funding_mark: float) -> tuple[float, float]:
        """Book a fill; returns the (position P&L, funding P&L) it realised."""
        tick = self.instrument.volume_tick_size
        signed = direction * units
        if self.units == 0 or (self.units > 0) == (signed > 0):
            new_units = self.units + signed
            old, add = abs(self.units), units
            self.average_price = (self.average_price * old + price * add) / (old + add)
            self.funding_entry = (self.funding_entry * old + funding_mark * add) / (old + add)
            self.units = new_units
            return 0.0, 0.0
        closed = min(units, abs(self.units))
        side = 1 if self.units > 0 else -1
        pnl = closed * tick * (price - self.average_price) * side
        funding = -closed * tick * (funding_mark - self.funding_entry) * side
        self.realised_pnl += pnl
        self.realised_funding += funding
        self.units += signed
        if self.units == 0:
            self.average_price = 0.0
            self.funding_entry = 0.0
        elif units > closed:  # flipped: the rest opens a new position at this fill
            self.average_price = price
            self.funding_entry = funding_mark
        return pnl, funding

    def unrealised_pnl(self, mark: float) -> float:
        return self.contracts * (mark - self.average_price) if self.units else 0.0

    def unrealised_funding(self, funding_mark: float) -> float:
        return -self.contracts * (funding_mark - self.funding_entry) if self.units else 0.0


class Account:
    """A trading account: cash, positions and its trade records."""

    __slots__ = ("number", "cash", "positions", "trades", "quiet")

    def __init__(self, number: str, cash: float, quiet: bool = False) -> None:
        self.number = number
        #: Starting cash; realised P&L, funding and fees are added on top in summaries.
        self.cash = cash
        self.positions: dict[str, Position] = {}
        #: Trade records (the wire Trade objects), oldest first.
        self.trades: list[dict] = []
        #: Internal accounts (house liquidity, simulated takers) keep no trade records
        #: and produce no order notifications: nobody can log in to see them.
        self.quiet = quiet

    def position(self, instrument: Instrument) -> Position:
        pos = self.positions.get(instrument.instrument_name)
        if pos is None:
            pos = self.positions[instrument.instrument_name] = Position(instrument)
        return pos

    def realised(self) -> float:
        """Realised P&L net of fees, funding included."""
        return sum(p.realised_pnl + p.realised_funding - p.fees for p in self.positions.values())
