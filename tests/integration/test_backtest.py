"""`cryptics backtest` as a user runs it: a child process, real files, a real database.

- a Parquet dataset: the report files, one grid, and each bad input's one-line error with exit code 2;
- a short live run of the quoting worker on the simulated venue, recorded into PostgreSQL by the
  persistence, backtested from the database end to end (docs/architecture.md#d15-backtests-run-the-live-strategy-code).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.backtest_data import tables, write_dataset

from .conftest import ROOT, cryptics


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTICS_")}
    environ.update(env or {})
    return subprocess.run(cryptics("backtest", *args), capture_output=True, text=True, cwd=ROOT, env=environ,
                          timeout=timeout)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "dataset", tables(seconds=60.0))


def check_report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.html").is_file() and (out / "plotly.min.js").is_file()
    summary, fills = report["summary"], report["fills"]
    assert summary["fills"] == len(fills)
    assert summary["volume"] == pytest.approx(sum(f["amount"] for f in fills))
    assert report["pnl"]["trades"] == len(fills)
    return report


def test_a_dataset_backtest_writes_the_report(dataset: Path, tmp_path: Path):
    out = tmp_path / "report"
    done = run("--dataset", str(dataset), "--out", str(out), "--queue-model", "probabilistic",
               "--latency", "constant:2,8", env={"CRYPTICS_QUOTE_HALF_SPREAD": "5"})
    assert done.returncode == 0, done.stderr
    report = check_report(out)
    assert report["summary"]["fills"] > 0
    assert json.loads(done.stdout.splitlines()[-1]) == report["summary"]
    assert report["meta"]["parameters"]["quote"]["half_spread"] == 5.0  # CRYPTICS_QUOTE_* as live
    assert report["meta"]["queue_model"] == "probabilistic"


def test_a_grid_prints_one_summary_table(dataset: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    done = run("--dataset", str(dataset), "--out", str(out), "--workers", "2",
               "--grid", "half_spread=5,50", "size_skew=0,0.5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["half_spread", "size_skew", "net_pnl"] and len(lines) == 5
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["parameters"] for r in rows] == [
        {"half_spread": 5.0, "size_skew": 0.0}, {"half_spread": 5.0, "size_skew": 0.5},
        {"half_spread": 50.0, "size_skew": 0.0}, {"half_spread": 50.0, "size_skew": 0.5}]


@pytest.mark.parametrize("args, message", [
    (["--grid", "half_sprad=1,2"], "unknown grid parameter 'half_sprad'"),
    (["--grid", "size_skew=0,2"], "grid point {'size_skew': 2.0}: size_skew must be at most 1"),
    (["--latency", "fast"], "--latency must be constant"),
    (["--instrument", "ETH-PERPETUAL"], "unknown instrument 'ETH-PERPETUAL'"),
    (["--from", "2031-01-01T00:00:00", "--to", "2031-01-01T01:00:00"], "no market data for BTC-PERPETUAL"),
])
def test_bad_input_is_one_line_and_exit_code_2(dataset: Path, tmp_path: Path, args, message):
    done = run("--dataset", str(dataset), "--out", str(tmp_path / "x"), *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr
    assert not (tmp_path / "x").exists()


def test_a_parquet_file_of_the_wrong_shape(tmp_path: Path):
    data = tables(seconds=5.0)
    for row in data["tickers"]:
        del row["mark_price"]
    write_dataset(tmp_path / "bad", data)
    done = run("--dataset", str(tmp_path / "bad"), "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    assert "tickers.parquet: wrong shape: missing column(s) mark_price" in done.stderr
    assert done.stderr.strip().count("\n") == 0


async def test_a_recorded_live_run_backtests_from_the_database(analytics_stack, database, tmp_path: Path):
    analytics_stack.spawn("a")
    await analytics_stack.poll(lambda: analytics_stack.fills_per_instrument(2), "fills on both instruments", 180)
    await analytics_stack.halt_and_settle()
    analytics_stack.stop_all()
    connection = await asyncpg.connect(database)
    try:
        start, end, tickers = await connection.fetchrow(
            "SELECT min(time), max(time), count(*) FROM tickers WHERE instrument_name = 'BTC-PERPETUAL'")
        has_book_updates = await connection.fetchval("SELECT to_regclass('book_updates') IS NOT NULL")
    finally:
        await connection.close()
    assert tickers > 10
    out = tmp_path / "report"
    strategy = {k: v for k, v in analytics_stack.env.items() if k.startswith(("CRYPTICS_QUOTE_", "CRYPTICS_RISK_"))}
    done = run("--from", start.isoformat(), "--to", end.isoformat(), "--instrument", "BTC-PERPETUAL",
               "--out", str(out), env={"CRYPTICS_DATABASE_URL": database, **strategy})
    assert done.returncode == 0, done.stderr
    report = check_report(out)
    assert report["meta"]["events"]["ticker"] == tickers - 1 or report["meta"]["events"]["ticker"] == tickers
    assert report["meta"]["events"]["book"] > 0 and report["meta"]["events"]["index"] > 0
    assert report["counters"]["gateway"]["inserts"] > 0
    if has_book_updates:  # migration 0009: the full-depth book is recorded and replayed
        assert report["book_depth"] == "full" and "top of book only" not in done.stderr
    else:
        assert "book_tops, top of book only" in done.stderr and report["book_depth"] == "top"
    # The same range exported as a dataset (`cryptics record export`) replays to the same report.
    exported = tmp_path / "dataset"
    record = subprocess.run(cryptics("record", "export", "--from", start.isoformat(), "--to", end.isoformat(),
                                     "--instrument", "BTC-PERPETUAL", "--out", str(exported)),
                            capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "CRYPTICS_DATABASE_URL": database})
    assert record.returncode == 0, record.stderr
    done = run("--dataset", str(exported), "--from", start.isoformat(), "--to", end.isoformat(),
               "--out", str(tmp_path / "from-dataset"), env=strategy)
    assert done.returncode == 0, done.stderr
    from_dataset = check_report(tmp_path / "from-dataset")
    assert from_dataset["summary"] == report["summary"] and from_dataset["fills"] == report["fills"]
    # Bad input against the database: one line, exit code 2.
    for args, message in ((["--from", "2031-01-01T00:00:00", "--to", "2031-01-01T01:00:00",
                            "--instrument", "BTC-PERPETUAL"], "no market data for BTC-PERPETUAL"),
                          (["--from", start.isoformat(), "--to", end.isoformat(), "--instrument", "DOGE-PERPETUAL"],
                           "unknown instrument 'DOGE-PERPETUAL' in the database")):
        done = run(*args, "--out", str(tmp_path / "bad"), env={"CRYPTICS_DATABASE_URL": database})
        assert done.returncode == 2 and message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    # The recorded latencies drive the other latency model.
    done = run("--from", start.isoformat(), "--to", end.isoformat(), "--instrument", "BTC-PERPETUAL",
               "--latency", "recorded", "--out", str(tmp_path / "recorded"),
               env={"CRYPTICS_DATABASE_URL": database, **strategy})
    assert done.returncode == 0, done.stderr
    assert check_report(tmp_path / "recorded")["meta"]["latency"].startswith("recorded (")


def test_a_grid_on_a_dask_local_cluster_equals_the_local_one():
    distributed = pytest.importorskip("distributed", reason="the optional extra dask (setup.cfg)")
    from app.backtest.data import InstrumentInfo, build
    from app.backtest.run import Backtest, parse_grid, run_grid, run_grid_dask
    from tests.backtest_data import T0

    t = tables(seconds=20.0)
    data = build(InstrumentInfo("BTC-PERPETUAL", "BTCUSD", 1.0, 0.001), T0, T0 + 20, t["tickers"], t["index_prices"],
                 t["book_updates"], t["public_trades"], book_depth="full", source="test")
    points = parse_grid(["half_spread=5,40"])
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        on_dask = run_grid_dask(data, Backtest(), points, client)
    assert on_dask == run_grid(data, Backtest(), points, workers=1)
    assert [row["parameters"] for row in on_dask] == points
