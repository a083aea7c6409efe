"""Backtest speed: replay speed in market events per second on one core, and a sweep's speed-up on 2 cores.

    .venv/bin/python -m benchmarks.bench_backtest [--seconds 600] [--points 4] [--repeat 3]

The recording is synthetic and seeded (``recording``): one perpetual, a book notification
every 50 ms changing one to three levels (a snapshot every 60 s; the top moves in about a
third of them), a ticker and an index price every 200 ms, a public trade in a quarter of
the book steps (mostly at the touch, now and then through a few levels). It replays through
the conservative queue model with constant latency (app/backtest/run.py ``run_one``): quote
core, risk gate, gateway planning and tracker, analytics. Part 1 times the replay alone (the
data already in memory) ``--repeat`` times in this process and reports the best, in market
events/s: with the default strategy settings (the quotes rest outside this book and never
fill), and with a half-spread of 5 ticks (inside the book: fills, and their acks, markouts
and PnL). Part 2 runs a grid of ``--points`` half-spreads from 5 ticks (each point fills) in
this process (1 worker), then on 2 worker processes (``run_grid``), and reports the speed-up. Prints
the load average before and after: other work on the machine slows both parts.
"""
from __future__ import annotations

import argparse
import os
import random
import time

from app.backtest.data import InstrumentInfo, build
from app.backtest.run import Backtest, run_grid, run_one

T0 = 1_800_000_000.0
INFO = InstrumentInfo("BTC-PERPETUAL", "BTCUSD", 1.0, 0.001)


def recording(seconds: float, seed: int = 7):
    rnd = random.Random(seed)
    mid, funding_mark = 50_000.0, 0.0
    tickers, indexes, books, trades = [], [], [], []
    bids = {50_000.0 - 3 - i: 1.0 for i in range(20)}
    asks = {50_000.0 + 3 + i: 1.0 for i in range(20)}
    for k in range(int(seconds * 20)):
        t = T0 + k * 0.05
        mid += rnd.gauss(0, 0.7)
        if k % 4 == 0:
            funding_mark += 0.0001 * mid * 0.2 / 86400
            tickers.append({"time": t, "mark_price": mid, "index_price": mid, "best_bid_price": max(bids),
                            "best_ask_price": min(asks), "funding_rate": 0.0001, "funding_mark": funding_mark})
            indexes.append({"time": t, "index_name": "BTCUSD", "price": mid})
        centre = round(mid)
        if k % 1200 == 0:
            bids = {centre - 3 - i: round(rnd.uniform(0.1, 2), 3) for i in range(20)}
            asks = {centre + 3 + i: round(rnd.uniform(0.1, 2), 3) for i in range(20)}
            books.append({"time": t, "snapshot": True, "bid_prices": list(bids), "bid_amounts": list(bids.values()),
                          "ask_prices": list(asks), "ask_amounts": list(asks.values())})
        else:
            changes = {"bid": [], "ask": []}
            for _ in range(rnd.randint(1, 3)):
                side = rnd.choice(["bid", "ask"])
                if side == "bid":
                    price = float(centre - 3 - rnd.randint(0, 19))
                else:
                    price = float(centre + 3 + rnd.randint(0, 19))
                changes[side].append((price, round(rnd.uniform(0, 2), 3)))
            # Keep the book uncrossed: levels on the wrong side of the centre leave.
            for price in [p for p in bids if p >= centre]:
                changes["bid"].append((price, 0.0))
            for price in [p for p in asks if p <= centre]:
                changes["ask"].append((price, 0.0))
            for side, book in (("bid", bids), ("ask", asks)):
                for price, amount in changes[side]:
                    if amount > 0:
                        book[price] = amount
                    else:
                        book.pop(price, None)
            books.append({"time": t, "snapshot": False,
                          "bid_prices": [p for p, _ in changes["bid"]], "bid_amounts": [a for _, a in changes["bid"]],
                          "ask_prices": [p for p, _ in changes["ask"]], "ask_amounts": [a for _, a in changes["ask"]]})
        if rnd.random() < 0.25 and bids and asks:
            direction = rnd.choice(["buy", "sell"])
            through = rnd.choice([0, 0, 0, 0, 1, 3])
            price = (min(asks) + through) if direction == "buy" else (max(bids) - through)
            trades.append({"time": t + 0.001, "price": price, "amount": rnd.choice([0.05, 0.2, 0.5]),
                           "direction": direction})
    return build(INFO, T0, T0 + seconds, tickers, indexes, books, trades, book_depth="full", source="synthetic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the synthetic recording")
    parser.add_argument("--points", type=int, default=4, help="grid points of the sweep")
    parser.add_argument("--repeat", type=int, default=3, help="replays timed in part 1 (best reported)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    data = recording(args.seconds)
    events = len(data.events)
    print(f"recording: {args.seconds:g} s, {events} market events {data.counts()}")
    for label, overrides in (("default settings", {}), ("half_spread 5 ticks, with fills", {"half_spread": 5.0})):
        backtest = Backtest().with_overrides(overrides)
        best = None
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = run_one(data, backtest)
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
        print(f"part 1, {label}: one replay {best:.3f} s: {events / best:,.0f} market events/s on one core "
              f"({len(result.fills)} fills, {result.counters['decisions']} decisions computed, "
              f"{result.counters['skipped_decisions']} skipped)")
    # Points of about the same cost (all quote inside the book and fill), so that two workers can share them evenly.
    points = [{"half_spread": 5.0 + i} for i in range(args.points)]
    timings = {}
    for workers in (1, 2):
        started = time.perf_counter()
        rows = run_grid(data, Backtest(), points, workers=workers)
        timings[workers] = time.perf_counter() - started
        print(f"part 2: {len(points)} grid points on {workers} process(es): {timings[workers]:.2f} s "
              f"(fills per point {[r['fills'] for r in rows]})")
    print(f"part 2: speed-up on 2 cores against 1: {timings[1] / timings[2]:.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
