"""The market maker against the simulated venue: quote agent, risk gate and order gateway.

Real parts: the venue in this process (its market stepped by the test, so the test knows
when it is still), a Tansu broker, the schema registry, and `cryptics worker` as a child
process with the default quoting parameters (Thalex's perp_quoter, docs/thalex-protocol.md §7.1).

- after each market step, our orders rest where the parameters put them: every level
  within the amend threshold of the ladder the core computes from the venue's index,
  book and our position (under the position limit the worker was given), at exactly the
  ladder's size; fills arrive, position and PnL move;
- informed one-sided flow for several minutes of market time: the position never passes
  the risk limit, checked on every fill the venue booked for us; then REDUCING keeps only
  the side that reduces the position, and HALTED leaves nothing in the book;
- the kill switch: a drawdown past the limit halts quoting and pulls every order.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from app.gateway import GatewayParams
from app.stack.process import Child, environ_for_child, free_port, spawn
from app.trading import quote as quote_core
from app.trading.quote_params import QuoteParams
from app.trading.risk import RiskLimits
from app.venue import Venue, VenueConfig, create_keypair

from .conftest import ROOT, cryptics

INSTRUMENT = "BTC-PERPETUAL"
KID = "test-quoter"
TICK = 1.0
SIZE_STEP = 0.001


def _get(port: int, path: str) -> dict:
    # generous: a worker's event loop can be slow to answer on a loaded machine
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


#: The worker's web token (CRYPTICS_WEB_TOKEN): state-changing endpoints want it.
TOKEN = "test-token-" + "x" * 24


def _post(port: int, path: str, body: dict, token: Optional[str] = TOKEN) -> dict:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _refused(port: int, body: dict, token: Optional[str]) -> tuple[int, dict]:
    try:
        _post(port, "/quoting/state/", body, token)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    raise AssertionError("the POST was accepted")


class Market:
    """The venue, our account on it, and the worker that quotes there."""

    def __init__(self, broker, registry_url: str, tmp_path: Path, venue: dict[str, Any], env: dict[str, str]) -> None:
        keys = tmp_path / "keys"
        private_key, _ = create_keypair(keys, KID, keys / "trusted")
        self.venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=keys / "trusted",
                                               market_running=False, **venue))
        self.port = free_port()
        self.env = {
            "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
            "CRYPTICS_WEB_PORT": str(self.port), "CRYPTICS_STATE_DIR": str(tmp_path / "state"),
            "CRYPTICS_HEARTBEAT_INTERVAL": "0", "CRYPTICS_THALEX_KEY_ID": KID,
            "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private_key), "CRYPTICS_INSTRUMENTS": INSTRUMENT,
            "CRYPTICS_WEB_TOKEN": TOKEN, **env,
        }
        #: The one position limit (the risk gate's, which the worker's quote core sizes against).
        self.position_limit = float(env.get("CRYPTICS_RISK_MAX_POSITION", RiskLimits().max_position))
        self.log = tmp_path / "worker.log"
        self.worker: Optional[Child] = None
        self.clock = time.time()  # market time: the test advances it faster than the wall clock

    @property
    def account(self) -> str:
        return next(c.account for c in self.venue.connections if c.kid == KID and c.account)

    async def start(self) -> None:
        await self.venue.start()
        self.env["CRYPTICS_VENUE_URL"] = self.venue.url
        self.worker = spawn("worker", cryptics("worker"), log_path=self.log, env=environ_for_child(self.env), cwd=ROOT)
        # The market moves only when stepped: step it until the quote agent has priced and quoted.
        await self.poll(lambda: self.orders() or self.step(), "our first orders on the venue", 90, interval=0.1)

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=30)
            assert self.worker.popen.returncode == 0, self.worker.log_tail(60)
        await self.venue.stop()

    async def poll(self, predicate: Callable[[], Any], what: str, timeout: float = 10.0, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.worker is not None and self.worker.alive(), f"worker died:\n{self.worker.log_tail(60)}"
            try:
                last = predicate()
                if last:
                    return last
            except (OSError, StopIteration):
                pass
            await asyncio.sleep(interval)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r}); worker log:\n"
                             f"{self.worker.log_tail(60) if self.worker else ''}")

    def step(self, seconds: float = 0.1) -> None:
        self.clock += seconds
        self.venue.step_market(self.clock)

    def orders(self) -> list[dict]:
        """Our resting orders on the venue."""
        return [o for o in self.venue.engine.open_orders(self.account) if o["instrument_name"] == INSTRUMENT]

    def sides(self) -> tuple[list[dict], list[dict]]:
        orders = self.orders()
        bids = sorted((o for o in orders if o["direction"] == "buy"), key=lambda o: -o["price"])
        asks = sorted((o for o in orders if o["direction"] == "sell"), key=lambda o: o["price"])
        return bids, asks

    def position(self) -> float:
        return sum(p["position"] for p in self.venue.engine.portfolio(self.account) if p["instrument_name"] == INSTRUMENT)

    def trades(self) -> list[dict]:
        return list(self.venue.engine.account(self.account).trades)

    def expected_ladder(self, params: QuoteParams) -> quote_core.Ladder:
        """The ladder the core computes from what the venue shows now (its book includes our orders)."""
        engine = self.venue.engine
        best_bid, best_ask = _best(engine.public_book(INSTRUMENT))
        index = engine.index("BTCUSD")["price"]
        return quote_core.compute(params, tick_size=TICK, size_step=SIZE_STEP, position_limit=self.position_limit,
                                  index=index, best_bid=best_bid, best_ask=best_ask, position=self.position())

    def view(self) -> dict:
        return _get(self.port, "/quoting/")


def _best(book: Optional[dict]) -> tuple[float, float]:
    nan = float("nan")
    if not book:
        return nan, nan
    bids = [level[0] for level in book.get("bids", [])]
    asks = [level[0] for level in book.get("asks", [])]
    return (max(bids) if bids else nan), (min(asks) if asks else nan)


def _matches(market: Market, params: QuoteParams) -> Optional[tuple]:
    """Our resting ladder agrees with the parameters: prices within the amend threshold, sizes exact."""
    want = market.expected_ladder(params)
    bids, asks = market.sides()
    threshold = GatewayParams().amend_threshold_ticks * TICK  # the worker's gateway runs on the defaults
    for orders, prices, sizes in ((bids, want.bid_prices, want.bid_sizes), (asks, want.ask_prices, want.ask_sizes)):
        if len(orders) != len(prices):
            return None
        for order, price, size in zip(orders, prices, sizes):
            if abs(order["price"] - price) > threshold + 1e-9 or abs(order["amount"] - size) > 1e-9:
                return None
    return want, bids, asks


@pytest.mark.parametrize("mass_quote", [False, True], ids=["orders", "mass_quote"])
async def test_orders_rest_at_the_configured_prices_after_each_tick(broker, registry_url, tmp_path, mass_quote):
    # Both modes run on the default position limit (1.0), the one the core sizes the expected
    # ladder against (Market.position_limit). With mass quotes the gateway's pre-trade check
    # counts the side being replaced as fillable too (0.6 + 0.6 per side), so it often holds
    # the new side's deeper levels back; they go out on the re-quote once the venue has read
    # the new side, and the ladder must still end up exactly as the core wants it.
    env = {"CRYPTICS_GATEWAY_MASS_QUOTE": "1"} if mass_quote else {}
    market = Market(broker, registry_url, tmp_path, venue={"seed": 5, "noise_rate": 30.0, "informed_rate": 0.0},
                    env=env)
    params = QuoteParams()  # the defaults: what `cryptics up` quotes out of the box
    await market.start()
    try:
        checked, spreads = 0, []
        for _ in range(60):
            market.step()
            want, bids, asks = await market.poll(lambda: _matches(market, params), "the ladder after a tick", 10)
            checked += 1
            if bids and asks:
                spreads.append(asks[0]["price"] - bids[0]["price"])
        trades = market.trades()  # the market is still between steps: no more trades come
        # The venue records a trade before its fill notification reaches the worker.
        view = await market.poll(lambda: (v := market.view())["gateway"]["fills"] == len(trades) and v,
                                 "the last fills to reach the worker", 10)
        if mass_quote:  # a protection pulled in the last steps is refilled within its delay (1 s)
            view = await market.poll(lambda: (v := market.view())["gateway"]["protection_refills"]
                                     == v["gateway"]["protection_pulls"] and v, "the last refill", 10)
    finally:
        await market.stop()
    assert checked == 60
    # perp_quoter's ladder: 2 levels a side, 25 ticks from the index, 5 ticks apart, 0.2 then 0.4
    reference = quote_core.compute(params, tick_size=TICK, size_step=SIZE_STEP, position_limit=1.0, index=100_000.4)
    assert reference.bid_prices == (99_975.0, 99_970.0) and reference.ask_prices == (100_026.0, 100_031.0)
    assert reference.bid_sizes == (0.2, 0.4) == reference.ask_sizes
    assert spreads and all(44 <= s <= 62 for s in spreads), spreads  # 2×25 ticks, ± rounding and threshold
    # fills arrived, position and PnL moved
    assert trades and view["gateway"]["fills"] == len(trades)
    assert view["instruments"][INSTRUMENT]["position"] == pytest.approx(trades[-1]["position_after"])
    assert view["instruments"][INSTRUMENT]["pnl"] not in (None, 0.0)
    gateway = view["gateway"]
    assert view["errors"] == 0, view
    if not mass_quote:
        # code 1 (order not found) is the one expected error: a taker filled the order while our
        # amend was on its way
        assert set(gateway["errors_by_code"]) <= {"1"}, gateway
    else:
        # Every order was a quote. The takers use up MM protection (1.0) now and then: the venue
        # pulls the quotes and the gateway refills. The one expected error is 22 on a level of a
        # quote that was on its way as the protection ran out.
        assert gateway["mass_quotes"] > 0 and gateway["inserts"] == gateway["amends"] == 0, gateway
        assert set(gateway["errors_by_code"]) <= {"22"}, gateway
        assert gateway["quote_levels_failed"] == gateway["errors_by_code"].get("22", 0)
        assert gateway["protection_refills"] == gateway["protection_pulls"], gateway
        # The D9 samples time each mass quote once, from its request to its first answer, not
        # from an old quote's request to the report that a later quote replaced it.
        from app.pipeline.codec import AvroCodec
        from app.pipeline.topics import read_until_quiet
        from models.registry import record
        latency = record("latency")
        codec = AvroCodec(latency.subject, latency.schema, registry_url)
        samples = [v for v in (codec.loads(m.value) for m in await read_until_quiet(broker.bootstrap, latency.topic))
                   if v["stage"] == "order_sent_to_ack_received"]
        assert 0 < len(samples) <= gateway["mass_quotes"], (len(samples), gateway["mass_quotes"])
        # Timed from the wrong request, most samples would last as long as a quote rests; a loaded
        # machine delays a few answers past a second, not the middle of them.
        durations = sorted(v["duration_us"] for v in samples)
        assert durations[len(durations) // 2] < 500_000 and durations[-1] < 5_000_000, durations[-5:]


#: A venue where informed takers see the index 30 s ahead and a trending, jumpy market.
INFORMED_FLOW = {"noise_rate": 2.0, "informed_rate": 25.0, "informed_horizon": 30.0,
                 "jump_rate": 600.0, "jump_size": 0.003, "volatility": 2.0}


@pytest.mark.parametrize("mass_quote", [False, True], ids=["orders", "mass_quote"])
async def test_informed_flow_reducing_and_halted(broker, registry_url, tmp_path, mass_quote):
    # Informed takers see the index 30 s ahead and trade against us one way, in a market
    # that trends; the risk limit (1 BTC) must hold on every fill, with mass quotes too
    # (their replacement is not volume-safe: the gateway's pre-trade check must cover it).
    env = {"CRYPTICS_RISK_MAX_DRAWDOWN": "1000000000"}
    if mass_quote:
        env["CRYPTICS_GATEWAY_MASS_QUOTE"] = "1"
    market = Market(broker, registry_url, tmp_path, venue={"seed": 9, **INFORMED_FLOW}, env=env)
    await market.start()
    try:
        limit = market.position_limit  # the default risk limit: 1 BTC
        for _ in range(1800):  # 1,800 steps of 0.1 s: 3 minutes of market time
            market.step()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        trades = market.trades()
        worst = max(abs(t["position_after"]) for t in trades)
        assert worst <= limit + 1e-9, f"position reached {worst}"
        assert worst >= 0.5 * limit, f"the flow never pushed the position ({worst}): the test proved nothing"

        # Switching needs the token: without it, or with another, 401 and nothing changes.
        for token in (None, "not-the-token"):
            status, answer = _refused(market.port, {"state": "halted", "reason": "anyone"}, token)
            assert status == 401 and "token" in answer["error"], answer
            assert market.view()["state"] == "active"
        # A refused switch leaves the worker quoting. The book can be empty for a moment (a
        # mass quote's protection pull after a fill), so wait for quotes rather than look once.
        await market.poll(lambda: bool(market.orders()), "quotes after the refused requests", 10)
        assert market.view()["state"] == "active"

        # REDUCING: only the side that brings the position back to flat, never past it
        _post(market.port, "/quoting/state/", {"state": "reducing", "reason": "test"})
        position = market.position()

        def reducing_only() -> bool:
            bids, asks = market.sides()
            wrong, right = (bids, asks) if position > 0 else (asks, bids)
            return not wrong and sum(o["amount"] for o in right) <= abs(position) + 1e-9
        # The switch takes effect at the venue once it has read the worker's cancels: until then
        # a resting order of the wrong side can still be filled by the next step (as on any
        # venue). The market is still meanwhile, so nothing fills while we wait.
        await market.poll(reducing_only, f"only reducing orders at position {position}", 10)
        start_position, booked = market.position(), len(market.trades())
        assert start_position == position
        for _ in range(20):
            market.step()
            position = market.position()
            await market.poll(reducing_only, f"only reducing orders at position {position}", 10)
        # every fill while reducing moved the position towards zero and never across it
        away, before = [], start_position
        for trade in market.trades()[booked:]:
            after = trade["position_after"]
            if abs(after) > abs(before) + 1e-9 or after * before < 0:
                away.append((before, after))
            before = after
        assert market.view()["state"] == "reducing"

        _post(market.port, "/quoting/state/", {"state": "halted", "reason": "test"})
        await market.poll(lambda: not market.orders(), "no orders once halted", 10)
        for _ in range(10):
            market.step()
            await asyncio.sleep(0.05)
        assert not market.orders()
        view = market.view()
    finally:
        await market.stop()
    assert view["state"] == "halted" and view["instruments"][INSTRUMENT]["bids"] == []
    assert not away, away
    assert set(view["gateway"]["errors_by_code"]) <= ({"22"} if mass_quote else {"1"}), view["gateway"]
    if mass_quote:
        assert view["gateway"]["mass_quotes"] > 0 and view["gateway"]["inserts"] == 0, view["gateway"]


async def test_kill_switch_halts_and_pulls_every_order(broker, registry_url, tmp_path):
    market = Market(broker, registry_url, tmp_path, venue={"seed": 3, **INFORMED_FLOW},
                    env={"CRYPTICS_RISK_MAX_DRAWDOWN": "20"})
    await market.start()
    try:
        for _ in range(3000):
            market.step()
            await asyncio.sleep(0.01)
            if market.view()["kill_switch"]:
                break
        view = await market.poll(lambda: (v := market.view())["kill_switch"] and v, "the kill switch", 10)
        await market.poll(lambda: not market.orders(), "every order pulled", 10)
        for _ in range(10):
            market.step()
            await asyncio.sleep(0.05)
        after = market.orders()
        final = market.view()
    finally:
        await market.stop()
    assert view["instruments"][INSTRUMENT]["pnl"] < -20
    assert after == [] and final["kill_switch"] and final["instruments"][INSTRUMENT]["bids"] == []
