"""The backtest's fidelity against live: a live session recorded, its own orders replayed, fills compared.

    .venv/bin/python -m benchmarks.bench_fidelity [--seconds 180] [--instrument BTC-PERPETUAL] [--half-spread 2]

Starts embedded PostgreSQL, the broker and the schema registry, the simulated venue in this
process at its default market rates (app/venue/config.py: a step every 100 ms, one noise taker
and 0.2 informed takers a second per instrument) and one `cryptics worker` that quotes two
perpetuals and persists everything (the stack of tests/integration/analytics_stack.py):
``--half-spread`` bps from the fair value, 2 by default (inside the house's 3 bps: our quotes
are mostly alone at their price), 4 or more to join the house's levels behind its orders
(queue position then decides). After ``--seconds`` it halts quoting, lets the
persistence settle, and runs the fidelity check (app/backtest/fidelity.py) on the recorded
range of ``--instrument``: for each queue model, and with our own fills kept as taker flow
(the check's default) and removed. Prints the tables and, for the default, what the missed
live fills were. docs/benchmarks.md keeps the results.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def record_session(root: Path, pg, seconds: float, half_spread: float) -> str:
    """A live session on the simulated venue, recorded into ``pg``; returns the database URL."""
    from app.stack.broker import EmbeddedBroker
    from app.stack.process import free_port, spawn, wait_until
    from app.venue import Venue, VenueConfig
    from tests.integration.analytics_stack import Stack
    from tests.integration.observers import get_json

    broker = EmbeddedBroker(root / "logs" / "broker")
    await broker.start()
    port = free_port()
    registry_url = f"http://127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    registry = None

    async def registry_ready() -> bool:
        return await loop.run_in_executor(None, get_json, int(port), "/subjects") is not None

    try:
        registry = spawn("registry", [sys.executable, "-m", "app.cli", "registry", "--port", str(port)],
                         log_path=root / "logs" / "registry.log", cwd=ROOT,
                         env={**os.environ, "CRYPTICS_DATABASE_URL": pg.dsn()})
        await wait_until(registry_ready, what="registry", timeout=60, child=registry, interval=0.2)
        stack = Stack(broker, registry_url, pg.dsn(), root)
        stack.env["CRYPTICS_QUOTE_HALF_SPREAD"] = f"{half_spread:g}"
        # The venue's default market rates (the test stack runs a busier market).
        stack.venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=root / "keys" / "trusted"))
        await stack.start()
        try:
            stack.spawn("a")
            started = time.monotonic()
            await stack.poll(stack.quoting_worker, "a quoting worker", 120)
            print(f"quoting; recording {seconds:g} s", flush=True)
            await stack.poll(lambda: time.monotonic() - started >= seconds, "the session's length", seconds + 60,
                             interval=1.0)
            await stack.halt_and_settle()
            stack.stop_all()
        finally:
            for child, _ in stack.workers.values():
                if child.alive():
                    child.popen.kill()
                    child.popen.wait(10)
            await stack.venue.stop()
    finally:
        if registry is not None:
            registry.stop()
        broker.stop()
    return pg.dsn()


async def check(dsn: str, instrument: str) -> None:
    import asyncpg

    from app.backtest import fidelity
    from app.backtest.data import load_postgres

    connection = await asyncpg.connect(dsn)
    try:
        start, end = await connection.fetchrow(
            "SELECT min(time), max(time) FROM tickers WHERE instrument_name = $1", instrument)
    finally:
        await connection.close()
    start, end = start.timestamp(), end.timestamp() + 1e-6
    data = await load_postgres(dsn, instrument, start, end)
    session = await fidelity.load_session_postgres(dsn, instrument, start, end)
    print(f"\nrecorded {end - start:.0f} s of {instrument}: {data.counts()}, {len(session.acks)} acks, "
          f"{len(session.fills)} fills")
    for own_trades in fidelity.OWN_TRADES:
        began = time.perf_counter()
        report = fidelity.check(data, session, own_trades=own_trades)
        print(f"\nown fills as {own_trades} ({time.perf_counter() - began:.2f} s; requests {report.requests}; "
              f"market {report.market})")
        print(fidelity.table(report))
        if own_trades == "taker_flow":
            for name, model in report.models.items():
                missed = [f for f, m in zip(report.live_fills, model["matches"]) if m is None]
                replayed_orders = {r["order_id"] for r in model["fills"]}
                elsewhere = sum(1 for f in missed if f["order_id"] in replayed_orders)
                print(f"  {name}: {len(missed)} missed, of which {elsewhere} of orders the replay filled at "
                      f"another time; missed amounts {sorted({f['amount'] for f in missed})[:8]}")


async def main_async(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-fidelity-"))
    os.chmod(root, 0o755)  # the PostgreSQL service user must be able to traverse it
    from app.stack.postgres import EmbeddedPostgres

    pg = EmbeddedPostgres(root / "pg", root / "logs")
    try:
        await pg.start()
        dsn = await record_session(root, pg, args.seconds, args.half_spread)
        await check(dsn, args.instrument)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the live session")
    parser.add_argument("--instrument", default="BTC-PERPETUAL")
    parser.add_argument("--half-spread", type=float, default=2.0, help="our quotes' half-spread in bps")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')} load average before: {os.getloadavg()}", flush=True)
    asyncio.run(main_async(args))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
