"""Synthetic recorded market data for the backtest tests: rows as the SQL tables hold them, and a Parquet dataset.

A seeded random walk of the index and mark, a full-depth book around it (snapshots), public
trades mostly at the touch, and the instrument row. ``write_dataset`` writes the files the
backtest's Parquet reader takes (one ``<table>.parquet`` per table plus ``manifest.json``).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

T0 = 1_800_000_000.0
INSTRUMENT = {"instrument_name": "BTC-PERPETUAL", "underlying": "BTCUSD", "tick_size": 1.0,
              "volume_tick_size": 0.001}


def tables(seconds: float = 120.0, seed: int = 1, rate: float = 10.0, levels: int = 10) -> dict[str, list[dict]]:
    rnd = random.Random(seed)
    out: dict[str, list[dict]] = {"tickers": [], "index_prices": [], "book_updates": [], "public_trades": [],
                                  "instruments": [dict(INSTRUMENT)]}
    mid, funding_mark = 50_000.0, 0.0
    for k in range(int(seconds * rate)):
        t = T0 + k / rate
        mid += rnd.gauss(0, 2)
        bid, ask = round(mid) - 3, round(mid) + 3
        if k % 5 == 0:
            funding_mark += 0.0001 * mid * 0.5 / 86400
            out["tickers"].append({"time": t, "instrument_name": "BTC-PERPETUAL", "mark_price": mid,
                                   "index_price": mid, "best_bid_price": float(bid), "best_ask_price": float(ask),
                                   "funding_rate": 0.0001, "funding_mark": funding_mark})
            out["index_prices"].append({"time": t, "index_name": "BTCUSD", "price": mid})
        out["book_updates"].append({"time": t, "instrument_name": "BTC-PERPETUAL", "received_at": t + 0.002,
                                    "snapshot": True,
                                    "bid_prices": [float(bid - i) for i in range(levels)],
                                    "bid_amounts": [round(rnd.uniform(0.1, 2.0), 3) for _ in range(levels)],
                                    "ask_prices": [float(ask + i) for i in range(levels)],
                                    "ask_amounts": [round(rnd.uniform(0.1, 2.0), 3) for _ in range(levels)]})
        if rnd.random() < 0.3:
            direction = rnd.choice(["buy", "sell"])
            depth = rnd.choice([0, 0, 0, 5, 15, 30])
            price = ask + depth if direction == "buy" else bid - depth
            out["public_trades"].append({"time": t + 0.001, "instrument_name": "BTC-PERPETUAL", "price": float(price),
                                         "amount": rnd.choice([0.1, 0.5, 1.0]), "direction": direction})
    return out


def write_dataset(directory: Path, data: dict[str, list[dict]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    for table, rows in data.items():
        pq.write_table(pa.Table.from_pylist(rows), directory / f"{table}.parquet")
    (directory / "manifest.json").write_text(json.dumps({"tables": sorted(data), "instruments": data["instruments"]}))
    return directory
