"""The position keeper: one per quoting session, the one place positions are tracked. Pure, no I/O.

Who writes it: the order gateway (app/gateway/), which sets it from ``private/portfolio``
each time a venue session opens (``reset_from_portfolio``) and adds each new fill once
(``add_fill``). Who reads it: the quote agent (the position it hands the quote core and the
risk gate, and the PnL its kill switch judges) and the gateway's pre-trade check.

Two things are kept per instrument, and they live on different clocks:

- the position (signed: buy +, sell −): the account's, as the portfolio reported it when
  the venue session opened, plus this session's fills since. A reconnect opens a new venue
  session, whose portfolio read replaces it (fills of the gap are in the new read);
- the mark-to-market PnL of this quoting session's fills: their cash flow (sells +, buys −)
  plus the position they add up to at the mark, fees left out. It starts at zero with the
  keeper and keeps accumulating across reconnects: a portfolio read does not touch it.
"""
from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["PositionKeeper"]


class PositionKeeper:
    """Positions per instrument (portfolio at session open + fills), and the session's fill PnL."""

    __slots__ = ("_positions", "_cash", "_fill_positions")

    def __init__(self) -> None:
        self._positions: dict[str, float] = {}
        #: This quoting session's fills: cash flow and the position they add up to.
        self._cash: dict[str, float] = {}
        self._fill_positions: dict[str, float] = {}

    def reset_from_portfolio(self, portfolio: Any) -> None:
        """The answer of ``private/portfolio`` (a list of entries with ``instrument_name`` and
        ``position``) replaces every position: an instrument it does not list is flat. Entries
        without a numeric position are skipped. The fill PnL is kept."""
        positions = {}
        for entry in portfolio if isinstance(portfolio, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("position"), (int, float)):
                positions[entry["instrument_name"]] = float(entry["position"])
        self._positions = positions

    def add_fill(self, instrument: str, direction: str, amount: float, price: float) -> None:
        """One new fill of ours (``direction`` buy or sell: the side of our order)."""
        sign = 1.0 if direction == "buy" else -1.0
        # Rounded: a long run of float additions must still read 0.0 when flat.
        self._positions[instrument] = round(self._positions.get(instrument, 0.0) + sign * amount, 10)
        self._fill_positions[instrument] = self._fill_positions.get(instrument, 0.0) + sign * amount
        self._cash[instrument] = self._cash.get(instrument, 0.0) - sign * amount * price

    def position(self, instrument: str) -> float:
        """Signed position (buy +, sell −); 0.0 for an instrument never seen."""
        return self._positions.get(instrument, 0.0)

    def pnl(self, instrument: str, mark: Optional[float]) -> Optional[float]:
        """This session's fills marked to ``mark``: cash flow + fill position × mark; None
        without a mark (None or NaN), when the PnL cannot be judged."""
        if mark is None or math.isnan(mark):
            return None
        return self._cash.get(instrument, 0.0) + self._fill_positions.get(instrument, 0.0) * mark
