"""Fixtures of the order gateway's tests: a still simulated venue with Thalex's message rates,
a quoting and a taking account, and gateways on fresh sessions (helpers: venue_setup.py)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.exchange.auth import Credentials
from app.gateway import OrderGateway
from app.trading.position import PositionKeeper
from app.venue import Venue, create_keypair
from tests.integration.gateway.venue_setup import BTC, PRODUCT, QUOTER, TAKER, Recorder, config, open_client


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[dict[str, Credentials], Path]:
    """Throwaway keys for the quoter's and the taker's accounts; the folder the venue trusts."""
    folder = tmp_path_factory.mktemp("gateway-keys")
    credentials = {}
    for kid in (QUOTER, TAKER):
        private, _ = create_keypair(folder, kid, folder / "trusted")
        credentials[kid] = Credentials.from_file(kid, private)
    return credentials, folder / "trusted"


@pytest.fixture
async def venue(keys):
    v = Venue(config(keys[1]))
    await v.start()
    yield v
    await v.stop()


@pytest.fixture
async def fresh_quoter(venue, keys):
    """(client, gateway, recorder), just started; the gateway keeps a PositionKeeper of the test's."""
    client = await open_client(venue, keys[0][QUOTER])
    recorder = Recorder()
    gateway = OrderGateway(client, on_ack=recorder.acks.append, on_fill=recorder.fills.append,
                           positions=PositionKeeper())
    await gateway.start()
    yield client, gateway, recorder
    await gateway.close()
    await client.close()


@pytest.fixture
async def quoter(fresh_quoter):
    """The same, half a second later: a new session may send only 10 orders in its first
    moments (the venue's bucket keeps its pre-COD tokens), and the tests below count on
    every action going out at once."""
    await asyncio.sleep(0.5)
    return fresh_quoter


@pytest.fixture
async def taker(venue, keys):
    client = await open_client(venue, keys[0][TAKER])
    yield client
    await client.close()


@pytest.fixture
async def mass_quoter(venue, keys):
    """(client, gateway, recorder) of a mass-quoting gateway, half a second after start."""
    client = await open_client(venue, keys[0][QUOTER])
    recorder = Recorder()
    gateway = OrderGateway(client, on_ack=recorder.acks.append, on_fill=recorder.fills.append, mass_quote=True,
                           products={BTC: PRODUCT}, mm_trade_amount=0.5, mm_quote_amount=1.0, mm_refill_delay_s=0.3)
    await gateway.start()
    await asyncio.sleep(0.5)
    yield client, gateway, recorder
    await gateway.close()
    await client.close()
