"""Tick rounding: compiled (app/trading/_ticks.pyx) vs the pure-Python twin, ns per call, one run.

    .venv/bin/python -m benchmarks.bench_ticks
"""
from __future__ import annotations

import random
import timeit

from app.trading import _ticks_py as twin

try:
    from app.trading import _ticks as compiled
except ImportError:  # pragma: no cover
    raise SystemExit("the Cython extension is not built: pip install -e .")


def ns_per_call(fn, args_list, repeat: int = 5) -> float:
    def run() -> None:
        for args in args_list:
            fn(*args)
    best = min(timeit.repeat(run, number=1, repeat=repeat))
    return best / len(args_list) * 1e9


def main() -> None:
    rng = random.Random(7)
    price_args = [(rng.uniform(1e3, 1e5), 0.5, rng.choice((-1, 0, 1))) for _ in range(200_000)]
    size_args = [(rng.uniform(0, 10), 0.001) for _ in range(200_000)]
    for name, args in (("round_price", price_args), ("round_size", size_args), ("is_aligned", size_args)):
        c = ns_per_call(getattr(compiled, name), args)
        p = ns_per_call(getattr(twin, name), args)
        print(f"{name:12} cython {c:6.1f} ns  python {p:6.1f} ns  ratio {p / c:4.1f}x")


if __name__ == "__main__":
    main()
