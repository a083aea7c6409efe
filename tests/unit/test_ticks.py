"""Tick rounding: the Cython module equals its pure-Python twin, and both are right."""
import math

import pytest

from app.trading import _ticks_py as twin

compiled = pytest.importorskip("app.trading._ticks", reason="Cython extension not built (no compiler at install time)")


def test_examples():
    assert twin.round_price(95000.3, 0.5, -1) == 95000.0
    assert twin.round_price(95000.3, 0.5, 1) == 95000.5
    assert twin.round_price(0.1 + 0.2, 0.1, 1) == pytest.approx(0.3)  # float noise is not a tick
    assert twin.is_aligned(0.1 + 0.2, 0.1)
    assert not twin.is_aligned(0.35, 0.1)
    assert math.isclose(twin.round_size(0.37, 0.1), 0.3)


@pytest.mark.parametrize("impl", [twin, compiled])
def test_bad_tick_is_an_error(impl):
    with pytest.raises(ValueError):
        impl.round_price(1.0, 0.0, 0)
    with pytest.raises(ValueError):
        impl.is_aligned(1.0, -1.0)
