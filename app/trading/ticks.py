"""Tick and size rounding: the compiled module, or its pure-Python twin.

The Cython build (app/trading/_ticks.pyx) is used when it was compiled at install time;
without a compiler, or with ``CRYPTICS_PURE_PYTHON=1``, the twin (app/trading/_ticks_py.py)
is used instead. ``IMPLEMENTATION`` says which one is live.
"""
from __future__ import annotations

from app.config import pure_python

if pure_python():
    from app.trading._ticks_py import is_aligned, round_price, round_size

    IMPLEMENTATION = "python"
else:
    try:
        from app.trading._ticks import is_aligned, round_price, round_size  # type: ignore[import-not-found]

        IMPLEMENTATION = "cython"
    except ImportError:  # not compiled (no compiler at install time)
        from app.trading._ticks_py import is_aligned, round_price, round_size

        IMPLEMENTATION = "python"

__all__ = ["round_price", "round_size", "is_aligned", "IMPLEMENTATION"]
