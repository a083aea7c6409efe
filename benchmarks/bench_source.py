"""Market-data source: notifications/s parsed and turned into Kafka values, in process.

    .venv/bin/python -m benchmarks.bench_source

Frames are recorded from the simulated venue (ticker, book and index of BTC-PERPETUAL), then
run through the client's router and the source's value builders (the ticker, book and index
values the source produces, app/exchange/book.py's local book) with no I/O: the ceiling of
the Python work per notification before Avro and Kafka. The whole path from the venue to
Kafka and PostgreSQL, with exact accounting, is benchmarks/bench_sink/ part 3.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

INSTRUMENT = "BTC-PERPETUAL"


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
    """Frames/s through the client's router and the source's value builders (no Kafka)."""
    from agents.market_data import _book_trades, book_value, index_value, ticker_value, utc_now
    from app.exchange.book import LocalBook
    from app.exchange.client import ThalexClient

    client = ThalexClient("ws://127.0.0.1:1/unused")
    book = LocalBook(INSTRUMENT)

    def on_ticker(n):
        ticker_value(INSTRUMENT, n.payload, utc_now())

    def on_book(n):
        try:
            book.apply(n.payload, n.snapshot)
        except Exception:
            book.reset()
        book_value(INSTRUMENT, n.payload, n.snapshot, _book_trades(n.payload.get("trades", [])), book.best_bid(),
                   book.best_ask(), utc_now())

    def on_index(n):
        index_value(n.payload, utc_now())

    client._handlers.update({f"ticker.{INSTRUMENT}.raw": [on_ticker], f"book.{INSTRUMENT}.none.all.raw": [on_book],
                             "price_index.BTCUSD": [on_index]})
    started = time.perf_counter()
    for frame in frames:
        client.handle(frame)
    return len(frames) / (time.perf_counter() - started)


async def main_async() -> None:
    from app.venue import Venue, VenueConfig

    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-source-"))
    os.chmod(root, 0o755)
    try:
        recorder = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=root, market_running=False))
        await recorder.start()
        frames = await _record_frames(recorder, 3000)
        await recorder.stop()
        print(f"parse + build Kafka values, in process: {parse_only(frames):,.0f} notifications/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
