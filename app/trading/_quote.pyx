# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The quote core, compiled. Twin: app/trading/_quote_py.py (same algorithm, line for line).

Numbers in, numbers out: the desired ladder ``(bid_prices, bid_sizes, ask_prices,
ask_sizes)`` from fair-value inputs, position, volatility and parameters. The twin's
module docstring states the conventions (NaN for missing data, rounding directions,
post-only limits, position limit in whole size steps, units of sigma); they hold here
unchanged. Levels are computed into C arrays on the stack and turned into tuples once.
"""
from cpython.float cimport PyFloat_FromDouble
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.math cimport ceil, expm1, fabs, floor, isfinite, log, log1p, sqrt, NAN

cdef enum:
    _MAX_LEVELS = 64

MAX_LEVELS_PER_SIDE = _MAX_LEVELS

FAIR_VALUE_INDEX = 0
FAIR_VALUE_MARK = 1
FAIR_VALUE_MID = 2
MODE_LINEAR = 0
MODE_AVELLANEDA_STOIKOV = 1
UNIT_TICKS = 0
UNIT_BPS = 1

# Same values as app/trading/_ticks.pyx and app/trading/_quote_py.py (the twin imports them from _ticks_py).
cdef double EPSILON = 1e-9
cdef double RELATIVE = 1e-14
cdef double BPS = 1e-4
cdef double LN2 = 0.6931471805599453

cdef tuple _EMPTY = ((), (), (), ())
EMPTY_LADDER = _EMPTY


cdef inline double _floor_units(double units) noexcept:
    return floor(units + (EPSILON + fabs(units) * RELATIVE))


cdef inline double _ceil_units(double units) noexcept:
    return ceil(units - (EPSILON + fabs(units) * RELATIVE))


cdef tuple _tuple_of(double* values, Py_ssize_t n):
    cdef tuple result = PyTuple_New(n)
    cdef object item
    cdef Py_ssize_t i
    for i in range(n):
        item = PyFloat_FromDouble(values[i])
        Py_INCREF(item)  # PyTuple_SET_ITEM steals the reference that Cython releases for item
        PyTuple_SET_ITEM(result, i, item)
    return result


cpdef double fair_value(double index, double mark, double best_bid, double best_ask,
                        int source) except? -1.0:
    if source == 0:
        return index
    elif source == 1:
        return mark
    elif source == 2:
        return 0.5 * (best_bid + best_ask)
    raise ValueError(f"unknown fair value source {source}")


cpdef double reservation_price(double fair_value, double inventory, double sigma, double gamma,
                               double horizon) noexcept:
    cdef double sigma_price = sigma * fair_value
    return fair_value - inventory * gamma * sigma_price * sigma_price * horizon


cpdef double optimal_spread(double fair_value, double sigma, double gamma, double kappa,
                            double horizon) except? -1.0:
    if not (gamma > 0.0 and kappa > 0.0):
        raise ValueError(f"gamma and kappa must be positive, got {gamma} and {kappa}")
    cdef double sigma_price = sigma * fair_value
    return gamma * sigma_price * sigma_price * horizon + (2.0 / gamma) * log1p(gamma / kappa)


cpdef tuple compute_ladder(double index, double mark, double best_bid, double best_ask,
                           double position, double sigma, double tick_size, double size_step,
                           tuple bid_sizes, tuple ask_sizes, int fair_value_source, int mode,
                           int spread_unit, double half_spread, double level_step,
                           double target_position, double position_limit,
                           double price_skew, double size_skew, double as_gamma, double as_kappa,
                           double as_horizon, double as_inventory_lot, bint post_only):
    cdef double bid_prices[_MAX_LEVELS]
    cdef double bid_amounts[_MAX_LEVELS]
    cdef double ask_prices[_MAX_LEVELS]
    cdef double ask_amounts[_MAX_LEVELS]
    cdef Py_ssize_t n_bids = 0, n_asks = 0, k, n_bid_levels, n_ask_levels
    cdef double fair, unit, inventory, skew, center, half, step
    cdef double top_bid, top_ask, limit_ticks, room, factor, previous, ticks, steps

    if not tick_size > 0.0:
        raise ValueError(f"tick_size must be positive, got {tick_size}")
    if not size_step > 0.0:
        raise ValueError(f"size_step must be positive, got {size_step}")
    if not (position_limit > 0.0 and isfinite(position_limit)):
        raise ValueError(f"position_limit must be positive and finite, got {position_limit}")
    if bid_sizes is None or ask_sizes is None:
        raise TypeError("bid_sizes and ask_sizes must be tuples")
    n_bid_levels = len(bid_sizes)
    n_ask_levels = len(ask_sizes)
    if n_bid_levels > _MAX_LEVELS or n_ask_levels > _MAX_LEVELS:
        raise ValueError(f"at most {_MAX_LEVELS} levels per side, "
                         f"got {n_bid_levels} bids and {n_ask_levels} asks")

    fair = fair_value(index, mark, best_bid, best_ask, fair_value_source)
    if not (fair > 0.0 and isfinite(fair) and isfinite(position)):
        return _EMPTY
    if spread_unit == 0:
        unit = tick_size
    elif spread_unit == 1:
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

    if mode == 0:
        center = fair - price_skew * skew * unit
        half = half_spread * unit
    elif mode == 1:
        if not as_inventory_lot > 0.0:
            raise ValueError(f"as_inventory_lot must be positive, got {as_inventory_lot}")
        center = reservation_price(fair, inventory / as_inventory_lot, sigma, as_gamma, as_horizon)
        half = 0.5 * optimal_spread(fair, sigma, as_gamma, as_kappa, as_horizon)
    else:
        raise ValueError(f"unknown mode {mode}")
    step = level_step * unit
    if not (isfinite(center) and isfinite(half) and isfinite(step)):
        return _EMPTY

    # Prices are counted in whole ticks until the end. Top of book first: own bid strictly
    # below own ask, then (post-only) strictly inside the other side of the book.
    top_bid = _floor_units((center - half) / tick_size)
    top_ask = _ceil_units((center + half) / tick_size)
    if top_ask <= top_bid:
        top_ask = top_bid + 1
    if post_only:
        if isfinite(best_ask):
            limit_ticks = _floor_units(best_ask / tick_size) - 1
            if top_bid > limit_ticks:
                top_bid = limit_ticks
        if isfinite(best_bid):
            limit_ticks = _ceil_units(best_bid / tick_size) + 1
            if top_ask < limit_ticks:
                top_ask = limit_ticks

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
        steps = _floor_units(<double>bid_sizes[k] * factor / size_step)
        if steps > room:
            steps = room
        if steps >= 1:
            room -= steps
            bid_prices[n_bids] = ticks * tick_size
            bid_amounts[n_bids] = steps * size_step
            n_bids += 1

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
        steps = _floor_units(<double>ask_sizes[k] * factor / size_step)
        if steps > room:
            steps = room
        if steps >= 1:
            room -= steps
            ask_prices[n_asks] = ticks * tick_size
            ask_amounts[n_asks] = steps * size_step
            n_asks += 1

    return (_tuple_of(bid_prices, n_bids), _tuple_of(bid_amounts, n_bids),
            _tuple_of(ask_prices, n_asks), _tuple_of(ask_amounts, n_asks))


cdef class VolatilityEstimator:
    """Online sigma of the log fair value per √second; see the twin for the method."""

    cdef readonly double half_life_seconds
    cdef readonly long count
    cdef readonly double last_price
    cdef readonly double last_time
    cdef double _average
    cdef double _weight

    def __init__(self, double half_life_seconds):
        if not (half_life_seconds > 0.0 and isfinite(half_life_seconds)):
            raise ValueError(f"half_life_seconds must be positive and finite, got {half_life_seconds}")
        self.half_life_seconds = half_life_seconds
        self.count = 0
        self.last_price = NAN
        self.last_time = NAN
        self._average = 0.0
        self._weight = 0.0

    @property
    def sigma(self):
        return self._sigma()

    cdef inline double _sigma(self) noexcept:
        if self._weight > 0.0:
            return sqrt(self._average / self._weight)
        return NAN

    cpdef double update(self, double price, double time):
        cdef double dt, ratio, log_return, weight
        if not (price > 0.0 and isfinite(price) and isfinite(time)):
            return self._sigma()
        if not self.last_price > 0.0:
            self.last_price = price
            self.last_time = time
            return self._sigma()
        dt = time - self.last_time
        if not dt > 0.0:
            return self._sigma()
        ratio = price / self.last_price
        if not (ratio > 0.0 and isfinite(ratio)):  # under- or overflowed: no usable return
            return self._sigma()
        log_return = log(ratio)
        weight = -expm1(-dt * LN2 / self.half_life_seconds)
        self._average += weight * (log_return * log_return / dt - self._average)
        self._weight += weight * (1.0 - self._weight)
        self.last_price = price
        self.last_time = time
        self.count += 1
        return self._sigma()
