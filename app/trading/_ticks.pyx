# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Tick and size rounding, compiled. Twin: app/trading/_ticks_py.py (same arithmetic).

Small and pure: numbers in, numbers out. The venue validates alignment with
``is_aligned``; the quote core rounds its ladder with ``round_price``/``round_size``.
"""
from libc.math cimport floor, ceil, fabs

cdef double EPSILON = 1e-9
cdef double RELATIVE = 1e-14


cdef inline double _tolerance(double units):
    return EPSILON + fabs(units) * RELATIVE


cpdef double round_price(double price, double tick, int direction) except? -1.0:
    if not tick > 0.0:
        raise ValueError(f"tick must be positive, got {tick}")
    cdef double units = price / tick
    cdef double n
    if direction < 0:
        n = floor(units + _tolerance(units))
    elif direction > 0:
        n = ceil(units - _tolerance(units))
    else:
        n = floor(units + 0.5)
    return n * tick


cpdef double round_size(double amount, double step) except? -1.0:
    if not step > 0.0:
        raise ValueError(f"step must be positive, got {step}")
    if amount <= 0.0:
        return 0.0
    cdef double units = amount / step
    return floor(units + _tolerance(units)) * step


cpdef bint is_aligned(double value, double step) except -1:
    if not step > 0.0:
        raise ValueError(f"step must be positive, got {step}")
    cdef double units = value / step
    return fabs(units - floor(units + 0.5)) <= _tolerance(units)
