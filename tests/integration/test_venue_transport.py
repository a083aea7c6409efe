"""The simulated venue's transport: message-rate limits, the latency probe, planned and unplanned
shutdown, its websocket frames, and slow consumers (bare client: tests/integration/venue_wire.py)."""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from app.stack.process import free_port
from app.venue import Venue, VenueConfig
from tests.integration.venue_wire import BTC, ETH, ROOT, TIMEOUT, WsClient, connect, venue_config

# -- latency probe and shutdown ---------------------------------------------------------

async def test_latency_probe(venue: Venue, http, trader: WsClient):
    empty = await trader.result("venue/latency")
    assert empty["all"]["count"] == 0
    await trader.result("public/subscribe", {"channels": ["ticker.BTC-PERPETUAL.raw"]})
    await trader.notification("ticker.BTC-PERPETUAL.raw")
    for _ in range(3):
        venue.step_market()
        await trader.notification("ticker.BTC-PERPETUAL.raw")
        await trader.result("private/insert", {"direction": "buy", "instrument_name": BTC, "amount": 0.001,
                                               "price": 90000})
    stats = await trader.result("venue/latency")
    assert stats["all"]["count"] == 3 and stats["by_method"]["private/insert"]["count"] == 3
    assert 0 <= stats["all"]["p50_ms"] <= stats["all"]["p90_ms"] <= stats["all"]["p99_ms"] <= stats["all"]["max_ms"]
    assert venue.latency_stats() == stats
    async with http.get(f"{venue.http_url}/venue/latency") as response:
        assert response.status == 200
        assert (await response.json())["all"]["count"] == 3
    await trader.result("venue/latency", {"reset": True})
    assert venue.latency_stats()["all"]["count"] == 0


async def test_planned_shutdown_sends_reconnect_first(keys: tuple[Path, Path], http):
    lead = 0.3
    venue = Venue(venue_config(keys[1], announce_shutdown=True, reconnect_lead=lead))
    await venue.start()
    client = await connect(http, venue)
    assert await client.result("public/subscribe", {"channels": ["system"]}) == ["system"]
    stopping = asyncio.get_running_loop().create_task(venue.stop())
    note = await client.notification("system")
    noticed = time.monotonic()
    assert note["notification"] == {"event": "reconnect"}
    msg = await asyncio.wait_for(client.ws.receive(), TIMEOUT)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert time.monotonic() - noticed >= lead * 0.8  # the notice came the lead time ahead
    await stopping


async def test_unplanned_stop_sends_no_notice(keys: tuple[Path, Path], http):
    venue = Venue(venue_config(keys[1]))
    await venue.start()
    client = await connect(http, venue)
    await client.result("public/subscribe", {"channels": ["system"]})
    await venue.stop()
    msg = await asyncio.wait_for(client.ws.receive(), TIMEOUT)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert client.take("system") == []


async def test_serve_announces_itself_and_stops_cleanly_on_sigterm(keys: tuple[Path, Path], http):
    port = free_port()
    script = ("import asyncio, sys; from pathlib import Path; from app.venue import VenueConfig, serve; "
              "asyncio.run(serve(VenueConfig(port=int(sys.argv[1]), trusted_keys_dir=Path(sys.argv[2]))))")
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(port), str(keys[1]),
                                                   stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)  # type: ignore[union-attr]
        assert line.decode().strip() == f"venue listening on ws://127.0.0.1:{port}/ws/api/v2"
        client = WsClient(await http.ws_connect(f"ws://127.0.0.1:{port}/ws/api/v2"))
        assert "api_version" in await client.result("public/system_info")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        msg = await asyncio.wait_for(client.ws.receive(), TIMEOUT)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_the_venues_frames_are_the_frames_aiohttp_writes(size):
    """The venue frames its outbox itself (one write per round); each frame must be byte for
    byte what aiohttp's own server-side writer produces for the same text message."""
    from aiohttp._websocket.writer import WebSocketWriter

    from app.venue.transport import text_frame

    class Transport:
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

        def writelines(self, chunks) -> None:
            self.data += b"".join(chunks)

        def is_closing(self) -> bool:
            return False

    transport = Transport()
    message = bytes(i % 251 for i in range(size))
    WebSocketWriter(None, transport, use_mask=False)._write_websocket_frame(message, 0x1, 0)
    assert text_frame(message) == transport.data


async def test_a_client_that_stops_reading_is_closed_as_a_slow_consumer(tmp_path: Path):
    """The venue writes whole rounds to the socket; a client that reads nothing more fills the
    socket buffers, then the venue's outbox, and past max_outbox the session is closed (1008)
    while the venue goes on serving the others."""
    config = dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=tmp_path, market_running=False,
                                 noise_rate=0.0, informed_rate=0.0, max_outbox=500)
    venue = Venue(config)
    await venue.start()
    try:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(venue.url) as stalled, session.ws_connect(venue.url) as reader:
            channels = [f"ticker.{n}.raw" for n in (BTC, ETH)] + [f"book.{n}.none.all.raw" for n in (BTC, ETH)]
            for ws in (stalled, reader):
                await ws.send_json({"method": "public/subscribe", "id": 1, "params": {"channels": channels}})
                assert orjson.loads((await ws.receive(timeout=TIMEOUT)).data)["id"] == 1
            # aiohttp stops reading the socket once its own queue is full: `stalled` reads nothing more.
            (stalled_conn,) = [c for c in venue.connections if c.session == 1]
            steps = 0
            while not stalled_conn.closed and steps < 50_000:
                venue.step_market()
                steps += 1
                if steps % 10 == 0:
                    await asyncio.sleep(0)  # the writers run; `reader` keeps reading below
                    while True:
                        try:
                            await reader.receive(timeout=0.001)
                        except asyncio.TimeoutError:
                            break
            assert stalled_conn.closed, f"still open after {steps} steps"
            assert len(stalled_conn.outbox) > config.max_outbox
            # The other session was not held back: it is open and still gets every step.
            sent_before = venue.notifications_sent[(2, f"ticker.{BTC}.raw")]
            venue.step_market()
            message = await reader.receive(timeout=TIMEOUT)
            assert message.type == aiohttp.WSMsgType.TEXT
            assert venue.notifications_sent[(2, f"ticker.{BTC}.raw")] == sent_before + 1
    finally:
        await venue.stop()


async def test_the_probe_times_each_order_from_the_read_that_brought_it(venue: Venue, trader: WsClient):
    # Twenty inserts in one write arrive together: each is timed to that read, not to when
    # the venue got round to it after handling the ones before (its own time, not the client's).
    await trader.result("public/subscribe", {"channels": ["ticker.BTC-PERPETUAL.raw"]})
    await trader.notification("ticker.BTC-PERPETUAL.raw")
    venue.step_market()
    await trader.notification("ticker.BTC-PERPETUAL.raw")
    await trader.result("venue/latency", {"reset": True})
    frames = []
    for i in range(20):
        request = {"method": "private/insert", "id": 1000 + i, "params": {
            "direction": "buy", "instrument_name": BTC, "amount": 0.001, "price": 90000 - i}}
        frames.append(_masked_text_frame(orjson.dumps(request)))
    trader.ws._response.connection.transport.write(b"".join(frames))
    for i in range(20):
        assert "result" in await trader.response(1000 + i)
    samples = venue.latency.samples["private/insert"]
    assert len(samples) == 20
    assert len(set(samples)) == 1, f"orders of one read timed apart: {min(samples)} .. {max(samples)} s"


def _masked_text_frame(payload: bytes) -> bytes:
    """A client's text frame (RFC 6455 docs/thalex-protocol.md §5.2), masked with a fixed key: fine for a test."""
    key = b"\x12\x34\x56\x78"
    n = len(payload)
    header = bytes((0x81, 0x80 | n)) if n < 126 else b"\x81\xfe" + n.to_bytes(2, "big")
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
