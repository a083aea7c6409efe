"""The simulated venue over its websocket: login and the private methods and channels
(orders, order feeds, cancel_all, mass quotes and MM protection), with the bare client of
tests/integration/venue_wire.py."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import jwt
import pytest

from app.venue import Venue, VenueConfig, create_keypair, default_account, sign_token
from tests.integration.venue_wire import (
    BTC,
    ETH,
    KID,
    ORDER_REQUIRED,
    PORTFOLIO_FIELDS,
    SUMMARY_FIELDS,
    TRADE_FIELDS,
    WsClient,
    connect,
    venue_config,
)

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
