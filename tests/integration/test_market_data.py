"""The market-data source end to end: simulated venue → worker → Kafka, counted on both sides.

Real parts: the simulated venue (in this process, its market stepped by the test so
the test knows when it is still), a Tansu broker, the schema registry, and
`cryptics worker` as a child process with the source connected to the venue.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import urllib.request
from collections import Counter
from pathlib import Path

from app.pipeline.codec import AvroCodec
from app.pipeline.topics import read_until_quiet
from app.stack.process import Child, environ_for_child, free_port, spawn
from app.venue import Venue, VenueConfig, create_keypair
from models.registry import record

from .conftest import ROOT, cryptics

INSTRUMENT = "BTC-PERPETUAL"
CHANNELS = {f"ticker.{INSTRUMENT}.raw": "ticker", f"book.{INSTRUMENT}.none.all.raw": "book",
            "price_index.BTCUSD": "index"}
KID = "test-source"
RUN_SECONDS = float(os.environ.get("CRYPTICS_TEST_SOURCE_SECONDS", "60"))


def _view(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/market-data/", timeout=2) as response:
        return json.loads(response.read())


async def _poll(predicate, what: str, timeout: float, worker: Child):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker died:\n{worker.log_tail(60)}"
        try:
            last = await asyncio.get_running_loop().run_in_executor(None, predicate)
            if last:
                return last
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last}); worker log:\n{worker.log_tail(60)}")


async def _topic_records(bootstrap: str, registry_url: str, name: str) -> list[dict]:
    """Every record on ``name``'s topic, decoded with the registry (so: decodable)."""
    r = record(name)
    codec = AvroCodec(r.subject, r.schema, registry_url)
    return [{"key": m.key.decode(), **codec.loads(m.value)} for m in await read_until_quiet(bootstrap, r.topic)]


def _venue_book(venue: Venue) -> dict:
    """The venue's own full-depth view of the book, as a fresh subscriber's snapshot would show it."""
    feed = venue._feed(_spec(venue))
    snapshot = feed._book_snapshot() if feed.book_state is not None else None
    assert snapshot is not None
    return {"bids": sorted(([p, a] for p, a, _ in snapshot["bid_changes"]), key=lambda x: -x[0]),
            "asks": sorted([p, a] for p, a, _ in snapshot["ask_changes"])}


def _spec(venue: Venue):
    from app.venue.feeds import parse_channel

    return parse_channel(f"book.{INSTRUMENT}.none.all.raw", venue.engine)


class Scenario:
    def __init__(self, broker, registry_url: str, tmp_path: Path) -> None:
        keys = tmp_path / "keys"
        private_key, _ = create_keypair(keys, KID, keys / "trusted")
        self.venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=keys / "trusted",
                                               market_running=False, seed=11))
        self.web_port = free_port()
        self.env = {
            "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
            "CRYPTICS_WEB_PORT": str(self.web_port), "CRYPTICS_STATE_DIR": str(tmp_path / "state"),
            "CRYPTICS_HEARTBEAT_INTERVAL": "0", "CRYPTICS_THALEX_KEY_ID": KID,
            "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private_key), "CRYPTICS_INSTRUMENTS": INSTRUMENT,
            # Market data only: with quoting on, the cancel_session at shutdown changes the
            # book once more while the worker stops (tests/integration/test_quoting.py covers quoting).
            # Halted, the session sends no orders: it lives on the client's keep-alive pings
            # alone under cancel-on-disconnect (a dropped session shows as a book gap).
            "CRYPTICS_TRADING_STATE": "halted",
        }
        self.log = tmp_path / "worker.log"
        self.worker: Child | None = None

    async def start(self) -> None:
        await self.venue.start()
        self.env["CRYPTICS_VENUE_URL"] = self.venue.url
        self.worker = spawn("worker", cryptics("worker"), log_path=self.log,
                            env=environ_for_child(self.env), cwd=ROOT)
        await _poll(lambda: set(_view(self.web_port)["received"]) >= set(CHANNELS), "the first notifications",
                    90, self.worker)

    async def run_market(self, seconds: float, step: float = 0.05) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.venue.step_market()
            await asyncio.sleep(step)

    def sent(self) -> Counter:
        """Notifications the venue queued, per channel, over all the source's sessions."""
        totals: Counter = Counter()
        for (_session, channel), n in self.venue.notifications_sent.items():
            totals[channel] += n
        return totals

    def received(self, view: dict) -> dict:
        """The public channels' counts from the worker's view (private feeds are not in `sent`)."""
        return {c: n for c, n in view["received"].items() if c in CHANNELS}

    async def settle(self) -> dict:
        """Wait until the source has handled everything the venue sent."""
        await asyncio.sleep(0.3)  # let the venue's writer flush its outbox
        sent = self.sent()
        return await _poll(lambda: self.received(v := _view(self.web_port)) == dict(sent) and v,
                           "the source to catch up", 60, self.worker)

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=30)
            assert self.worker.popen.returncode == 0, self.worker.log_tail(60)
        await self.venue.stop()


async def _check_topics(scenario: Scenario, bootstrap: str, registry_url: str) -> None:
    sent = scenario.sent()
    for channel, name in CHANNELS.items():
        records = await _topic_records(bootstrap, registry_url, name)
        assert len(records) == sent[channel], f"{name}: {len(records)} records, venue sent {sent[channel]}"
        stamps = [r["received_at"] for r in records]
        assert len(set(stamps)) == len(stamps), f"{name}: duplicated records"
        assert all(r["key"] == (r.get("instrument_name") or r.get("index_name")) for r in records)


async def test_every_notification_arrives_once_and_the_book_matches(broker, registry_url, tmp_path):
    scenario = Scenario(broker, registry_url, tmp_path)
    await scenario.start()
    try:
        await scenario.run_market(RUN_SECONDS)
        view = await scenario.settle()
        venue_book = _venue_book(scenario.venue)
        local = view["books"][INSTRUMENT]
        assert local["synced"] and view["gaps"] == {}
        assert {"bids": local["bids"], "asks": local["asks"]} == venue_book
        assert len(venue_book["bids"]) >= 5 and len(venue_book["asks"]) >= 5
        assert view["client"].get("bad_notifications", 0) == 0 and view["client"].get("malformed", 0) == 0
        assert view["received"]["account.portfolio"] >= 1  # the private snapshot, with credentials
        # Every market notification became at least one record handed to Kafka (a book update
        # also one per trade it carries), none failed on the way.
        market = sum(n for channel, n in view["received"].items() if channel != "account.portfolio")
        assert view["producer"]["records"] >= market > 0
        assert view["producer"].get("encode_errors", 0) == 0 and view["producer"].get("delivery_errors", 0) == 0
        assert view["producer"]["batches"] >= 1
    finally:
        await scenario.stop()
    await _check_topics(scenario, broker.bootstrap, registry_url)
    sent = scenario.sent()
    # the market moved all along: at least one book and one ticker notification a second
    assert sent[f"book.{INSTRUMENT}.none.all.raw"] >= RUN_SECONDS and sent[f"ticker.{INSTRUMENT}.raw"] >= RUN_SECONDS


async def test_a_dropped_connection_is_rebuilt_without_duplicates(broker, registry_url, tmp_path):
    scenario = Scenario(broker, registry_url, tmp_path)
    await scenario.start()
    try:
        await scenario.run_market(3)
        await scenario.settle()
        first_iat = scenario.venue.auth.last_iat[KID]
        sessions_before = {s for s, _ in scenario.venue.notifications_sent}
        for conn in list(scenario.venue.connections):  # the venue drops the source mid-stream
            await conn.ws.close()
        await scenario.run_market(1)
        view = await _poll(lambda: (v := _view(scenario.web_port))["client"].get("reconnects", 0) >= 1 and v,
                           "the reconnect", 30, scenario.worker)
        await scenario.run_market(3)
        view = await scenario.settle()
        # logged in again with a new token (the venue refuses an iat it has seen)
        assert scenario.venue.auth.last_iat[KID] > first_iat
        sessions_after = {s for s, _ in scenario.venue.notifications_sent}
        assert len(sessions_after - sessions_before) == 1  # resubscribed on a new session
        assert view["gaps"] == {INSTRUMENT: 1}  # the lost stretch is reported
        assert view["client"]["disconnects"] == 1
        local = view["books"][INSTRUMENT]
        assert local["synced"]
        assert {"bids": local["bids"], "asks": local["asks"]} == _venue_book(scenario.venue)
    finally:
        await scenario.stop()
    await _check_topics(scenario, broker.bootstrap, registry_url)
