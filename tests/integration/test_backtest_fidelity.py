"""The backtest's fidelity check as a user runs it: a live session of the quoting worker on the simulated
venue recorded into PostgreSQL, then `cryptics backtest --orders-from-recording` on its range
(app/backtest/fidelity.py, docs/operations.md#backtests). The figures are the benchmark's
(benchmarks/bench_fidelity.py); here the report's structure and its own consistency.
"""
from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from .test_backtest import run


async def test_a_recorded_session_s_orders_replay_and_their_fills_are_compared(analytics_stack, database,
                                                                                tmp_path: Path):
    analytics_stack.spawn("a")
    await analytics_stack.poll(lambda: analytics_stack.fills_per_instrument(3), "fills on both instruments", 120)
    await analytics_stack.halt_and_settle()
    analytics_stack.stop_all()
    connection = await asyncpg.connect(database)
    try:
        start, end = await connection.fetchrow(
            "SELECT min(time), max(time) FROM tickers WHERE instrument_name = 'BTC-PERPETUAL'")
        db_fills = await connection.fetch(
            "SELECT order_id, trade_id, amount FROM fills WHERE instrument_name = 'BTC-PERPETUAL' AND time >= $1 "
            "AND time < $2", start, end)
        inserted = {r[0] for r in await connection.fetch(
            "SELECT order_id FROM order_acks WHERE instrument_name = 'BTC-PERPETUAL' AND change_reason = 'insert'")}
    finally:
        await connection.close()
    out = tmp_path / "fidelity"
    done = run("--orders-from-recording", "--from", start.isoformat(), "--to", end.isoformat(),
               "--instrument", "BTC-PERPETUAL", "--out", str(out), env={"CRYPTICS_DATABASE_URL": database})
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "fidelity.json").read_text())
    live = report["live_fills"]
    # The live fills are the session's own, as the fills table holds them (orders inserted in the range).
    assert live and {(f["order_id"], f["trade_id"]) for f in live} <= {(r["order_id"], r["trade_id"]) for r in db_fills}
    assert report["requests"]["insert"] > 0
    assert report["market"]["own_trades_found"] == len(db_fills)  # each live fill is one public trade
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["queue_model", "live", "replayed", "reproduced"]
    assert [line.split()[0] for line in lines[1:]] == ["conservative", "probabilistic"] == list(report["models"])
    for name, model in report["models"].items():
        replayed, matches = model["fills"], model["matches"]
        assert model["live_fills"] == len(live) and model["replayed_fills"] == len(replayed)
        assert len(matches) == len(live)
        # Recomputed here from the report's own fill lists: each match is a replayed fill of the same
        # order within the tolerance, used once; reproduced + missed = live; reproduced + extra = replayed.
        paired = [(live[i], replayed[j]) for i, j in enumerate(matches) if j is not None]
        assert len({j for j in matches if j is not None}) == len(paired)
        for f, r in paired:
            assert f["order_id"] == r["order_id"] and abs(r["time"] - f["time"]) <= report["tolerance_s"]
        assert model["reproduced"] == len(paired) and model["missed"] == len(live) - len(paired)
        assert model["reproduced"] + model["missed"] == model["live_fills"]
        assert model["reproduced"] + model["extra"] == model["replayed_fills"]
        assert model["reproduced_share"] == pytest.approx(len(paired) / len(live))
        assert model["reproduced_amount"] == pytest.approx(sum(min(f["amount"], r["amount"]) for f, r in paired))
        assert model["live_amount"] == pytest.approx(sum(f["amount"] for f in live))
        if paired:
            assert model["mean_offset_s"] == pytest.approx(sum(r["time"] - f["time"] for f, r in paired) / len(paired))
        # Every replayed fill is of an order the session sent.
        assert {r["order_id"] for r in replayed} <= inserted
    # Bad input: a range with no orders of ours is one line and exit code 2.
    done = run("--orders-from-recording", "--dataset", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
