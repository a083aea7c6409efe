"""Pure-Python twin of app/trading/_quote.pyx: the quote core, same arithmetic, same results bit for bit.

Numbers in, numbers out: fair-value inputs, position, volatility and parameters go in;
the desired ladder comes out as four tuples ``(bid_prices, bid_sizes, ask_prices,
ask_sizes)``, best level first. tests/property/test_quote_core.py holds this module and the
compiled one equal on random inputs (hypothesis), so change both together, line for line.

Conventions (the same in both modules):

- Missing market data is NaN: a best bid or ask that is NaN (or infinite) is absent and
  does not limit the ladder. A fair value that is NaN or not positive, a position that is
  not finite, or (in Avellaneda–Stoikov mode) a NaN sigma gives the empty ladder
  ``((), (), (), ())``: pull the quotes rather than guess.
- Prices are whole ticks: bids round **down** and asks round **up**, so rounding never
  quotes tighter than asked. Own bid stays strictly below own ask.
- Post-only: every bid is at most ``best_ask - tick`` and every ask at least
  ``best_bid + tick``. Bids strictly decrease and asks strictly increase, each level at
  least one tick beyond the one before it (a level squeezed by the book or by a step
  under one tick sits one tick behind its neighbour).
- Sizes are whole size steps, rounded down. The position limit is counted in whole size
  steps: a side's sizes sum to at most ``limit - position`` (bids) or ``limit + position``
  (asks); a side with less than one step of room is empty. Levels whose size rounds to
  zero are left out (the remaining levels keep their prices).
- ``sigma`` is the volatility of the log fair value per square-root second (a fraction,
  what ``VolatilityEstimator`` returns); the Avellaneda–Stoikov formulas use it in price
  units, ``sigma * fair_value``. ``gamma`` is per (price unit × inventory lot), ``kappa``
  per price unit, the horizon in seconds.
"""
from __future__ import annotations

import math

from app.trading._ticks_py import EPSILON, RELATIVE

#: The core fills fixed-size buffers (the compiled module keeps them on the C stack).
MAX_LEVELS_PER_SIDE = 64

#: Which input is the fair value.
FAIR_VALUE_INDEX = 0
FAIR_VALUE_MARK = 1
FAIR_VALUE_MID = 2  # (best_bid + best_ask) / 2; NaN (so no quotes) when a side is missing

#: How the centre and the half-spread are found.
MODE_LINEAR = 0  # fixed half-spread, linear inventory skew of the centre
MODE_AVELLANEDA_STOIKOV = 1  # reservation price and optimal spread

#: The unit of half_spread, level_step and price_skew.
UNIT_TICKS = 0
UNIT_BPS = 1  # basis points of the fair value

BPS = 1e-4
LN2 = 0.6931471805599453

EMPTY_LADDER = ((), (), (), ())


def _floor_units(units):
    # Same tolerance as app/trading/_ticks_py.py: float noise just under a tick multiple is on it.
    return math.floor(units + (EPSILON + abs(units) * RELATIVE))


def _ceil_units(units):
    return math.ceil(units - (EPSILON + abs(units) * RELATIVE))


def fair_value(index, mark, best_bid, best_ask, source):
    """The fair value picked by ``source`` (FAIR_VALUE_INDEX, _MARK or _MID)."""
    if source == FAIR_VALUE_INDEX:
        return index
    elif source == FAIR_VALUE_MARK:
        return mark
    elif source == FAIR_VALUE_MID:
        return 0.5 * (best_bid + best_ask)
    raise ValueError(f"unknown fair value source {source}")


def reservation_price(fair_value, inventory, sigma, gamma, horizon):
    """Avellaneda–Stoikov r = s − q·γ·σ²·τ, with σ = sigma·s (sigma a fraction per √s)."""
    sigma_price = sigma * fair_value
    return fair_value - inventory * gamma * sigma_price * sigma_price * horizon


def optimal_spread(fair_value, sigma, gamma, kappa, horizon):
    """Avellaneda–Stoikov total spread δ = γ·σ²·τ + (2/γ)·ln(1 + γ/κ), with σ = sigma·s."""
    if not (gamma > 0.0 and kappa > 0.0):
        raise ValueError(f"gamma and kappa must be positive, got {gamma} and {kappa}")
    sigma_price = sigma * fair_value
    return gamma * sigma_price * sigma_price * horizon + (2.0 / gamma) * math.log1p(gamma / kappa)


def compute_ladder(index, mark, best_bid, best_ask, position, sigma, tick_size, size_step,
                   bid_sizes, ask_sizes, fair_value_source, mode, spread_unit,
                   half_spread, level_step, target_position, position_limit,
                   price_skew, size_skew, as_gamma, as_kappa, as_horizon, as_inventory_lot,
                   post_only):
    """The desired ladder ``(bid_prices, bid_sizes, ask_prices, ask_sizes)``, best level first.

    ``bid_sizes``/``ask_sizes`` are the nominal size per level (their lengths are the level
    counts). The module docstring gives the conventions; app/trading/quote_params.py documents
    each parameter.
    """
    if not tick_size > 0.0:
        raise ValueError(f"tick_size must be positive, got {tick_size}")
    if not size_step > 0.0:
        raise ValueError(f"size_step must be positive, got {size_step}")
    if not (position_limit > 0.0 and math.isfinite(position_limit)):
        raise ValueError(f"position_limit must be positive and finite, got {position_limit}")
    n_bid_levels = len(bid_sizes)
    n_ask_levels = len(ask_sizes)
    if n_bid_levels > MAX_LEVELS_PER_SIDE or n_ask_levels > MAX_LEVELS_PER_SIDE:
        raise ValueError(f"at most {MAX_LEVELS_PER_SIDE} levels per side, "
                         f"got {n_bid_levels} bids and {n_ask_levels} asks")

    fair = fair_value(index, mark, best_bid, best_ask, fair_value_source)
    if not (fair > 0.0 and math.isfinite(fair) and math.isfinite(position)):
        return EMPTY_LADDER
    if spread_unit == UNIT_TICKS:
        unit = tick_size
    elif spread_unit == UNIT_BPS:
        unit = fair * BPS
    else:
        raise ValueError(f"unknown spread unit {spread_unit}")

    inventory = position - target_position
    # Inventory as a fraction of the limit, for the linear skews: ±1 at (or past) full size.
    skew = inventory / position_limit
    if skew > 1.0:
        skew = 1.0
    elif skew < -1.0:
        skew = -1.0

    if mode == MODE_LINEAR:
        center = fair - price_skew * skew * unit
        half = half_spread * unit
    elif mode == MODE_AVELLANEDA_STOIKOV:
        if not as_inventory_lot > 0.0:
            raise ValueError(f"as_inventory_lot must be positive, got {as_inventory_lot}")
        center = reservation_price(fair, inventory / as_inventory_lot, sigma, as_gamma, as_horizon)
        half = 0.5 * optimal_spread(fair, sigma, as_gamma, as_kappa, as_horizon)
    else:
        raise ValueError(f"unknown mode {mode}")
    step = level_step * unit
    if not (math.isfinite(center) and math.isfinite(half) and math.isfinite(step)):
        return EMPTY_LADDER

    # Prices are counted in whole ticks until the end. Top of book first: own bid strictly
    # below own ask, then (post-only) strictly inside the other side of the book.
    top_bid = _floor_units((center - half) / tick_size)
    top_ask = _ceil_units((center + half) / tick_size)
    if top_ask <= top_bid:
        top_ask = top_bid + 1
    if post_only:
        if math.isfinite(best_ask):
            limit_ticks = _floor_units(best_ask / tick_size) - 1
            if top_bid > limit_ticks:
                top_bid = limit_ticks
        if math.isfinite(best_bid):
            limit_ticks = _ceil_units(best_bid / tick_size) + 1
            if top_ask < limit_ticks:
                top_ask = limit_ticks

    bid_prices = []
    bid_amounts = []
    room = _floor_units((position_limit - position) / size_step)  # size steps we may still buy
    factor = 1.0 - size_skew * skew  # long: smaller bids
    previous = top_bid + 1  # so level 0 lands at top_bid at most
    for k in range(n_bid_levels):
        ticks = _floor_units((center - half - k * step) / tick_size)
        if ticks > previous - 1:
            ticks = previous - 1
        previous = ticks
        if ticks <= 0:
            break  # no bids at or below zero; the levels below would be lower still
        steps = _floor_units(bid_sizes[k] * factor / size_step)
        if steps > room:
            steps = room
        if steps >= 1:
            room -= steps
            bid_prices.append(ticks * tick_size)
            bid_amounts.append(steps * size_step)

    ask_prices = []
    ask_amounts = []
    room = _floor_units((position_limit + position) / size_step)  # size steps we may still sell
    factor = 1.0 + size_skew * skew  # long: larger asks
    previous = top_ask - 1
    for k in range(n_ask_levels):
        ticks = _ceil_units((center + half + k * step) / tick_size)
        if ticks < previous + 1:
            ticks = previous + 1
        previous = ticks
        if ticks <= 0:
            continue  # only when the centre is below zero; higher levels may still be positive
        steps = _floor_units(ask_sizes[k] * factor / size_step)
        if steps > room:
            steps = room
        if steps >= 1:
            room -= steps
            ask_prices.append(ticks * tick_size)
            ask_amounts.append(steps * size_step)

    return (tuple(bid_prices), tuple(bid_amounts), tuple(ask_prices), tuple(ask_amounts))


class VolatilityEstimator:
    """Online sigma of the log fair value per √second: an EWMA of squared log returns per second.

    Each return r over dt seconds contributes r²/dt with weight 1 − 2^(−dt/half_life), so
    irregular ticks count by elapsed time. The average starts empty and is divided by the
    total weight seen (bias correction), so the first returns are not pulled towards zero.
    ``sigma`` is NaN until the first return. Samples with a non-positive or non-finite price,
    or a time not after the last sample's, are ignored.
    """

    __slots__ = ("half_life_seconds", "count", "last_price", "last_time", "_average", "_weight")

    def __init__(self, half_life_seconds):
        if not (half_life_seconds > 0.0 and math.isfinite(half_life_seconds)):
            raise ValueError(f"half_life_seconds must be positive and finite, got {half_life_seconds}")
        self.half_life_seconds = float(half_life_seconds)
        self.count = 0  # returns used so far
        self.last_price = math.nan
        self.last_time = math.nan
        self._average = 0.0
        self._weight = 0.0

    @property
    def sigma(self):
        if self._weight > 0.0:
            return math.sqrt(self._average / self._weight)
        return math.nan

    def update(self, price, time):
        """Take the fair value at ``time`` (seconds); returns the current sigma."""
        if not (price > 0.0 and math.isfinite(price) and math.isfinite(time)):
            return self.sigma
        if not self.last_price > 0.0:  # first sample: nothing to compare with yet
            self.last_price = price
            self.last_time = time
            return self.sigma
        dt = time - self.last_time
        if not dt > 0.0:
            return self.sigma
        ratio = price / self.last_price
        if not (ratio > 0.0 and math.isfinite(ratio)):  # under- or overflowed: no usable return
            return self.sigma
        log_return = math.log(ratio)
        weight = -math.expm1(-dt * LN2 / self.half_life_seconds)
        self._average += weight * (log_return * log_return / dt - self._average)
        self._weight += weight * (1.0 - self._weight)
        self.last_price = price
        self.last_time = time
        self.count += 1
        return self.sigma
