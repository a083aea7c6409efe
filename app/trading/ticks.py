"""Tick and size rounding: the compiled module, or its pure-Python twin.

The Cython build (app/trading/_ticks.pyx) is used when it was compiled at install time;
without a compiler, or with ``CRYPTICS_PURE_PYTHON=1``, the twin (app/trading/_ticks_py.py)
is used instead. ``IMPLEMENTATION`` says which one is live.
"""
from __future__ import annotations

from app.config import compiled_or_twin

_core, IMPLEMENTATION = compiled_or_twin("app.trading._ticks", "app.trading._ticks_py")
round_price = _core.round_price
round_size = _core.round_size
is_aligned = _core.is_aligned

__all__ = ["round_price", "round_size", "is_aligned", "IMPLEMENTATION"]
