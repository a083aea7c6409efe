"""Cancel-on-disconnect over the wire (docs/thalex-protocol.md §4.1, §4.6, §6.3).

A COD session's orders die when it disconnects, when it sends nothing for
``timeout_secs`` (a websocket ping counts as traffic), and on ``cancel_session``;
orders inserted before COD was set, and orders of other sessions, survive.
An observer connection on the same account watches ``account.orders``.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from app.venue import Venue
from tests.integration.venue_wire import BTC, TIMEOUT, WsClient, connect

ORDER = {"direction": "buy", "instrument_name": BTC, "amount": 0.01}


@pytest.fixture
async def observer(http, venue: Venue, private_key: Path) -> WsClient:
    client = await connect(http, venue)
    await client.login(private_key)
    await client.result("private/subscribe", {"channels": ["account.orders"]})
    await client.notification("account.orders")  # the snapshot
    yield client
    await client.ws.close()


async def deleted(observer: WsClient, order_id: str) -> dict:
    note = await observer.notification(
        "account.orders", lambda n: any(o["order_id"] == order_id and "delete_reason" in o for o in n["notification"]))
    return next(o for o in note["notification"] if o["order_id"] == order_id)


async def open_ids(client: WsClient) -> set[str]:
    return {o["order_id"] for o in await client.result("private/open_orders")}


async def test_disconnect_deletes_cod_orders_only(http, venue: Venue, private_key: Path, observer: WsClient):
    others = await observer.result("private/insert", {**ORDER, "price": 80000})
    quoter = await connect(http, venue)
    await quoter.login(private_key)
    before = await quoter.result("private/insert", {**ORDER, "price": 81000})
    assert before["persistent"] is True
    await quoter.result("private/set_cancel_on_disconnect", {"timeout_secs": 30})
    after = await quoter.result("private/insert", {**ORDER, "price": 82000})
    assert after["persistent"] is False
    await quoter.ws.close()
    gone = await deleted(observer, after["order_id"])
    assert gone["delete_reason"] == "session_end" and gone["status"] == "cancelled"
    assert await open_ids(observer) == {others["order_id"], before["order_id"]}


async def test_silence_past_the_timeout_deletes_cod_orders(http, venue: Venue, private_key: Path,
                                                           observer: WsClient):
    quoter = await connect(http, venue)  # aiohttp sends no pings unless asked: the session goes quiet
    await quoter.login(private_key)
    before = await quoter.result("private/insert", {**ORDER, "price": 81000})
    await quoter.result("private/set_cancel_on_disconnect", {"timeout_secs": 0.3})
    after = await quoter.result("private/insert", {**ORDER, "price": 82000})
    gone = await deleted(observer, after["order_id"])
    assert gone["delete_reason"] == "session_end"
    assert await open_ids(observer) == {before["order_id"]}
    msg = await asyncio.wait_for(quoter.ws.receive(), TIMEOUT)  # and the venue hangs up
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


async def test_pings_count_as_traffic(http, venue: Venue, private_key: Path, observer: WsClient):
    quoter = await connect(http, venue)
    await quoter.login(private_key)
    await quoter.result("private/set_cancel_on_disconnect", {"timeout_secs": 0.5})
    order = await quoter.result("private/insert", {**ORDER, "price": 82000})
    for _ in range(12):  # 1.2 s of pings only, one every 0.1 s: more than twice the timeout
        await quoter.ws.ping()
        await asyncio.sleep(0.1)
    assert order["order_id"] in await open_ids(observer)
    gone = await deleted(observer, order["order_id"])  # pings stop: the timeout runs out
    assert gone["delete_reason"] == "session_end"
    await quoter.ws.close()


async def test_cancel_session_deletes_cod_orders_and_keeps_the_socket(http, venue: Venue, private_key: Path,
                                                                      observer: WsClient):
    quoter = await connect(http, venue)
    await quoter.login(private_key)
    await quoter.result("private/subscribe", {"channels": ["session.orders"]})
    await quoter.notification("session.orders")  # the (empty) snapshot
    before = await quoter.result("private/insert", {**ORDER, "price": 81000})
    await quoter.result("private/set_cancel_on_disconnect", {"timeout_secs": 30})
    after = [await quoter.result("private/insert", {**ORDER, "price": 82000 + i}) for i in range(3)]
    assert await quoter.result("private/cancel_session") is None
    note = await quoter.notification(
        "session.orders", lambda n: all(o.get("delete_reason") == "session_end" for o in n["notification"]))
    assert {o["order_id"] for o in note["notification"]} == {o["order_id"] for o in after}
    assert await open_ids(quoter) == {before["order_id"]}
    again = await quoter.result("private/insert", {**ORDER, "price": 83000})  # still a COD session
    assert again["persistent"] is False
    await quoter.ws.close()
    assert (await deleted(observer, again["order_id"]))["delete_reason"] == "session_end"
    assert await open_ids(observer) == {before["order_id"]}
