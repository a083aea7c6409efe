"""The quote core: the compiled module, or its pure-Python twin, plus a thin QuoteParams wrapper.

The Cython build (app/trading/_quote.pyx) is used when it was compiled at install time; without a
compiler, or with ``CRYPTICS_PURE_PYTHON=1``, the twin (app/trading/_quote_py.py) is used instead.
``IMPLEMENTATION`` says which one is live. The twin's docstring gives the conventions
(NaN = no data, bids round down and asks up, post-only limits, units of sigma).

Hot path: build a ``Quoter`` once per instrument, parameter set and position limit (the risk
gate's ``RiskLimits.max_position``: the core's sizes and the gate's check use the one limit),
then call ``quoter.ladder(index, mark, best_bid, best_ask, position, sigma)`` per tick; it
passes the bound numbers straight to ``compute_ladder`` and returns its plain 4-tuple (the
field order of ``Ladder``).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Tuple

from app.config import compiled_or_twin
from app.trading.quote_params import QuoteParams

_core, IMPLEMENTATION = compiled_or_twin("app.trading._quote", "app.trading._quote_py")
EMPTY_LADDER = _core.EMPTY_LADDER
FAIR_VALUE_INDEX = _core.FAIR_VALUE_INDEX
FAIR_VALUE_MARK = _core.FAIR_VALUE_MARK
FAIR_VALUE_MID = _core.FAIR_VALUE_MID
MAX_LEVELS_PER_SIDE = _core.MAX_LEVELS_PER_SIDE
MODE_AVELLANEDA_STOIKOV = _core.MODE_AVELLANEDA_STOIKOV
MODE_LINEAR = _core.MODE_LINEAR
UNIT_BPS = _core.UNIT_BPS
UNIT_TICKS = _core.UNIT_TICKS
VolatilityEstimator = _core.VolatilityEstimator
compute_ladder = _core.compute_ladder
fair_value = _core.fair_value
optimal_spread = _core.optimal_spread
reservation_price = _core.reservation_price

FAIR_VALUE_CODES = {"index": FAIR_VALUE_INDEX, "mark": FAIR_VALUE_MARK, "mid": FAIR_VALUE_MID}
MODE_CODES = {"linear": MODE_LINEAR, "avellaneda_stoikov": MODE_AVELLANEDA_STOIKOV}
UNIT_CODES = {"ticks": UNIT_TICKS, "bps": UNIT_BPS}


class Ladder(NamedTuple):
    """The desired quotes, best level first on each side; prices and sizes pair up by position."""

    bid_prices: Tuple[float, ...]
    bid_sizes: Tuple[float, ...]
    ask_prices: Tuple[float, ...]
    ask_sizes: Tuple[float, ...]


def core_arguments(params: QuoteParams, tick_size: float, size_step: float, position_limit: float) -> tuple:
    """The arguments of ``compute_ladder`` after the six market inputs, from ``params`` and the
    position limit (the risk gate's ``RiskLimits.max_position``: one limit for the core and the
    gate). ValueError if the limit is not a positive number or the target lies outside it."""
    if isinstance(position_limit, bool) or not isinstance(position_limit, (int, float)) or not (
            position_limit > 0 and math.isfinite(position_limit)):
        raise ValueError(f"position_limit must be a positive finite number, got {position_limit!r}")
    if abs(params.target_position) > position_limit:
        raise ValueError(f"target_position {params.target_position} is outside ±position_limit {position_limit}")
    return (
        float(tick_size), float(size_step), params.bid_sizes, params.ask_sizes,
        FAIR_VALUE_CODES[params.fair_value_source], MODE_CODES[params.mode], UNIT_CODES[params.spread_unit],
        params.half_spread, params.level_step, params.target_position, float(position_limit),
        params.price_skew, params.size_skew, params.as_gamma, params.as_kappa,
        params.as_horizon_seconds, params.as_inventory_lot, params.post_only,
    )


class Quoter:
    """``compute_ladder`` with one QuoteParams, one instrument's tick and size step, and the
    position limit bound."""

    __slots__ = ("params", "tick_size", "size_step", "position_limit", "_bound")

    def __init__(self, params: QuoteParams, tick_size: float, size_step: float, position_limit: float) -> None:
        params.validate()
        self.params = params
        self.tick_size = tick_size
        self.size_step = size_step
        self.position_limit = position_limit
        self._bound = core_arguments(params, tick_size, size_step, position_limit)

    def ladder(self, index: float, mark: float = math.nan, best_bid: float = math.nan,
               best_ask: float = math.nan, position: float = 0.0, sigma: float = math.nan) -> tuple:
        """The core's plain ``(bid_prices, bid_sizes, ask_prices, ask_sizes)``; NaN = no data.

        Not wrapped in a Ladder: building the named tuple costs about as much as the ladder.
        """
        return compute_ladder(index, mark, best_bid, best_ask, position, sigma, *self._bound)


def compute(params: QuoteParams, *, tick_size: float, size_step: float, position_limit: float,
            index: float = math.nan, mark: float = math.nan, best_bid: float = math.nan,
            best_ask: float = math.nan, position: float = 0.0, sigma: float = math.nan) -> Ladder:
    """One-off ladder from a QuoteParams and a position limit, with field names (use Quoter per tick)."""
    quoter = Quoter(params, tick_size, size_step, position_limit)
    return Ladder._make(quoter.ladder(index, mark, best_bid, best_ask, position, sigma))


def volatility_estimator(params: QuoteParams) -> VolatilityEstimator:
    """A fresh sigma estimator with the parameters' half-life."""
    return VolatilityEstimator(params.volatility_half_life_seconds)


__all__ = [
    "IMPLEMENTATION", "Ladder", "Quoter", "QuoteParams", "VolatilityEstimator", "compute",
    "compute_ladder", "core_arguments", "fair_value", "optimal_spread", "reservation_price",
    "volatility_estimator", "EMPTY_LADDER", "MAX_LEVELS_PER_SIDE",
]
