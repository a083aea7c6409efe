"""What idle time costs on this machine: the same Python work back to back, and after a pause.

    .venv/bin/python -m benchmarks.bench_cold [--runs 300]

The tick → order path (bench_quoting) runs once per market step, ~50 ms apart at 20 steps/s.
This measures one decision's worth of the project's own code, without any I/O: parse a
ticker notification (app.exchange.messages.parse), compute the 2×2 ladder (app.trading.quote), and
build the amend request (app.exchange.messages.request). First back to back, then after
each of several pauses: sleeping (the core may go idle) and busy-waiting (the core stays
busy with other Python). A machine whose caches survive a pause shows the same time after
it; where they do not, the work is slower by the ratio printed, and no code change to the
path removes that.
"""
from __future__ import annotations

import argparse
import math
import time
from time import perf_counter

import orjson

from app.exchange import messages
from app.trading import quote as quote_core
from app.trading.quote_params import QuoteParams
from app.trading.risk import RiskLimits

TICKER = orjson.dumps({"channel_name": "ticker.BTC-PERPETUAL.raw", "notification": {
    "best_bid_price": 99_990.0, "best_bid_amount": 0.4, "best_ask_price": 100_010.0, "best_ask_amount": 0.2,
    "last_price": 100_001.0, "mark_price": 100_000.3, "mark_timestamp": 1_764_633_600.123, "iv": 0.0,
    "delta": 1.0, "volume_24h": 1234.5, "value_24h": 123_450_000.0, "low_price_24h": 98_000.0,
    "high_price_24h": 101_000.0, "change_24h": 0.01, "index": 100_000.4, "forward": 100_000.4,
    "funding_mark": 0.0001, "funding_rate": 0.0001, "collar_low": 95_000.0, "collar_high": 105_000.0,
    "realised_funding_24h": 0.0003, "average_funding_rate_24h": 0.0001, "open_interest": 4321.0}})


def decision(quoter: quote_core.Quoter) -> bytes:
    """One decision's worth of the hot path's code, no I/O."""
    payload = messages.parse(TICKER).payload
    bid_prices, bid_sizes, _ask_prices, _ask_sizes = quoter.ladder(
        payload["index"], payload["mark_price"], payload["best_bid_price"], payload["best_ask_price"], 0.0, math.nan)
    return messages.request("private/amend", {"client_order_id": 7, "price": bid_prices[0], "amount": bid_sizes[0]}, 42)


def measure(quoter: quote_core.Quoter, runs: int, pause_s: float, busy: bool) -> list[float]:
    samples = []
    for _ in range(runs):
        if pause_s:
            if busy:
                end = perf_counter() + pause_s
                while perf_counter() < end:
                    pass
            else:
                time.sleep(pause_s)
        start = perf_counter()
        decision(quoter)
        samples.append(perf_counter() - start)
    return sorted(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="decisions per case (default 300)")
    args = parser.parse_args()
    # As the quote agent holds one per instrument, with the risk gate's position limit.
    quoter = quote_core.Quoter(QuoteParams(), 1.0, 0.001, RiskLimits().max_position)
    measure(quoter, 1000, 0.0, False)  # warm up: imports, first-call costs
    print(f"one decision's code (parse ticker, 2x2 ladder, build amend), µs over {args.runs} runs; "
          f"core: {quote_core.IMPLEMENTATION}")
    print(f"  {'case':<34} {'p50':>8} {'p90':>8}  {'p50 / back to back':>18}")
    base = None
    for label, pause, busy in (("back to back", 0.0, False), ("after 1 ms asleep", 0.001, False),
                               ("after 10 ms asleep", 0.010, False), ("after 50 ms asleep", 0.050, False),
                               ("after 10 ms busy-waiting", 0.010, True), ("after 50 ms busy-waiting", 0.050, True)):
        runs = args.runs if pause <= 0.01 else max(20, args.runs // 3)
        s = measure(quoter, runs, pause, busy)
        p50, p90 = s[len(s) // 2] * 1e6, s[int(len(s) * 0.9)] * 1e6
        base = base or p50
        print(f"  {label:<34} {p50:>8.1f} {p90:>8.1f}  {p50 / base:>17.1f}x")


if __name__ == "__main__":
    main()
