"""The simulated venue's speed on loopback: notifications published per second, orders matched
per second and their acknowledgement latency.

    .venv/bin/python -m benchmarks.bench_venue [--seconds 5] [--orders 5000]

The venue runs in a child process (as under ``cryptics up``), the clients here,
so the two share the machine's cores but not an event loop.

1. Notifications: the market steps as fast as the venue can (tick_interval 0.1 ms,
   which it cannot keep up with); four connections subscribe to every raw public
   channel of both perpetuals (ticker, lwt, book, recent_trades, price_index).
   Reported: the notifications the clients received per second, and the market
   steps per second the venue managed meanwhile.
2. Orders: one logged-in connection sends limit orders alternately buying and
   selling at the same price inside the spread, so every second order matches
   the one before (self-trades are allowed: STP is off by default). The market
   keeps moving at its default 100 ms step. Each window size W keeps W orders in
   flight. Reported: orders/s and the ack latency (send → reply) percentiles, and
   the venue's own tick-to-order probe (GET /venue/latency) for the same run.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from app.stack.process import free_port
from app.venue import VenueConfig, create_keypair, serve, sign_token
from app.venue.latency import summarise

KID = "KBENCH0001"
CHANNELS = [f"{kind}.{name}.raw" for name in ("BTC-PERPETUAL", "ETH-PERPETUAL") for kind in ("ticker", "lwt")] + \
    [f"book.{name}.none.all.raw" for name in ("BTC-PERPETUAL", "ETH-PERPETUAL")] + \
    ["recent_trades.BTCUSD.all", "recent_trades.ETHUSD.all", "price_index.BTCUSD", "price_index.ETHUSD"]


def run_venue(config: VenueConfig) -> None:
    asyncio.run(serve(config))


class Venue:
    """A venue child process for the length of a ``with`` block."""

    def __init__(self, config: VenueConfig) -> None:
        self.config = config
        self.process = multiprocessing.get_context("spawn").Process(target=run_venue, args=(config,), daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.config.port}/ws/api/v2"

    async def __aenter__(self) -> "Venue":
        self.process.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                _reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
                writer.close()
                return self
            except OSError:
                if time.monotonic() > deadline or not self.process.is_alive():
                    raise RuntimeError("the venue did not start")
                await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        self.process.terminate()  # SIGTERM: serve() closes cleanly
        await asyncio.get_running_loop().run_in_executor(None, self.process.join, 10)


async def count_notifications(url: str, seconds: float) -> dict[str, int]:
    """Notifications received per channel kind during ``seconds`` after subscribing."""
    counts: dict[str, int] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_str(orjson.dumps({"method": "public/subscribe", "params": {"channels": CHANNELS},
                                        "id": 1}).decode())
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await ws.receive(timeout=left)
            except asyncio.TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = orjson.loads(msg.data)
            if "channel_name" in data:
                kind = data["channel_name"].split(".")[0]
                counts[kind] = counts.get(kind, 0) + 1
    return counts


async def bench_notifications(base: VenueConfig, seconds: float, connections: int = 4) -> None:
    config = dataclasses.replace(base, port=free_port(), tick_interval=0.0001, noise_rate=20.0,
                                 informed_rate=5.0)
    async with Venue(config) as venue:
        await asyncio.sleep(0.5)  # let the market warm up
        started = time.monotonic()
        results = await asyncio.gather(*(count_notifications(venue.url, seconds) for _ in range(connections)))
        elapsed = time.monotonic() - started
        total = sum(sum(c.values()) for c in results)
        steps = results[0].get("price_index", 0) / 2  # one index notification per underlying per step
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(results[0].items()))
        print(f"notifications: {total / elapsed:,.0f}/s received by {connections} connections "
              f"({total:,} in {elapsed:.1f} s; market {steps / elapsed:,.0f} steps/s; "
              f"one connection got: {kinds})")


async def bench_orders(base: VenueConfig, private_key: Path, orders: int, window: int) -> None:
    config = dataclasses.replace(base, port=free_port())
    async with Venue(config) as venue, aiohttp.ClientSession() as http:
        async with http.ws_connect(venue.url) as ws:
            pending: dict[int, float] = {}
            latencies: list[float] = []
            errors = 0
            matched = 0
            done = asyncio.Event()
            slots = asyncio.Semaphore(window)

            async def reader() -> None:
                nonlocal errors, matched
                while len(latencies) + errors < orders:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return
                    data = orjson.loads(msg.data)
                    sent = pending.pop(data.get("id"), None)
                    if sent is None:
                        continue
                    if "error" in data:
                        errors += 1
                    else:
                        latencies.append(time.perf_counter() - sent)
                        if isinstance(data["result"], dict) and data["result"].get("fills"):
                            matched += 1
                    slots.release()
                done.set()

            async def call(request_id: int, method: str, params: dict) -> None:
                await slots.acquire()
                pending[request_id] = time.perf_counter()
                await ws.send_str(orjson.dumps({"method": method, "params": params, "id": request_id}).decode())

            # The price: the index rounded to the tick, inside the house's ±3 bp spread.
            async with http.ws_connect(venue.url) as side_channel:
                await side_channel.send_str('{"method":"public/index","params":{"underlying":"BTCUSD"},"id":1}')
                price = float(round(orjson.loads((await side_channel.receive()).data)["result"]["price"]))
            reading = asyncio.get_running_loop().create_task(reader())
            await call(1, "public/login", {"token": sign_token(private_key, KID)})
            await call(2, "public/subscribe", {"channels": ["ticker.BTC-PERPETUAL.raw"]})
            await call(3, "public/system_info", {})
            while pending:
                await asyncio.sleep(0.01)
            latencies.clear()
            async with http.get(f"http://{config.host}:{config.port}/venue/latency?reset=1") as response:
                await response.read()
            started = time.perf_counter()
            for i in range(orders):
                side = "buy" if i % 2 == 0 else "sell"
                await call(100 + i, "private/insert", {"direction": side, "instrument_name": "BTC-PERPETUAL",
                                                       "amount": 0.001, "price": price})
            await asyncio.wait_for(done.wait(), 60)
            elapsed = time.perf_counter() - started
            reading.cancel()
            stats = summarise(latencies)
            async with http.get(f"http://{config.host}:{config.port}/venue/latency") as response:
                probe = orjson.loads(await response.read())["all"]
            print(f"orders (window {window:2d}): {len(latencies) / elapsed:7,.0f}/s acked ({matched:,} of "
                  f"{len(latencies):,} traded on arrival), errors {errors}; "
                  f"ack latency p50 {stats['p50_ms']:.3f} ms, p90 {stats['p90_ms']:.3f} ms, "
                  f"p99 {stats['p99_ms']:.3f} ms, max {stats['max_ms']:.3f} ms; "
                  f"venue tick-to-order p50 {probe['p50_ms']:.2f} ms p99 {probe['p99_ms']:.2f} ms")


async def main(seconds: float, orders: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        private_key, public_key = create_keypair(tmp, KID)
        base = VenueConfig(trusted_keys_dir=public_key.parent, order_rate=1e9, order_rate_cod=1e9,
                           cancel_rate=1e9, max_outbox=10_000_000)
        await bench_notifications(base, seconds)
        for window in (1, 16):
            await bench_orders(base, private_key, orders, window)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the notification run")
    parser.add_argument("--orders", type=int, default=5000, help="orders per order run")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.orders))
