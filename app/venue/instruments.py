"""The instruments the venue lists, and the conversion between wire numbers and book integers.

Prices and amounts travel as plain JSON numbers (docs/thalex-protocol.md §5.5). Inside the
engine they are integers: a price is a whole number of ``tick_size`` ("ticks") and an
amount a whole number of ``volume_tick_size`` ("units"). Integers make matching exact:
0.1 + 0.2 never leaves a 0.30000000000000004 BTC order resting in the book, and the
property tests can check conservation with ``==``.

Alignment is checked with app.trading.ticks (after the 8-decimal rounding the exchange
applies first, docs/thalex-protocol.md §5.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from app.exchange.protocol import INVALID_PRICE, INVALID_QUANTITY, PRICE_NOT_ALIGNED
from app.trading.ticks import is_aligned
from app.venue.errors import VenueError


@dataclass(frozen=True)
class Instrument:
    """One listed instrument (fields as in docs/thalex-protocol.md §3.6) plus its simulated start price."""

    instrument_name: str
    product: str
    tick_size: float
    volume_tick_size: float
    min_order_amount: float
    underlying: str
    type: str
    base_currency: str
    create_time: float
    #: Where the simulated index of the underlying starts (not part of the wire object).
    initial_index: float

    @cached_property
    def price_decimals(self) -> int:
        """Decimals that represent every tick multiple exactly (plus slack for float noise)."""
        return max(0, -math.floor(math.log10(self.tick_size))) + 2

    @cached_property
    def amount_decimals(self) -> int:
        return max(0, -math.floor(math.log10(self.volume_tick_size))) + 2

    @cached_property
    def min_units(self) -> int:
        return round(self.min_order_amount / self.volume_tick_size)

    def price(self, ticks: int) -> float:
        """Wire price of a whole number of ticks."""
        return round(ticks * self.tick_size, self.price_decimals)

    def amount(self, units: int) -> float:
        """Wire amount of a whole number of volume ticks."""
        return round(units * self.volume_tick_size, self.amount_decimals)

    def ticks(self, price: float) -> int:
        """Ticks of a wire price; VenueError 13 if not positive, 15 if off the tick grid."""
        price = round(float(price), 8)
        if not price > 0:
            raise VenueError(INVALID_PRICE, f"price must be positive, got {price}")
        if not is_aligned(price, self.tick_size):
            raise VenueError(PRICE_NOT_ALIGNED, f"price {price} is not a multiple of tick size {self.tick_size}")
        return round(price / self.tick_size)

    def units(self, amount: float) -> int:
        """Volume ticks of a wire amount; VenueError 14 if negative or off the volume grid."""
        amount = round(float(amount), 8)
        if amount < 0 or not math.isfinite(amount):
            raise VenueError(INVALID_QUANTITY, f"amount must not be negative, got {amount}")
        if not is_aligned(amount, self.volume_tick_size):
            raise VenueError(
                INVALID_QUANTITY, f"amount {amount} is not a multiple of volume tick size {self.volume_tick_size}"
            )
        return round(amount / self.volume_tick_size)

    def to_json(self) -> dict:
        return {
            "instrument_name": self.instrument_name,
            "product": self.product,
            "tick_size": self.tick_size,
            "volume_tick_size": self.volume_tick_size,
            "min_order_amount": self.min_order_amount,
            "underlying": self.underlying,
            "type": self.type,
            "base_currency": self.base_currency,
            "create_time": self.create_time,
        }


#: Listing time of the simulated perpetuals (an arbitrary fixed moment, 2021-09-10).
LISTED_AT = 1631250800.1

#: The perpetuals of docs/thalex-protocol.md §5.2.
DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("BTC-PERPETUAL", "FBTCUSD", 1.0, 0.001, 0.001, "BTCUSD", "perpetual", "USD", LISTED_AT, 100_000.0),
    Instrument("ETH-PERPETUAL", "FETHUSD", 0.1, 0.01, 0.01, "ETHUSD", "perpetual", "USD", LISTED_AT, 3_500.0),
)
