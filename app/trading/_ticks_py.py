"""Pure-Python twin of app/trading/_ticks.pyx: same arithmetic, same results, bit for bit.

tests/property/test_ticks.py holds the two equal on random inputs (hypothesis).
"""
from __future__ import annotations

import math

#: Tolerance in units of one tick: a value within this of a tick multiple counts as on
#: it, so 0.1 + 0.2 is "aligned" with a 0.1 tick. The relative part covers the error
#: of one division when a price is billions of ticks (0.0001 ticks at 500,000).
EPSILON = 1e-9
RELATIVE = 1e-14


def _tolerance(units: float) -> float:
    return EPSILON + abs(units) * RELATIVE


def round_price(price: float, tick: float, direction: int) -> float:
    """``price`` on the tick grid: direction -1 rounds down (bids), +1 up (asks), 0 to nearest."""
    if not tick > 0.0:
        raise ValueError(f"tick must be positive, got {tick}")
    units = price / tick
    if direction < 0:
        n = math.floor(units + _tolerance(units))
    elif direction > 0:
        n = math.ceil(units - _tolerance(units))
    else:
        n = math.floor(units + 0.5)
    return n * tick


def round_size(amount: float, step: float) -> float:
    """``amount`` rounded down to a multiple of ``step``: rounding never adds size."""
    if not step > 0.0:
        raise ValueError(f"step must be positive, got {step}")
    if amount <= 0.0:
        return 0.0
    units = amount / step
    return math.floor(units + _tolerance(units)) * step


def is_aligned(value: float, step: float) -> bool:
    """True when ``value`` is a whole number of ``step`` (within the tolerance)."""
    if not step > 0.0:
        raise ValueError(f"step must be positive, got {step}")
    units = value / step
    return abs(units - math.floor(units + 0.5)) <= _tolerance(units)
