"""Parsing what the venue sends, and the client's routing of it: never a crash on bad input."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from app.exchange import messages
from app.exchange.client import ThalexClient, ThalexError
from app.exchange.messages import ErrorReply, Notification, ProtocolError, Result


def test_the_three_kinds_of_message():
    n = messages.parse(b'{"channel_name":"book.BTC-PERPETUAL.none.all.raw","notification":{"x":1},"snapshot":true}')
    assert n == Notification("book.BTC-PERPETUAL.none.all.raw", {"x": 1}, True)
    assert messages.parse('{"channel_name":"ticker.X.raw","notification":[]}').snapshot is False
    assert messages.parse('{"id":3,"result":{"account_number":"A1"}}') == Result(3, {"account_number": "A1"})
    assert messages.parse('{"id":4,"result":null}') == Result(4, None)
    assert messages.parse('{"id":5,"error":{"code":4,"message":"throttled"}}') == ErrorReply(5, 4, "throttled")
    assert messages.parse('{"id":null,"error":{"code":7}}') == ErrorReply(None, 7, "")


def test_routing_order_follows_the_examples():
    # channel_name wins over result, result over error (docs/thalex-protocol.md §1.4)
    assert isinstance(messages.parse('{"channel_name":"c","notification":1,"result":2}'), Notification)
    assert isinstance(messages.parse('{"id":1,"result":2,"error":{"code":1}}'), Result)


@pytest.mark.parametrize("raw,reason", [
    (b"{not json", "malformed JSON"),
    (b"[1,2]", "expected a JSON object"),
    (b'{"channel_name":5,"notification":{}}', "channel_name"),
    (b'{"channel_name":"c"}', "no 'notification'"),
    (b'{"id":1,"error":"bad"}', "'error' must be an object"),
    (b'{"id":1,"error":{"code":"4"}}', "error code must be an integer"),
    (b'{"id":1}', "neither"),
])
def test_bad_messages_say_what_is_wrong(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        messages.parse(raw)


def test_request_frame():
    assert orjson.loads(messages.request("public/instruments", None, 7)) == {
        "method": "public/instruments", "params": {}, "id": 7}


async def test_replies_are_matched_by_id_in_any_order():
    client = ThalexClient("ws://127.0.0.1:1/unused")
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    client._pending[1] = ("public/ticker", first)
    client._pending[2] = ("private/insert", second)
    client.handle(b'{"id":2,"error":{"code":15,"message":"price not aligned"}}')
    client.handle(b'{"id":1,"result":{"mark_price":1.5}}')
    client.handle(b'{"id":99,"result":1}')
    assert first.result() == {"mark_price": 1.5}
    with pytest.raises(ThalexError) as error:
        second.result()
    assert (error.value.code, error.value.method) == (15, "private/insert")
    assert client.stats["unmatched_replies"] == 1
