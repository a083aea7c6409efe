"""A bare JSON-RPC client for the simulated venue's wire tests, and a still venue to test against.

The client is deliberately minimal (aiohttp's ws_connect and orjson), not the project's
Thalex client, so the tests check the wire protocol of docs/thalex-protocol.md and nothing
else. The venue's market timer is off (``market_running=False``) and the takers are silent:
each test moves the market itself with ``venue.step_market()``.

A request sent after something happened is answered after every notification that thing
produced (one connection, one ordered outbox), so ``client.sync()`` is how a test waits for
notifications without sleeping. The fixtures built on these (keys, venue, client, trader)
are in tests/integration/conftest.py.
"""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import aiohttp
import orjson

from app.stack.process import free_port
from app.venue import Venue, VenueConfig, sign_token

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


async def connect(http: aiohttp.ClientSession, venue: Venue) -> WsClient:
    return WsClient(await http.ws_connect(venue.url))
