"""PositionState (app/analytics/positions.py) books any sequence of fills as the venue does
(app/venue/accounts.py Position, integer units of the BTC perpetual's 0.001 volume tick):
same position, average price and realised P&L. Examples: tests/unit/test_analytics_positions.py.
"""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics.positions import FeeSchedule, PositionState
from app.venue.accounts import Position
from app.venue.instruments import DEFAULT_INSTRUMENTS

BTC = next(i for i in DEFAULT_INSTRUMENTS if i.instrument_name == "BTC-PERPETUAL")
FEES = FeeSchedule(maker_rate=-0.0001, taker_rate=0.0005)
TOLERANCE = 1e-9

fills = st.lists(
    st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 5_000), st.integers(90_000, 110_000),
              st.sampled_from(["maker", "taker"])),
    max_size=60,
)


def close(ours: float, venue: float) -> bool:
    """Within 1e-9, relative to the size of the numbers (prices are ~1e5)."""
    return math.isclose(ours, venue, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


@settings(max_examples=400, deadline=None)
@given(fills)
def test_fills_are_booked_as_the_venue_books_them(sequence):
    state, venue = PositionState(BTC.instrument_name), Position(BTC)
    fees = volume = 0.0
    for direction, units, ticks, maker_taker in sequence:
        price, amount = BTC.price(ticks), BTC.amount(units)
        state.apply_fill({"direction": direction, "amount": amount, "price": price, "maker_taker": maker_taker,
                          "time": None}, FEES)
        venue.apply_fill(1 if direction == "buy" else -1, units, price, 0.0)
        fees += price * amount * (FEES.maker_rate if maker_taker == "maker" else FEES.taker_rate)
        volume += amount
        assert state.position == round(venue.contracts, 9)
        assert close(state.average_price, venue.average_price)
        assert close(state.realized_pnl, venue.realised_pnl)
    assert (state.position == 0.0) == (venue.units == 0)
    assert close(state.fees, fees) and close(state.volume, volume)
    assert state.trades == len(sequence)
    assert PositionState.from_record(state.to_record()) == state
