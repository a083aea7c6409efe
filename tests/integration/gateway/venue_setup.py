"""OrderGateway (app/gateway/) against the real simulated venue, over loopback websockets.

No mocks: the venue runs in-process on a free port with Thalex's message rates (10/s,
50/s after cancel-on-disconnect, 1000/s for cancels; the throttle test lowers the last),
a still market (no timer, no takers) and no house liquidity, so the book holds exactly
what the tests put there.
What rests is read from the venue's own records (its engine and its connections);
fills come from a second account trading against us over its own websocket.

The constants and helpers the tests of this folder share; their fixtures are in conftest.py.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from app.exchange.auth import Credentials
from app.exchange.client import ThalexClient
from app.gateway import OrderGateway, QuoteStamps
from app.stack.process import free_port
from app.venue import Venue, VenueConfig

BTC = "BTC-PERPETUAL"


TICK = 1.0


QUOTER, TAKER = "K-gateway-quoter", "K-gateway-taker"


BIDS = [(99_900.0, 0.2), (99_895.0, 0.4)]


ASKS = [(100_100.0, 0.2), (100_105.0, 0.4)]


def shifted(ladder, ticks: float):
    return [(price + ticks * TICK, amount) for price, amount in ladder]


def stamps(offset_ms: int = 0) -> QuoteStamps:
    received = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=offset_ms)
    return QuoteStamps(received_at=received, quoted_at=received + timedelta(microseconds=8))


def config(trusted_keys_dir: Path, **changes) -> VenueConfig:
    base = VenueConfig(port=free_port(), trusted_keys_dir=trusted_keys_dir, market_running=False, noise_rate=0.0,
                       informed_rate=0.0, house_levels=0)
    return dataclasses.replace(base, **changes)


class Recorder:
    """The agent's side of the callbacks: everything the gateway hands over, in order."""

    def __init__(self) -> None:
        self.acks = []
        self.fills = []


async def open_client(venue: Venue, credentials: Credentials) -> ThalexClient:
    client = ThalexClient(venue.url, credentials, reconnect_min_delay=0.05, reconnect_max_delay=0.2)
    await client.start()
    return client


def connection(venue: Venue, client: ThalexClient):
    """The venue's record of the client's session (one connection per account here)."""
    conns = list(venue.account_connections[client.account])
    assert len(conns) == 1, conns
    return conns[0]


def resting(venue: Venue, client: ThalexClient) -> set[tuple]:
    """(direction, price, amount) of every order the venue holds for the client's account."""
    return {(o["direction"], o["price"], o["remaining_amount"]) for o in venue.engine.open_orders(client.account)}


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def settle(client: ThalexClient, gateway: OrderGateway) -> None:
    """Every answer in, and every notification the venue queued before now read (one ordered outbox)."""
    await gateway.wait_idle(5.0)
    await client.call("public/system_info")


PRODUCT = "FBTCUSD"


def quotes_by_price(venue: Venue, client: ThalexClient) -> dict[tuple[str, float], str]:
    """(direction, price) → order_id of each order the venue holds for the client's account: all quotes."""
    held = {o["order_id"]: o for o in venue.engine.open_orders(client.account)}
    assert all(venue.engine.orders[order_id].is_quote and "client_order_id" not in o for order_id, o in held.items())
    return {(o["direction"], o["price"]): order_id for order_id, o in held.items()}
