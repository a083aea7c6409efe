"""Market-data source throughput: notifications/s parsed, turned into records and produced to Kafka.

    .venv/bin/python -m benchmarks.bench_source [--seconds 20]

Two measurements in one run:
1. parse only: the client's router and the source's record building on frames
   recorded from the venue, in this process (no I/O): the ceiling of the Python work;
2. end to end: the simulated venue (in this process, market stepped as fast as it
   goes) → `cryptics worker` (a child process: the source parses, builds records,
   hands them to the in-process channel and produces them to Tansu, Avro through
   the schema registry). Throughput is what the worker handled per second, read
   from its /market-data/ view; lag is what the venue sent but the worker had not
   yet handled at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTRUMENT = "BTC-PERPETUAL"


def _view(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/market-data/", timeout=5) as response:
        return json.loads(response.read())


async def _record_frames(venue, count: int) -> list[bytes]:
    import aiohttp

    frames: list[bytes] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(venue.url) as ws:
        await ws.send_json({"method": "public/subscribe", "id": 1, "params": {"channels": [
            f"ticker.{INSTRUMENT}.raw", f"book.{INSTRUMENT}.none.all.raw", "price_index.BTCUSD"]}})
        while len(frames) < count:
            venue.step_market()
            try:
                msg = await asyncio.wait_for(ws.receive(), 0.05)
            except asyncio.TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.TEXT and "channel_name" in msg.data:
                frames.append(msg.data.encode())
    return frames


def parse_only(frames: list[bytes]) -> float:
    """Frames/s through the client's router and the source's record builders (no Kafka)."""
    from agents.market_data import index_record, ticker_record, utc_now
    from app.exchange.book import LocalBook
    from app.exchange.client import ThalexClient

    client = ThalexClient("ws://127.0.0.1:1/unused")
    book = LocalBook(INSTRUMENT)

    def on_ticker(n):
        ticker_record(INSTRUMENT, n.payload, utc_now())

    def on_book(n):
        try:
            book.apply(n.payload, n.snapshot)
        except Exception:
            book.reset()

    def on_index(n):
        index_record(n.payload, utc_now())

    client._handlers.update({f"ticker.{INSTRUMENT}.raw": [on_ticker], f"book.{INSTRUMENT}.none.all.raw": [on_book],
                             "price_index.BTCUSD": [on_index]})
    started = time.perf_counter()
    for frame in frames:
        client.handle(frame)
    return len(frames) / (time.perf_counter() - started)


async def end_to_end(seconds: float, root: Path) -> tuple[float, int, int]:
    from app.stack.broker import EmbeddedBroker
    from app.stack.postgres import EmbeddedPostgres
    from app.stack.process import environ_for_child, free_port, spawn, wait_until
    from app.venue import Venue, VenueConfig, create_keypair

    broker = EmbeddedBroker(root / "logs")
    pg = EmbeddedPostgres(root / "pg", root / "logs")
    await broker.start()
    await pg.start()
    registry_port = free_port()
    registry = spawn("registry", [sys.executable, "-m", "app.cli", "registry", "--port", str(registry_port)],
                     log_path=root / "logs" / "registry.log", cwd=ROOT,
                     env=environ_for_child({"CRYPTICS_DATABASE_URL": pg.dsn()}))
    private, _ = create_keypair(root / "keys", "bench", root / "keys" / "trusted")
    venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=root / "keys" / "trusted",
                                      market_running=False))
    await venue.start()
    web = free_port()
    worker = spawn("worker", [sys.executable, "-m", "app.cli", "worker"], log_path=root / "logs" / "worker.log",
                   cwd=ROOT, env=environ_for_child({
                       "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_VENUE_URL": venue.url,
                       "CRYPTICS_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
                       "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / "state"),
                       "CRYPTICS_HEARTBEAT_INTERVAL": "0", "CRYPTICS_THALEX_KEY_ID": "bench",
                       "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private), "CRYPTICS_INSTRUMENTS": INSTRUMENT}))
    loop = asyncio.get_running_loop()
    try:
        async def ready() -> bool:
            view = await loop.run_in_executor(None, _view, web)
            return len(view["received"]) >= 3  # ticker, book, index (and the portfolio: credentials)
        await wait_until(ready, what="worker", timeout=120, child=worker, interval=0.2)
        before = sum((await loop.run_in_executor(None, _view, web))["received"].values())
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            venue.step_market()
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        after = sum((await loop.run_in_executor(None, _view, web))["received"].values())
        sent = sum(venue.notifications_sent.values())
        return (after - before) / elapsed, sent, sent - after
    finally:
        worker.stop(timeout=30)
        await venue.stop()
        registry.stop()
        pg.stop()
        broker.stop()


async def main_async(seconds: float) -> None:
    from app.venue import Venue, VenueConfig

    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-source-"))
    os.chmod(root, 0o755)
    try:
        recorder = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=root, market_running=False))
        await recorder.start()
        frames = await _record_frames(recorder, 3000)
        await recorder.stop()
        print(f"parse + build records, in process: {parse_only(frames):,.0f} notifications/s")
        rate, sent, lag = await end_to_end(seconds, root)
        print(f"end to end (venue → worker → Kafka): {rate:,.0f} notifications/s handled; "
              f"venue sent {sent:,}, not yet handled at the end: {lag:,}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(main_async(parser.parse_args().seconds))


if __name__ == "__main__":
    main()
