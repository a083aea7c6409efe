"""The simulated venue over its websocket, with a plain aiohttp client: every method and channel.

The client here is deliberately minimal (aiohttp's ws_connect and orjson), not the
project's Thalex client, so the test checks the wire protocol of docs/thalex-protocol.md and
nothing else. The market timer is off (``market_running=False``) and the takers
are silent: each test moves the market itself with ``venue.step_market()``.

A request sent after something happened is answered after every notification
that thing produced (one connection, one ordered outbox), so ``client.sync()``
is how a test waits for notifications without sleeping.
"""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import aiohttp
import jwt
import orjson
import pytest

from app.stack.process import free_port
from app.venue import Venue, VenueConfig, create_keypair, default_account, sign_token

ROOT = Path(__file__).resolve().parents[2]
KID = "K100000001"
BTC = "BTC-PERPETUAL"
ETH = "ETH-PERPETUAL"
TIMEOUT = 5.0

INSTRUMENT_FIELDS = {"instrument_name", "product", "tick_size", "volume_tick_size", "min_order_amount",
                     "underlying", "type", "base_currency", "create_time"}
TICKER_REQUIRED = {"mark_price", "mark_timestamp", "delta", "index"}
TICKER_PERPETUAL = TICKER_REQUIRED | {"best_bid_price", "best_bid_amount", "best_ask_price", "best_ask_amount",
                                      "last_price", "volume_24h", "value_24h", "change_24h", "collar_low",
                                      "collar_high", "open_interest", "funding_rate", "funding_mark",
                                      "realised_funding_24h", "average_funding_rate_24h"}
ORDER_REQUIRED = {"order_id", "order_type", "time_in_force", "direction", "amount", "filled_amount",
                  "remaining_amount", "status", "fills", "change_reason", "insert_reason", "create_time",
                  "persistent"}
TRADE_FIELDS = {"trade_type", "trade_id", "order_id", "instrument_name", "direction", "price", "amount", "time",
                "position_after", "session_realised_after", "position_pnl", "perpetual_funding_pnl", "fee",
                "fee_rate", "fee_basis", "index", "funding_mark", "maker_taker", "leg_index"}
PORTFOLIO_FIELDS = {"instrument_name", "position", "mark_price", "index", "start_price", "average_price",
                    "unrealised_pnl", "realised_pnl", "entry_value", "perpetual_funding_entry_value",
                    "unrealised_perpetual_funding"}
SUMMARY_FIELDS = {"unrealised_pnl", "cash_collateral", "margin", "required_margin", "remaining_margin",
                  "session_realised_pnl", "cash"}


class WsClient:
    """A bare JSON-RPC client: sends requests, files replies by id and notifications by channel."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 1
        self.responses: dict[Any, dict] = {}
        self.notifications: list[dict] = []

    async def send(self, method: str, params: Optional[dict] = None, request_id: Any = "auto") -> Any:
        if request_id == "auto":
            request_id = self.next_id
            self.next_id += 1
        message: dict = {"method": method, "params": {} if params is None else params}
        if request_id is not None:
            message["id"] = request_id
        await self.ws.send_str(orjson.dumps(message).decode())
        return request_id

    async def receive(self) -> dict:
        msg = await asyncio.wait_for(self.ws.receive(), TIMEOUT)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket says {msg.type.name}: {msg.data!r}")
        data = orjson.loads(msg.data)
        if "channel_name" in data:
            self.notifications.append(data)
        else:
            self.responses[data.get("id")] = data
        return data

    async def response(self, request_id: Any) -> dict:
        while request_id not in self.responses:
            await self.receive()
        return self.responses.pop(request_id)

    async def call(self, method: str, params: Optional[dict] = None) -> dict:
        return await self.response(await self.send(method, params))

    async def result(self, method: str, params: Optional[dict] = None) -> Any:
        reply = await self.call(method, params)
        assert "result" in reply, reply
        assert "error" not in reply
        return reply["result"]

    async def error(self, method: str, params: Optional[dict] = None) -> int:
        reply = await self.call(method, params)
        assert "error" in reply and "result" not in reply, reply
        assert set(reply["error"]) == {"code", "message"} and isinstance(reply["error"]["message"], str)
        return reply["error"]["code"]

    async def sync(self) -> None:
        """Receive everything the venue queued before now."""
        await self.result("public/system_info")

    def take(self, channel: str) -> list[dict]:
        """The notifications received so far on ``channel`` (removed from the store)."""
        taken = [n for n in self.notifications if n["channel_name"] == channel]
        self.notifications = [n for n in self.notifications if n["channel_name"] != channel]
        return taken

    async def notification(self, channel: str, match: Callable[[dict], bool] = lambda n: True) -> dict:
        """The first notification on ``channel`` that ``match``es, waiting for it if needed."""
        while True:
            for i, note in enumerate(self.notifications):
                if note["channel_name"] == channel and match(note):
                    return self.notifications.pop(i)
            await self.receive()

    async def login(self, private_key: Path, kid: str = KID, **params: Any) -> dict:
        return await self.result("public/login", {"token": sign_token(private_key, kid), **params})


def venue_config(trusted_keys_dir: Path, **overrides: Any) -> VenueConfig:
    """A still market (no timer, no takers) on a free loopback port; rate limits out of the way."""
    base = VenueConfig(port=free_port(), trusted_keys_dir=trusted_keys_dir, market_running=False,
                       noise_rate=0.0, informed_rate=0.0, order_rate=10_000, order_rate_cod=10_000)
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(private key of KID, trusted keys folder)."""
    private, public = create_keypair(tmp_path / "keys", KID)
    return private, public.parent


@pytest.fixture
def private_key(keys: tuple[Path, Path]) -> Path:
    return keys[0]


@pytest.fixture
async def venue(keys: tuple[Path, Path]):
    v = Venue(venue_config(keys[1]))
    await v.start()
    try:
        yield v
    finally:
        await v.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def connect(http: aiohttp.ClientSession, venue: Venue) -> WsClient:
    return WsClient(await http.ws_connect(venue.url))


@pytest.fixture
async def client(http: aiohttp.ClientSession, venue: Venue) -> WsClient:
    c = await connect(http, venue)
    yield c
    await c.ws.close()


@pytest.fixture
async def trader(client: WsClient, private_key: Path) -> WsClient:
    await client.login(private_key)
    return client


# -- envelope ------------------------------------------------------------------

async def test_url_path_and_envelope(venue: Venue, client: WsClient):
    assert venue.url.endswith("/ws/api/v2")
    reply = await client.call("public/system_info")
    assert set(reply) == {"id", "result"} and reply["id"] == 1
    info = reply["result"]
    assert info["environment"] in ("testnet", "production") and info["banners"] == []
    await client.send("public/system_info", {}, request_id=None)
    assert (await client.response(None))["id"] is None  # no id sent: id null
    await client.send("public/system_info", {}, request_id="text-id")
    assert "result" in await client.response("text-id")


async def test_pipelined_requests_are_all_answered_by_id(client: WsClient):
    ids = [await client.send("public/ticker", {"instrument_name": BTC}) for _ in range(20)]
    replies = [await client.response(i) for i in ids]
    assert all("mark_price" in r["result"] for r in replies)


async def test_malformed_requests(client: WsClient):
    await client.ws.send_str("{not json")
    reply = await client.response(None)
    assert reply["error"]["code"] == 6
    assert await client.error("public/nothing_like_this") == 31
    await client.ws.send_str(orjson.dumps({"method": "public/system_info", "id": 77}).decode())
    assert (await client.response(77))["error"]["code"] == 6  # params is mandatory
    await client.ws.send_str(orjson.dumps({"params": {}, "id": 78}).decode())
    assert (await client.response(78))["error"]["code"] == 6


# -- public methods --------------------------------------------------------------

async def test_instruments(client: WsClient):
    instruments = await client.result("public/instruments")
    by_name = {i["instrument_name"]: i for i in instruments}
    assert set(by_name) >= {BTC, ETH}
    btc = by_name[BTC]
    assert set(btc) == INSTRUMENT_FIELDS
    assert (btc["tick_size"], btc["volume_tick_size"], btc["min_order_amount"]) == (1, 0.001, 0.001)
    assert (btc["underlying"], btc["product"], btc["type"]) == ("BTCUSD", "FBTCUSD", "perpetual")
    eth = by_name[ETH]
    assert (eth["tick_size"], eth["volume_tick_size"], eth["product"]) == (0.1, 0.01, "FETHUSD")
    assert [i["instrument_name"] for i in await client.result("public/instruments", {"underlying": "ETHUSD"})] \
        == [ETH]
    assert await client.result("public/instruments", {"instrument_type": "options"}) == []
    assert await client.result("public/instrument", {"instrument_name": ETH}) == eth
    assert await client.error("public/instrument", {"instrument_name": "NOPE"}) == 5


async def test_ticker_index_book_snapshots(client: WsClient):
    ticker = await client.result("public/ticker", {"instrument_name": BTC})
    assert set(ticker) >= TICKER_PERPETUAL and ticker["delta"] == 1
    assert ticker["best_bid_price"] < ticker["index"] < ticker["best_ask_price"]  # the house quotes around it
    assert await client.error("public/ticker", {"instrument_name": "NOPE"}) == 5
    index = await client.result("public/index", {"underlying": "BTCUSD"})
    assert set(index) == {"index_name", "price", "timestamp"} and index["index_name"] == "BTCUSD"
    assert await client.error("public/index", {"underlying": "XRPUSD"}) == 40
    book = await client.result("public/book", {"instrument_name": BTC})
    assert set(book) == {"bids", "asks", "last", "time"}
    assert 0 < len(book["bids"]) <= 5 and 0 < len(book["asks"]) <= 5
    assert all(len(level) == 3 for level in book["bids"] + book["asks"])
    assert book["bids"][0][0] > book["bids"][1][0] and book["asks"][0][0] < book["asks"][1][0]


# -- public subscriptions ----------------------------------------------------------

async def test_subscribe_result_leaves_out_unknown_channels(client: WsClient):
    channels = ["ticker.BTC-PERPETUAL.raw", "ticker.BTC-PERPETUAL.7ms", "ticker.NOPE.raw", "lwt.ETH-PERPETUAL.1000ms",
                "book.BTC-PERPETUAL.none.all.raw", "book.BTC-PERPETUAL.0.5.10.raw", "price_index.BTCUSD",
                "price_index.XRPUSD", "recent_trades.BTCUSD.all", "recent_trades.BTC-PERPETUAL.single",
                "recent_trades.BTC-PERPETUAL.all", "instruments", "system", "session.orders", "nonsense"]
    result = await client.result("public/subscribe", {"channels": channels})
    assert result == ["ticker.BTC-PERPETUAL.raw", "lwt.ETH-PERPETUAL.1000ms", "book.BTC-PERPETUAL.none.all.raw",
                      "price_index.BTCUSD", "recent_trades.BTCUSD.all", "recent_trades.BTC-PERPETUAL.single",
                      "instruments", "system"]
    assert await client.result("public/subscribe", {"channels": ["nonsense"]}) == []  # succeeds, empty
    assert await client.error("public/subscribe", {"channels": "ticker.BTC-PERPETUAL.raw"}) == 6


async def test_ticker_lwt_and_index_channels(venue: Venue, client: WsClient):
    await client.result("public/subscribe", {"channels": ["ticker.BTC-PERPETUAL.raw", "lwt.BTC-PERPETUAL.raw",
                                                          "price_index.BTCUSD"]})
    first = await client.notification("ticker.BTC-PERPETUAL.raw")
    assert set(first) == {"channel_name", "notification"}  # no snapshot flag on tickers
    assert set(first["notification"]) >= TICKER_PERPETUAL
    lwt = (await client.notification("lwt.BTC-PERPETUAL.raw"))["notification"]
    assert len(lwt["b"]) == 3 and len(lwt["a"]) == 3 and "m" in lwt
    await client.notification("price_index.BTCUSD")
    venue.step_market()
    index = (await client.notification("price_index.BTCUSD"))["notification"]
    assert index["index_name"] == "BTCUSD" and index["price"] == venue.market.index["BTCUSD"]
    ticker = (await client.notification("ticker.BTC-PERPETUAL.raw"))["notification"]
    assert ticker["index"] == index["price"] and ticker["mark_timestamp"] == index["timestamp"]


async def test_throttled_ticker_sends_the_latest_state(venue: Venue, client: WsClient):
    channel = "ticker.BTC-PERPETUAL.100ms"
    await client.result("public/subscribe", {"channels": [channel]})
    await client.notification(channel)
    for _ in range(10):  # ten steps inside one delay: one notification with the last state
        venue.step_market()
    latest = venue.engine.markets[BTC].mark_time
    note = await client.notification(channel)
    assert note["notification"]["mark_timestamp"] == latest


async def test_book_channel_snapshot_then_deltas(venue: Venue, client: WsClient, http, private_key: Path):
    channel = "book.BTC-PERPETUAL.none.all.raw"
    await client.result("public/subscribe", {"channels": [channel]})
    snapshot = await client.notification(channel)
    assert snapshot["snapshot"] is True
    body = snapshot["notification"]
    assert set(body) == {"trades", "bid_changes", "ask_changes", "total_bid_amount", "total_ask_amount", "time"}
    bids = {p: a for p, a, _o in body["bid_changes"]}
    assert body["total_bid_amount"] == pytest.approx(sum(bids.values()))
    trader = await connect(http, venue)
    await trader.login(private_key)
    order = await trader.result("private/insert", {"direction": "buy", "instrument_name": BTC, "amount": 0.25,
                                                   "price": 90000})
    delta = await client.notification(channel)
    assert "snapshot" not in delta
    assert delta["notification"]["bid_changes"] == [[90000, 0.25, 0.25]]
    await trader.result("private/cancel", {"order_id": order["order_id"]})
    delta = await client.notification(channel)
    assert delta["notification"]["bid_changes"] == [[90000, 0, 0]]  # amount 0: level gone
    best_ask = min(p for p, _a, _o in body["ask_changes"])
    await trader.result("private/buy", {"instrument_name": BTC, "amount": 0.1, "order_type": "market"})
    delta = await client.notification(channel, lambda n: n["notification"]["trades"] != [])
    price, amount, direction, stamp, implied = delta["notification"]["trades"][0]
    assert (price, amount, direction, implied) == (best_ask, 0.1, "buy", False) and stamp > 0
    await trader.ws.close()


async def test_book_grouping_and_levels(client: WsClient):
    # The house ladder: 0.5 BTC every 10 USD from 3 bp off the index; 20 USD buckets hold two levels.
    channel = "book.BTC-PERPETUAL.20.3.raw"
    assert await client.result("public/subscribe", {"channels": [channel]}) == [channel]
    body = (await client.notification(channel))["notification"]
    assert len(body["bid_changes"]) == 3 and len(body["ask_changes"]) == 3
    levels = body["bid_changes"] + body["ask_changes"]
    assert all(p % 20 == 0 for p, _a, _o in levels)
    assert max(a for _p, a, _o in levels) == 1.0


async def test_recent_trades_instruments_and_unsubscribe(venue: Venue, client: WsClient, http,
                                                         private_key: Path):
    await client.result("public/subscribe", {"channels": ["recent_trades.BTCUSD.all", "instruments",
                                                          "ticker.ETH-PERPETUAL.raw"]})
    assert (await client.notification("recent_trades.BTCUSD.all"))["notification"] == []
    instruments = await client.notification("instruments")
    assert instruments["snapshot"] is True
    assert {item["added"]["instrument_name"] for item in instruments["notification"]} == {BTC, ETH}
    trader = await connect(http, venue)
    await trader.login(private_key)
    await trader.result("private/sell", {"instrument_name": BTC, "amount": 0.002, "order_type": "market"})
    trade = (await client.notification("recent_trades.BTCUSD.all"))["notification"]
    assert len(trade) == 1
    price, size, side, stamp, instrument, implied = trade[0]
    assert (size, side, instrument, implied) == (0.002, "sell", BTC, False)
    result = await client.result("unsubscribe", {"channels": ["ticker.ETH-PERPETUAL.raw", "ticker.BTC-PERPETUAL.raw"]})
    assert result == ["ticker.ETH-PERPETUAL.raw"]
    await client.sync()
    client.take("ticker.ETH-PERPETUAL.raw")
    venue.step_market()
    await client.sync()
    assert client.take("ticker.ETH-PERPETUAL.raw") == []
    await trader.ws.close()


async def test_recent_trades_snapshot_has_earlier_trades(venue: Venue, client: WsClient, trader: WsClient):
    await trader.result("private/buy", {"instrument_name": BTC, "amount": 0.003, "order_type": "market"})
    await client.result("public/subscribe", {"channels": ["recent_trades.BTC-PERPETUAL.single"]})
    snapshot = (await client.notification("recent_trades.BTC-PERPETUAL.single"))["notification"]
    assert [t[1:3] for t in snapshot] == [[0.003, "buy"]]


# -- authentication ------------------------------------------------------------------

def test_create_keypair_writes_a_private_key_0600_and_a_trusted_public_key(tmp_path: Path):
    private, public = create_keypair(tmp_path / "venue", "K42")
    assert private == tmp_path / "venue" / "K42.private.pem" and (private.stat().st_mode & 0o777) == 0o600
    assert public == tmp_path / "venue" / "trusted_keys" / "K42.pem"
    assert b"PUBLIC KEY" in public.read_bytes() and b"PRIVATE KEY" in private.read_bytes()
    elsewhere = tmp_path / "trusted"
    _, public2 = create_keypair(tmp_path / "venue", "K43", trusted_keys_dir=elsewhere)
    assert public2 == elsewhere / "K43.pem"
    with pytest.raises(ValueError):
        create_keypair(tmp_path, "../escape")


def test_config_is_frozen_and_validated():
    config = VenueConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 2  # type: ignore[misc]
    for bad in ({"tick_interval": 0}, {"noise_rate": -1}, {"order_rate": 0}, {"max_outbox": 0}):
        with pytest.raises(ValueError):
            Venue(dataclasses.replace(config, **bad))


async def test_login_succeeds_with_rs256_384_512(venue: Venue, http, private_key: Path):
    for algorithm in ("RS256", "RS384", "RS512"):
        client = await connect(http, venue)
        token = sign_token(private_key, KID, algorithm=algorithm)
        assert await client.result("public/login", {"token": token}) == {"account_number": default_account(KID)}
        await client.ws.close()


async def test_login_with_a_sub_account(client: WsClient, private_key: Path):
    assert await client.login(private_key, account="A123456789") == {"account_number": "A123456789"}


async def test_login_failures(venue: Venue, http, tmp_path: Path, private_key: Path):
    client = await connect(http, venue)
    other_key, _ = create_keypair(tmp_path / "other", KID)  # same kid, key not trusted by the venue
    stranger, _ = create_keypair(tmp_path / "other", "K999")
    now = time.time()
    bad = {
        "bad signature": sign_token(other_key, KID),
        "unknown kid": sign_token(stranger, "K999"),
        "stale iat": sign_token(private_key, KID, iat=now - 60),
        "future iat": sign_token(private_key, KID, iat=now + 60),
        "hmac": jwt.encode({"iat": now}, "secret-secret-secret-secret-secret", algorithm="HS256",
                           headers={"kid": KID}),
        "not a jwt": "garbage",
    }
    for reason, token in bad.items():
        assert await client.error("public/login", {"token": token}) == 19, reason
    assert await client.error("public/login", {}) == 19
    good_iat = time.time()
    assert "account_number" in await client.result("public/login",
                                                   {"token": sign_token(private_key, KID, iat=good_iat)})
    again = await connect(http, venue)
    # iat must be strictly later than the last accepted one on this key: equal and earlier fail.
    assert await again.error("public/login", {"token": sign_token(private_key, KID, iat=good_iat)}) == 19
    assert await again.error("public/login", {"token": sign_token(private_key, KID, iat=good_iat - 1)}) == 19
    assert "account_number" in await again.result("public/login",
                                                   {"token": sign_token(private_key, KID, iat=good_iat + 0.001)})
    assert await again.error("public/login", {"token": sign_token(private_key, KID)}) == 6  # already logged in
    bad_account = await connect(http, venue)
    assert await bad_account.error("public/login", {"token": sign_token(private_key, KID),
                                                    "account": "not-an-account"}) == 6
    for c in (client, again, bad_account):
        await c.ws.close()


async def test_private_calls_before_login_fail_with_code_7(client: WsClient):
    for method, params in [("private/insert", {"direction": "buy", "instrument_name": BTC, "amount": 0.1,
                                               "price": 90000}),
                           ("private/open_orders", {}), ("private/subscribe", {"channels": ["session.orders"]}),
                           ("private/cancel_all", {}), ("private/set_cancel_on_disconnect", {"timeout_secs": 5}),
                           ("private/portfolio", {}), ("private/mass_quote", {"quotes": []})]:
        assert await client.error(method, params) == 7, method
    # Private channels through public/subscribe are simply not subscribed.
    assert await client.result("public/subscribe", {"channels": ["session.orders"]}) == []


# -- private methods and channels ---------------------------------------------------

async def test_insert_amend_cancel_and_order_feeds(trader: WsClient):
    subscribed = await trader.result("private/subscribe", {"channels": ["session.orders", "account.orders",
                                                                        "account.portfolio",
                                                                        "account.trade_history",
                                                                        "account.summary"]})
    assert len(subscribed) == 5
    for channel in ("session.orders", "account.orders", "account.portfolio"):
        snap = await trader.notification(channel)
        assert snap["snapshot"] is True and snap["notification"] == []
    summary_note = await trader.notification("account.summary")
    assert "snapshot" not in summary_note  # the summary is sent whole every time: no snapshot flag
    summary = summary_note["notification"]
    assert set(summary) == SUMMARY_FIELDS and summary["cash"][0]["currency"] == "USD"

    order = await trader.result("private/insert", {"direction": "buy", "instrument_name": BTC, "amount": 0.2,
                                                   "price": 95000, "client_order_id": 100, "label": "P",
                                                   "post_only": True})
    assert set(order) >= ORDER_REQUIRED and order["status"] == "open" and order["price"] == 95000
    assert order["label"] == "P" and order["client_order_id"] == 100 and order["persistent"] is True
    session_note = await trader.notification("session.orders")
    assert "snapshot" not in session_note and session_note["notification"] == [order]
    assert (await trader.notification("account.orders"))["notification"] == [order]

    amended = await trader.result("private/amend", {"client_order_id": 100, "price": 95005, "amount": 0.3})
    assert amended["change_reason"] == "amend" and amended["price"] == 95005 and amended["amount"] == 0.3
    assert await trader.error("private/amend", {"client_order_id": 100, "price": 95005.5, "amount": 0.3}) == 15
    assert await trader.error("private/amend", {"order_id": "nope", "price": 95005, "amount": 0.3}) == 1
    assert len(await trader.result("private/open_orders")) == 1
    cancelled = await trader.result("private/cancel", {"order_id": order["order_id"]})
    assert cancelled["status"] == "cancelled" and cancelled["delete_reason"] == "client_cancel"
    assert "close_time" in cancelled and cancelled["remaining_amount"] == 0
    assert await trader.error("private/cancel", {"client_order_id": 100}) == 1
    assert await trader.result("private/open_orders") == []

    bought = await trader.result("private/buy", {"instrument_name": BTC, "amount": 0.1, "order_type": "market"})
    assert bought["direction"] == "buy" and bought["status"] == "filled" and "price" not in bought
    fill = bought["fills"][0]
    assert set(fill) == {"trade_id", "price", "amount", "time", "maker_taker", "leg_index"}
    assert fill["maker_taker"] == "taker"
    trade = (await trader.notification("account.trade_history"))["notification"][0]
    assert set(trade) >= TRADE_FIELDS and trade["trade_id"] == fill["trade_id"]
    assert trade["fee"] == pytest.approx(fill["price"] * 0.1 * 0.0005)
    line = (await trader.notification("account.portfolio"))["notification"][0]
    assert set(line) == PORTFOLIO_FIELDS and line["position"] == 0.1
    assert [p["position"] for p in await trader.result("private/portfolio")] == [0.1]
    history = await trader.result("private/trade_history", {"limit": 10})
    assert [t["trade_id"] for t in history["trades"]] == [fill["trade_id"]]
    summary = await trader.result("private/account_summary")
    assert summary["session_realised_pnl"] == pytest.approx(-trade["fee"])
    sold = await trader.result("private/sell", {"instrument_name": BTC, "amount": 0.1, "price": 99000,
                                                "time_in_force": "immediate_or_cancel", "reduce_only": True})
    assert sold["direction"] == "sell" and sold["filled_amount"] == 0.1 and sold["reduce_only"] is True


async def test_order_errors_on_the_wire(trader: WsClient):
    base = {"direction": "buy", "instrument_name": BTC, "amount": 0.1, "price": 90000}
    cases = [({"price": 90000.5}, 15), ({"amount": 0.0005}, 14), ({"amount": 0.0015}, 14),
             ({"instrument_name": "NOPE"}, 5), ({"price": -1}, 13), ({"price": 200000}, 43),
             ({"order_type": "market", "price": None, "time_in_force": "good_till_cancelled"}, 25),
             ({"post_only": True, "time_in_force": "immediate_or_cancel"}, 25), ({"label": "no spaces"}, 6),
             ({"reduce_only": True}, 6), ({"legs": [{"instrument_name": BTC, "quantity": 1}]}, 6)]
    for change, code in cases:
        params = {k: v for k, v in {**base, **change}.items() if v is not None}
        assert await trader.error("private/insert", params) == code, change
    missing = {k: v for k, v in base.items() if k != "amount"}
    assert await trader.error("private/insert", missing) == 6
    await trader.result("private/insert", {**base, "client_order_id": 1})
    assert await trader.error("private/insert", {**base, "client_order_id": 1}) == 2


async def test_existing_orders_arrive_in_the_snapshot(trader: WsClient):
    order = await trader.result("private/insert", {"direction": "sell", "instrument_name": ETH, "amount": 1,
                                                   "price": 4000})
    await trader.result("private/subscribe", {"channels": ["session.orders", "account.orders"]})
    for channel in ("session.orders", "account.orders"):
        snap = await trader.notification(channel)
        assert snap["snapshot"] is True
        assert [(o["order_id"], o["change_reason"]) for o in snap["notification"]] == [(order["order_id"],
                                                                                        "existing")]


async def test_cancel_all(venue: Venue, http, trader: WsClient, private_key: Path):
    other = await connect(http, venue)
    await other.login(private_key)
    for c in (trader, other):
        await c.result("private/insert", {"direction": "buy", "instrument_name": BTC, "amount": 0.1,
                                          "price": 90000})
    assert await trader.result("private/cancel_all") == 2
    assert await other.result("private/open_orders") == []
    await other.ws.close()


async def test_cod_rate_mass_quote_and_mm_protection(venue: Venue, trader: WsClient):
    assert await trader.error("private/cancel_session") == 52
    assert await trader.error("private/mass_quote", {"quotes": []}) == 52
    assert await trader.error("private/set_cancel_on_disconnect", {}) == 6
    assert await trader.result("private/set_cancel_on_disconnect", {"timeout_secs": 6}) == {"message_rate": 10_000}
    await trader.result("private/subscribe", {"channels": ["session.mm_protection", "session.orders"]})
    await trader.notification("session.orders")
    result = await trader.result("private/mass_quote", {"quotes": [{"i": BTC, "b": [[99900, 0.2]]}]})
    assert result["n_success"] == 0 and result["n_fail"] == 1 and result["errors"][0]["code"] == 23
    assert await trader.result("private/set_mm_protection", {"product": "FBTCUSD", "trade_amount": 0.3,
                                                             "quote_amount": 0.5}) is None
    refill = (await trader.notification("session.mm_protection"))["notification"]
    assert refill == [{"product": "FBTCUSD", "remaining_amount": 0.3, "reason": "refill"}]
    assert await trader.error("private/set_mm_protection", {"product": "FNOPE", "amount": 1}) == 17
    result = await trader.result("private/mass_quote", {
        "quotes": [{"i": BTC, "b": [[99990, 0.2], [99980, 0.4]], "a": {"p": 100100, "a": 0.2}}],
        "label": "MQ", "post_only": True})
    assert result == {"n_success": 3, "n_fail": 0, "errors": []}
    inserted = (await trader.notification("session.orders"))["notification"]
    assert {(o["direction"], o["price"]) for o in inserted} == {("buy", 99990), ("buy", 99980), ("sell", 100100)}
    assert all(o["persistent"] is False and o["label"] == "MQ" for o in inserted)
    # A taker sweeps both bids (they are above the house's 99,970): 0.6 > 0.3 traded, the rest is pulled.
    venue.engine.insert("A000000042", 4242, instrument_name=BTC, direction="sell", amount=0.6,
                        order_type="market", now=time.time())
    venue.publish()
    pulled = (await trader.notification("session.mm_protection"))["notification"][0]
    assert pulled["reason"] == "executions" and pulled["remaining_amount"] <= 0
    cancelled = await trader.notification(
        "session.orders", lambda n: any(o.get("delete_reason") == "mm_protection" for o in n["notification"]))
    assert [o["price"] for o in cancelled["notification"] if o.get("delete_reason") == "mm_protection"] == [100100]
    assert await trader.result("private/cancel_mass_quote", {}) is None
    assert await trader.result("private/cancel_session") is None


async def test_default_message_rates_are_thalex_s(keys: tuple[Path, Path], http, private_key: Path):
    defaults = VenueConfig()
    assert (defaults.order_rate, defaults.order_rate_cod, defaults.cancel_rate) == (10, 50, 1000)
    venue = Venue(venue_config(keys[1], order_rate=defaults.order_rate, order_rate_cod=defaults.order_rate_cod))
    await venue.start()
    try:
        client = await connect(http, venue)
        await client.login(private_key)
        order = {"direction": "buy", "instrument_name": BTC, "amount": 0.001, "price": 90000}
        ids = [await client.send("private/insert", order) for _ in range(15)]
        codes = [(await client.response(i)).get("error", {}).get("code") for i in ids]
        assert codes[:10] == [None] * 10 and 4 in codes[10:]
        assert await client.result("private/set_cancel_on_disconnect", {"timeout_secs": 30}) == {"message_rate": 50}
        await client.ws.close()
    finally:
        await venue.stop()


async def test_message_rate_limits(keys: tuple[Path, Path], http, private_key: Path):
    venue = Venue(venue_config(keys[1], order_rate=5, order_rate_cod=20, cancel_rate=8))
    await venue.start()
    try:
        client = await connect(http, venue)
        await client.login(private_key)
        order = {"direction": "buy", "instrument_name": BTC, "amount": 0.001, "price": 90000}
        ids = [await client.send("private/insert", order) for _ in range(12)]
        codes = [(await client.response(i)).get("error", {}).get("code") for i in ids]
        assert codes[:5] == [None] * 5 and 4 in codes[5:]
        ids = [await client.send("private/cancel", {"order_id": "missing"}) for _ in range(15)]
        codes = [(await client.response(i))["error"]["code"] for i in ids]
        assert codes[:8] == [1] * 8 and 4 in codes[8:]
        assert (await client.result("private/set_cancel_on_disconnect", {"timeout_secs": 30}))["message_rate"] == 20
        await asyncio.sleep(1.0)  # let the bucket refill (1 s = the full burst at 20/s)
        ids = [await client.send("private/insert", order) for _ in range(30)]
        codes = [(await client.response(i)).get("error", {}).get("code") for i in ids]
        assert codes[:20] == [None] * 20 and 4 in codes[20:]
        await client.ws.close()
    finally:
        await venue.stop()


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
