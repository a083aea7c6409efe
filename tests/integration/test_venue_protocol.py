"""The simulated venue over its websocket: the envelope, public methods and public channels.

Tested with the bare client of tests/integration/venue_wire.py; the private side is in
test_venue_private.py, rates, the probe, shutdown and frames in test_venue_transport.py.
"""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from app.venue import Venue
from tests.integration.venue_wire import BTC, ETH, INSTRUMENT_FIELDS, TICKER_PERPETUAL, WsClient, connect

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
