"""Which implementation of the compiled modules is live: the Cython build by default, the
pure-Python twins with CRYPTICS_PURE_PYTHON=1. Each case imports the module in a fresh
interpreter, since the choice is made once, at import."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

try:
    from app.trading import _quote as compiled
except ImportError:  # no compiler at install time
    compiled = None

needs_compiled = pytest.mark.skipif(compiled is None, reason="Cython extension not built (no compiler at install time)")


def _implementation(module: str, pure_python):
    env = {k: v for k, v in os.environ.items() if k != "CRYPTICS_PURE_PYTHON"}
    if pure_python is not None:
        env["CRYPTICS_PURE_PYTHON"] = pure_python
    probe = {"quote": "from app.trading import quote; print(quote.IMPLEMENTATION, quote.compute_ladder.__module__)",
             "ticks": "from app.trading import ticks; print(ticks.IMPLEMENTATION, ticks.round_price.__module__)"}[module]
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.split()


def test_pure_python_switch_loads_the_twin():
    assert _implementation("quote", "1") == ["python", "app.trading._quote_py"]


@needs_compiled
def test_compiled_core_is_the_default():
    assert _implementation("quote", None) == ["cython", "app.trading._quote"]


@needs_compiled
def test_tick_rounding_follows_the_same_switch():
    assert _implementation("ticks", "1") == ["python", "app.trading._ticks_py"]
    assert _implementation("ticks", None) == ["cython", "app.trading._ticks"]
