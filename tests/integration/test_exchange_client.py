"""ThalexClient against the simulated venue over a real loopback websocket."""
from __future__ import annotations

import asyncio
import dataclasses

import orjson
import picows
import pytest

from app.exchange.auth import Credentials, CredentialsError
from app.exchange.client import LoginRejected, SubscriptionRejected, ThalexClient, ThalexError
from app.stack.process import free_port
from app.venue import Venue, VenueConfig, create_keypair

KID = "client-test"


@pytest.fixture
def keys(tmp_path):
    private, _ = create_keypair(tmp_path / "keys", KID, tmp_path / "keys" / "trusted")
    return tmp_path / "keys", Credentials.from_file(KID, private)


def venue_config(keys_dir, **changes) -> VenueConfig:
    settings = {"port": 0, "trusted_keys_dir": keys_dir / "trusted", "market_running": False, **changes}
    return dataclasses.replace(VenueConfig(), **settings)


async def _until(predicate, timeout=15.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_login_pipelined_calls_and_subscription_check(keys):
    keys_dir, credentials = keys
    venue = Venue(venue_config(keys_dir))
    await venue.start()
    client = ThalexClient(venue.url, credentials)
    try:
        await client.start()
        assert client.account is not None and client.account.startswith("A")
        # pipelined requests come back matched to their callers
        names = ["BTC-PERPETUAL", "ETH-PERPETUAL"] * 10
        results = await asyncio.gather(*(client.call("public/ticker", {"instrument_name": n}) for n in names))
        assert all("mark_price" in r for r in results)
        assert results[0]["mark_price"] != results[1]["mark_price"]  # each answer is for its own request
        with pytest.raises(ThalexError) as error:
            await client.call("private/cancel", {"order_id": "nope"})
        assert error.value.code == 1  # order not found
        seen = []
        with pytest.raises(SubscriptionRejected) as rejected:
            await client.subscribe(["ticker.BTC-PERPETUAL.raw", "ticker.NOPE.raw"], seen.append)
        assert rejected.value.rejected == ["ticker.NOPE.raw"]
        venue.step_market()
        await _until(lambda: any(n.channel == "ticker.BTC-PERPETUAL.raw" for n in seen))
        assert client.stats["unknown_channel"] == 0
    finally:
        await client.close()
        await venue.stop()


async def test_rejected_login_is_fatal_and_says_why(keys, tmp_path):
    keys_dir, _ = keys
    other_private, _ = create_keypair(tmp_path / "other", KID, tmp_path / "other" / "trusted")
    venue = Venue(venue_config(keys_dir))
    await venue.start()
    client = ThalexClient(venue.url, Credentials.from_file(KID, other_private))  # right kid, wrong key
    try:
        with pytest.raises(LoginRejected, match="CRYPTICS_THALEX_KEY_ID") as error:
            await client.start()
        assert error.value.code == 19
    finally:
        await venue.stop()


def test_missing_credentials_are_clear_errors(tmp_path):
    with pytest.raises(CredentialsError, match="CRYPTICS_THALEX_KEY_ID"):
        Credentials.from_file(None, tmp_path / "key.pem")
    with pytest.raises(CredentialsError, match="cannot read"):
        Credentials.from_file("K1", tmp_path / "missing.pem")
    (tmp_path / "not-a-key.pem").write_text("hello")
    with pytest.raises(CredentialsError, match="PEM private key"):
        Credentials.from_file("K1", tmp_path / "not-a-key.pem")


async def test_reconnect_notice_and_venue_restart(keys):
    """The venue announces a shutdown: the client reconnects ahead of time; the venue then goes
    away and comes back on the same port: the client logs in again and resubscribes."""
    keys_dir, credentials = keys
    port = free_port()
    venue = Venue(venue_config(keys_dir, port=port, reconnect_lead=1.0))
    await venue.start()
    client = ThalexClient(venue.url, credentials, reconnect_min_delay=0.05, reconnect_max_delay=0.5)
    seen = []
    try:
        await client.start()
        await client.subscribe(["ticker.BTC-PERPETUAL.raw"], seen.append)
        first_iat = venue.auth.last_iat[KID]

        await venue.announce_shutdown()  # sends the notice, waits reconnect_lead
        assert client.stats["reconnect_notices"] == 1
        await _until(lambda: client.stats["reconnects"] >= 1 and client.connected.is_set())
        assert client.stats["disconnects"] == 1
        assert venue.auth.last_iat[KID] > first_iat  # a fresh token for the new session

        await venue.stop(planned=False)
        await _until(lambda: not client.connected.is_set())
        venue = Venue(venue_config(keys_dir, port=port))  # back on the same port
        await venue.start()
        await _until(lambda: client.connected.is_set(), timeout=20)
        seen.clear()
        venue.step_market()
        await _until(lambda: any(n.channel == "ticker.BTC-PERPETUAL.raw" for n in seen))
        assert client.stats["reconnects"] >= 2 and client.fatal is None
    finally:
        await client.close()
        await venue.stop(planned=False)


def test_backoff_grows_with_jitter_and_is_capped():
    values = iter([0.0, 1.0] * 20)
    client = ThalexClient("ws://127.0.0.1:1/x", reconnect_min_delay=0.1, reconnect_max_delay=2.0,
                          rng=lambda: next(values))
    delays = [client._backoff(a) for a in range(8)]
    assert delays[0] == pytest.approx(0.05)  # half the floor at jitter 0
    assert delays[1] == pytest.approx(0.2)  # the full 2 × floor at jitter 1
    assert max(delays) <= 2.0 and delays[-1] == pytest.approx(2.0)


async def test_two_handlers_on_one_channel_and_resubscribe_keeps_them(keys):
    keys_dir, credentials = keys
    venue = Venue(venue_config(keys_dir))
    await venue.start()
    client = ThalexClient(venue.url, credentials)
    first, second = [], []

    async def async_handler(n):
        second.append(n)

    try:
        await client.start()
        await client.subscribe(["account.portfolio"], first.append)
        await client.subscribe(["account.portfolio"], async_handler)  # no second venue subscription
        assert client.stats.get("bad_notifications", 0) == 0
        await client.resubscribe("account.portfolio")  # a fresh snapshot, to both handlers
        await _until(lambda: len(first) >= 2 and len(second) >= 1)
        assert all(n.snapshot for n in first) and first[-1].payload == second[-1].payload
    finally:
        await client.close()
        await venue.stop()


class _FragmentingServer(picows.WSListener):
    """A bare websocket peer (picows) that answers any request with a notification split in
    fragments, then a ping: what a venue may send, which the simulated one never does."""

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != picows.WSMsgType.TEXT:
            return
        request = orjson.loads(frame.get_payload_as_bytes())
        if request["method"] == "public/subscribe":
            transport.send(picows.WSMsgType.TEXT, orjson.dumps({"id": request["id"], "result": ["ticker.X.raw"]}))
            whole = orjson.dumps({"channel_name": "ticker.X.raw", "notification": {"mark_price": 1.5, "pad": "x" * 50}})
            third = len(whole) // 3
            transport.send(picows.WSMsgType.TEXT, whole[:third], fin=False)
            transport.send(picows.WSMsgType.CONTINUATION, whole[third:2 * third], fin=False)
            transport.send(picows.WSMsgType.CONTINUATION, whole[2 * third:], fin=True)
            transport.send(picows.WSMsgType.TEXT, orjson.dumps({"channel_name": "ticker.X.raw",
                                                               "notification": {"mark_price": 2.5}}))
        else:
            transport.send(picows.WSMsgType.TEXT, orjson.dumps({"id": request["id"], "result": None}))


async def test_fragmented_messages_are_reassembled():
    server = await picows.ws_create_server(lambda _request: _FragmentingServer(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ThalexClient(f"ws://127.0.0.1:{port}/")
    seen: list = []
    try:
        await client.start()
        await client.subscribe(["ticker.X.raw"], seen.append)
        await _until(lambda: len(seen) == 2)
        assert [n.payload["mark_price"] for n in seen] == [1.5, 2.5]
        assert seen[0].payload["pad"] == "x" * 50
        assert client.stats.get("malformed", 0) == 0
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
