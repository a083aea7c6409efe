"""Quote core: compiled (app/trading/_quote.pyx) vs the pure-Python twin, µs per ladder, one run.

    .venv/bin/python -m benchmarks.bench_quote

Each call prices a BTC-like ladder (tick 1, size step 0.001) from a moving index, a book
around it and a drifting position, in linear mode and in Avellaneda–Stoikov mode, for
2×2 and 2×5 levels. "Quoter" is the QuoteParams wrapper of app/trading/quote.py (binds the
parameters once; one Python method call and an argument splice) on top of the live core.
"""
from __future__ import annotations

import random
import timeit

from app.trading import _quote_py as twin
from app.trading.quote import IMPLEMENTATION, Quoter, core_arguments
from app.trading.quote_params import QuoteParams

try:
    from app.trading import _quote as compiled
except ImportError:  # pragma: no cover
    raise SystemExit("the Cython extension is not built: pip install -e .")


def us_per_call(candidates: dict, repeat: int = 15) -> dict:
    """Best-of-``repeat`` µs per call for each ``name: (fn, args_list)``, rounds interleaved.

    Interleaving and keeping the minimum make the ratios robust on a shared machine:
    a burst of someone else's load hits every candidate alike, and the best round is
    the one least disturbed.
    """
    best = {name: float("inf") for name in candidates}
    for _ in range(repeat):
        for name, (fn, args_list) in candidates.items():
            def run() -> None:
                for args in args_list:
                    fn(*args)
            best[name] = min(best[name], timeit.timeit(run, number=1) / len(args_list) * 1e6)
    return best


def market_inputs(count: int, seed: int = 7) -> list:
    rng = random.Random(seed)
    rows = []
    index = 100_000.0
    for _ in range(count):
        index += rng.gauss(0, 5)
        mid = round(index + rng.gauss(0, 3))
        rows.append((index, index + 2.0, mid - 1.0, mid + 1.0, rng.uniform(-0.5, 0.5), 5e-5))
    return rows


def main() -> None:
    rows = market_inputs(20_000)
    for mode in ("linear", "avellaneda_stoikov"):
        for levels in (2, 5):
            sizes = tuple(0.1 * (k + 1) for k in range(levels))
            params = QuoteParams(mode=mode, bid_sizes=sizes, ask_sizes=sizes)
            bound = core_arguments(params, 1.0, 0.001, 10.0)  # position limit 10
            args = [row + bound for row in rows]
            quoter = Quoter(params, 1.0, 0.001, 10.0)
            us = us_per_call({"cython": (compiled.compute_ladder, args), "python": (twin.compute_ladder, args),
                              "quoter": (quoter.ladder, rows)})
            print(f"{mode:18} 2x{levels}  cython {us['cython']:5.2f} us  python {us['python']:5.2f} us"
                  f"  ratio {us['python'] / us['cython']:4.1f}x  | Quoter ({IMPLEMENTATION}) {us['quoter']:5.2f} us")


if __name__ == "__main__":
    main()
