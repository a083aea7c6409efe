"""Tick and size rounding (app/trading/ticks.py) over random inputs: the Cython module equals its
twin, a rounded price is on the grid and on the right side, a rounded size never grows.
Examples: tests/unit/test_ticks.py.
"""
from hypothesis import given, settings
from hypothesis import strategies as st

from app.trading import _ticks_py as twin
from tests.unit.test_ticks import compiled

directions = st.sampled_from([-1, 0, 1])


prices = st.floats(min_value=-1e7, max_value=1e7, allow_nan=False, allow_infinity=False)


ticks = st.sampled_from([0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0])


@settings(max_examples=2000)
@given(prices, ticks, directions)
def test_round_price_twin_equal(price, tick, direction):
    assert compiled.round_price(price, tick, direction) == twin.round_price(price, tick, direction)


@settings(max_examples=2000)
@given(prices, ticks)
def test_round_size_and_alignment_twin_equal(amount, step):
    assert compiled.round_size(amount, step) == twin.round_size(amount, step)
    assert compiled.is_aligned(amount, step) == twin.is_aligned(amount, step)


@given(st.floats(min_value=1, max_value=1e6), ticks, directions)
def test_rounded_price_is_on_the_grid_and_on_the_right_side(price, tick, direction):
    rounded = twin.round_price(price, tick, direction)
    assert twin.is_aligned(rounded, tick)
    assert abs(rounded - price) <= tick * (1 + 1e-6)
    if direction < 0:
        assert rounded <= price + tick * 1e-6
    if direction > 0:
        assert rounded >= price - tick * 1e-6


@given(st.floats(min_value=0, max_value=1e4), st.sampled_from([0.001, 0.01, 0.1, 1.0]))
def test_round_size_never_adds(amount, step):
    rounded = twin.round_size(amount, step)
    assert rounded <= amount + step * 1e-6
    assert amount - rounded < step * (1 + 1e-6)
