"""produce_later (app/faust_app.py): Kafka produces deferred until the event loop is done with
the current callback, in order, one failure costing nothing else. Pure scheduling logic: the
Faust topic is replaced by a recorder (the real produce path is in test_market_data)."""
from __future__ import annotations

import asyncio

import pytest

import app.faust_app as faust_app


class Recorder:
    def __init__(self, name: str, sent: list) -> None:
        self.name, self.sent = name, sent

    def send_soon(self, key, value) -> None:
        if value == "unencodable":
            raise ValueError("schema says no")
        self.sent.append((self.name, key, value))


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list:
    out: list = []
    monkeypatch.setattr(faust_app, "record_topic", lambda name: Recorder(name, out))
    return out


async def test_produces_wait_for_the_current_callback_and_keep_their_order(sent):
    built = []

    def build():
        built.append("ticker")
        return "ticker-record"

    faust_app.produce_later("ticker", "BTC-PERPETUAL", build)
    faust_app.produce_later("index", "BTCUSD", "index-record")
    # Nothing is built or sent while the caller (the hot path) is still running.
    assert sent == [] and built == []
    await asyncio.sleep(0)
    assert sent == [("ticker", "BTC-PERPETUAL", "ticker-record"), ("index", "BTCUSD", "index-record")]
    assert built == ["ticker"]
    faust_app.produce_later("quote", "BTC-PERPETUAL", "again")  # a new burst schedules a new flush
    await asyncio.sleep(0)
    assert sent[-1] == ("quote", "BTC-PERPETUAL", "again")


async def test_a_record_that_cannot_be_built_or_encoded_costs_nothing_else(sent):
    errors: list[Exception] = []

    def broken():
        raise KeyError("delta")

    faust_app.produce_later("ticker", "a", broken, errors.append)
    faust_app.produce_later("ticker", "b", "fine")
    faust_app.produce_later("ticker", "c", "unencodable", errors.append)
    faust_app.produce_later("ticker", "d", "also fine")
    await asyncio.sleep(0)
    assert [key for _name, key, _value in sent] == ["b", "d"]
    assert [type(e) for e in errors] == [KeyError, ValueError]
