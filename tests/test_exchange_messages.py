"""Parsing what the venue sends, and the client's routing of it: never a crash on bad input."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

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
    # channel_name wins over result, result over error (thalex_api.md §1.4)
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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
message_like = st.fixed_dictionaries({}, optional={
    "channel_name": st.sampled_from(["ticker.BTC-PERPETUAL.raw", "system", "nope", ""]) | json_values,
    "notification": json_values, "snapshot": json_values, "id": json_values,
    "result": json_values, "error": json_values | st.fixed_dictionaries({"code": json_values, "message": json_values}),
})


# too_slow: the first draws of this recursive strategy once took 1.5 s on a busy machine;
# the speed of generating inputs is not what this test is about.
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=64), message_like.map(orjson.dumps)))
def test_fuzz_the_parser_returns_a_message_or_a_protocol_error(raw):
    try:
        result = messages.parse(raw)
    except ProtocolError:
        return
    assert isinstance(result, (Notification, Result, ErrorReply))


@settings(max_examples=800)
@given(st.lists(st.one_of(st.binary(max_size=48), message_like.map(orjson.dumps)), max_size=20))
def test_fuzz_the_client_never_raises_and_counts_everything(raws):
    """The client's router against garbage: every message is counted, none escapes as an exception."""
    client = ThalexClient("ws://127.0.0.1:1/unused")
    seen: list[Notification] = []

    def strict_handler(n: Notification) -> None:
        seen.append(n)
        n.payload["best_bid_price"] + 1  # a handler that trusts the payload, as real ones do

    client._handlers["ticker.BTC-PERPETUAL.raw"] = [strict_handler]
    for raw in raws:
        client.handle(raw)
    stats = client.stats
    assert stats["messages"] == len(raws)
    kinds = ("malformed", "notifications", "unmatched_replies")
    assert sum(stats[k] for k in kinds) == len(raws)
    assert stats["bad_notifications"] <= len(seen) <= stats["notifications"]


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
