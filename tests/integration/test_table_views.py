"""The table views (agents/table_views.py) served by two workers on the embedded stack.

Real parts, as in tests/integration/test_analytics.py: the simulated venue in this process
with its market running (two perpetuals), Tansu, the schema registry, PostgreSQL and two
`cryptics worker` children. Once both workers hold keys of the analytics tables, quoting is
halted and the venue stopped so that the tables stand still, and then:

- ``GET /tables/`` from either worker lists every table of the app with the same kinds,
  partition owners (the workers' real web URLs) and key counts;
- every table listed from either worker, page by page, gives the same entries, which are
  exactly the union of the two workers' own parts (``?local=1``);
- every key of a table without windows asked from either worker is the owner's value; a
  windowed key's series is the same from either worker, oldest first, and its now, current
  and delta windows are answered; a listing with ``?window=`` keeps one window per key, the
  same from either worker;
- prices and sizes come as JSON numbers on the instrument's steps;
- hostile input gets 400 or 404 as JSON;
- with one worker stopped (SIGSTOP) for the length of one request, the other answers what it
  holds, marked partial, naming the stopped worker; a key the stopped worker owns is a 504
  naming it.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.parse
from datetime import datetime
from typing import Any, Optional

import aiohttp

from .analytics_stack import INSTRUMENTS, NotYet

#: Every table the worker registers (agents/analytics.py, agents/heartbeat.py).
TABLES = {"position_pnl", "trade_candles_1s", "trade_candles_1m", "mark_candles_1s", "mark_candles_1m",
          "stage_latency_1m", "markouts", "resting_quotes", "quote_quality_1m", "analytics_progress",
          "heartbeat_counts"}
STEPS = {"BTC-PERPETUAL": (1.0, 0.001), "ETH-PERPETUAL": (0.1, 0.01)}  # app/venue/instruments.py




class Web:
    """GET the workers' views: (status, JSON body)."""

    def __init__(self, session: aiohttp.ClientSession, ports: dict[str, int]) -> None:
        self.session, self.ports = session, ports

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def get(self, name: str, path: str, timeout: float = 15.0) -> tuple[int, Any]:
        async with self.session.get(self.url(name) + path, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            text = await response.text()
            assert response.content_type == "application/json", (path, response.status, text[:500])
            assert "Traceback" not in text, text[:2000]
            return response.status, await response.json()

    async def ok(self, name: str, path: str) -> Any:
        status, body = await self.get(name, path)
        assert status == 200, (name, path, status, body)
        return body

    async def listing(self, name: str, table: str, limit: int) -> list[dict]:
        """Every entry of ``table``, page by page, as worker ``name`` serves it."""
        items, cursor, pages = [], None, 0
        while True:
            query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
            body = await self.ok(name, f"/tables/{table}/?{urllib.parse.urlencode(query)}")
            assert body["partial"] is False, body
            assert len(body["items"]) <= limit
            items += body["items"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                return items
            assert pages < 200, "the pages do not end"


def _position(item: dict) -> tuple:
    return item["key"], item["window"]["start"] if "window" in item else ""


def _on_step(value: float, step: float) -> bool:
    """True when ``value`` is a multiple of ``step`` written with no more decimals than the step."""
    decimals = len(repr(step).split(".")[1].rstrip("0")) if "." in repr(step) else 0
    text = repr(value)
    written = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    return abs(value / step - round(value / step)) < 1e-9 and written <= max(decimals, 1)


async def test_two_workers_serve_every_view(analytics_stack):
    analytics_stack.spawn("a")
    analytics_stack.spawn("b")
    async with aiohttp.ClientSession() as session:
        web = Web(session, {name: port for name, (_, port) in analytics_stack.workers.items()})

        async def own_part(name: str, table: str) -> Optional[list]:
            try:
                status, body = await web.get(name, f"/tables/{table}/?local=1&limit=1000", timeout=3)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return None
            return body["items"] if status == 200 else None

        async def split() -> Any:
            """Both workers hold position keys, no key is on both, and each instrument has a few
            one-second candles."""
            parts = {name: await own_part(name, "position_pnl") for name in "ab"}
            candles = {name: await own_part(name, "mark_candles_1s") for name in "ab"}
            if any(p is None for p in (*parts.values(), *candles.values())):
                return NotYet("web views not up")
            keys = {name: {item["key"] for item in items} for name, items in parts.items()}
            counts = {}
            for items in candles.values():
                for item in items:
                    counts[item["key"]] = counts.get(item["key"], 0) + 1
            done = (keys["a"] and keys["b"] and not keys["a"] & keys["b"] and keys["a"] | keys["b"] == set(INSTRUMENTS)
                    and all(counts.get(name, 0) >= 3 for name in INSTRUMENTS))
            return keys if done else NotYet((keys, counts))

        async def poll(predicate, what: str, timeout: float) -> Any:
            deadline = time.monotonic() + timeout
            last = None
            while time.monotonic() < deadline:
                last = await predicate()
                if last:
                    return last
                await asyncio.sleep(0.5)
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

        keys = await poll(split, "both workers to hold keys", 120)
        owner_of = {key: name for name, held in keys.items() for key in held}

        # The tables stand still from here on: quoting halted with its orders pulled, then no
        # market, no events. (Stopping the venue alone leaves the quoting session to end some
        # time later; under load a quote-quality window was seen to move after the listing
        # below had read it.)
        await analytics_stack.halt_and_settle()

        # -- GET /tables/ ------------------------------------------------------------------
        overviews = {name: await web.ok(name, "/tables/") for name in "ab"}
        urls = {web.url("a"), web.url("b")}
        for name, overview in overviews.items():
            assert overview["worker"] == web.url(name) and set(overview["workers"]) == urls  # real web URLs
            assert overview["partial"] is False and overview["unreachable"] == []
            assert {t["name"] for t in overview["tables"]} == TABLES
        a_tables = {t["name"]: t for t in overviews["a"]["tables"]}
        for table in overviews["b"]["tables"]:
            assert table == a_tables[table["name"]], table["name"]
        assert a_tables["position_pnl"]["keys"] == 2 and a_tables["position_pnl"]["kind"] == "table"
        assert a_tables["mark_candles_1s"]["kind"] == "windowed"
        assert a_tables["mark_candles_1s"]["entries"] > a_tables["mark_candles_1s"]["keys"] == 2
        owners = {p["worker"] for p in a_tables["position_pnl"]["partitions"]}
        assert owners == urls, a_tables["position_pnl"]["partitions"]
        assert a_tables["position_pnl"]["help"].startswith("Per instrument")

        # -- GET /tables/{name}/: the same entries from either worker, page by page -----------
        listings = {}
        for table in sorted(TABLES):
            from_a = await web.listing("a", table, limit=10)
            from_b = await web.listing("b", table, limit=10)
            assert from_a == from_b, table
            assert [_position(i) for i in from_a] == sorted(_position(i) for i in from_a), f"{table}: out of order"
            union = (await own_part("a", table)) + (await own_part("b", table))
            assert sorted(_position(i) for i in union) == [_position(i) for i in from_a], table
            listings[table] = from_a
        assert {i["key"] for i in listings["position_pnl"]} == set(INSTRUMENTS)
        prefixed = await web.ok("b", "/tables/stage_latency_1m/?prefix=BTC-PERPETUAL%7C&limit=1000")
        assert prefixed["items"] and all(i["key"].startswith("BTC-PERPETUAL|") for i in prefixed["items"])
        assert len(prefixed["items"]) == sum(i["key"].startswith("BTC-PERPETUAL|") for i in listings["stage_latency_1m"])

        # ?window= on a listing: one window per key, the same from either worker. The delta
        # points into the newest minute (its middle, or now while it is the first half of the
        # current minute), at the answering worker's clock.
        newest = max(i["window"]["start"] for i in listings["mark_candles_1m"])
        start = datetime.fromisoformat(newest).timestamp()
        for name in "ab":
            delta = max(0, int(time.time() - start - 30))
            one = await web.ok(name, f"/tables/mark_candles_1m/?window=delta:{delta}s&limit=1000")
            assert one["window_choice"] == f"delta:{delta}s" and one["partial"] is False
            expected = [i for i in listings["mark_candles_1m"] if i["window"]["start"] == newest]
            assert one["items"] == expected and len({i["key"] for i in expected}) == len(expected), name
        status, body = await web.get("a", "/tables/position_pnl/?window=now")
        assert status == 400 and "no windows" in body["error"]

        # Numbers are numbers, prices and sizes on the instrument's steps.
        for item in listings["position_pnl"]:
            tick, volume_tick = STEPS[item["key"]]
            value = item["value"]
            assert isinstance(value["position"], float) and _on_step(value["position"], volume_tick), value
            assert isinstance(value["mark_price"], float) and isinstance(value["trades"], int)
        for item in listings["trade_candles_1m"]:
            tick, volume_tick = STEPS[item["key"]]
            for field in ("open", "high", "low", "close"):
                assert _on_step(item["value"][field], tick), item
            assert _on_step(item["value"]["volume"], volume_tick), item

        # -- GET /tables/{name}/{key}/: either worker gives the owner's value -----------------
        for table in sorted(TABLES):
            windowed = any("window" in i for i in listings[table])
            for key in sorted({i["key"] for i in listings[table]}):
                path = f"/tables/{table}/{urllib.parse.quote(key, safe='')}/"
                owner = {i["worker"] for i in listings[table] if i["key"] == key}
                assert len(owner) == 1, (table, key, owner)
                owner_name = "a" if owner == {web.url("a")} else "b"
                if not windowed:
                    local = await web.ok(owner_name, path + "?local=1")
                    for name in "ab":
                        routed = await web.ok(name, path)
                        assert routed["worker"] == web.url(owner_name) and routed["partial"] is False
                        assert routed["value"] == local["value"], (table, key, name)
                    assert [i["value"] for i in listings[table] if i["key"] == key] == [local["value"]]
                    continue
                local = await web.ok(owner_name, path + "?local=1&window=series")
                starts = [w["window"]["start"] for w in local["windows"]]
                assert starts == sorted(starts) and starts, (table, key)
                # Every window the listing shows is live (kept 10 min or 6 h): the series is all of them.
                assert local["windows"] == [{"window": i["window"], "value": i["value"]}
                                            for i in listings[table] if i["key"] == key], (table, key)
                for name in "ab":
                    routed = await web.ok(name, path + "?window=series")
                    assert routed["windows"] == local["windows"] and routed["worker"] == web.url(owner_name)
                    for choice in ("now", "current", "delta:60s"):
                        answer = await web.ok(name, path + f"?window={choice}")
                        assert set(answer["window"]) == {"start", "end"} and answer["window_choice"] == choice
                        assert answer["value"] is None or isinstance(answer["value"], dict)
        candle = await web.ok("a", "/tables/mark_candles_1s/BTC-PERPETUAL/?window=series")
        assert len(candle["windows"]) >= 3

        # -- hostile input: JSON errors, never a traceback ------------------------------------
        other_cursor = (await web.ok("a", "/tables/mark_candles_1s/?limit=1"))["next_cursor"]
        refused = {
            "/tables/nope/": 404, "/tables/nope/BTC-PERPETUAL/": 404,
            "/tables/position_pnl/NOPE-PERPETUAL/": 404, "/tables/position_pnl/%3Cscript%3E/": 404,
            "/tables/mark_candles_1m/NOPE/?window=series": 404,
            "/tables/position_pnl/?limit=0": 400, "/tables/position_pnl/?limit=abc": 400,
            "/tables/position_pnl/?limit=100000": 400, "/tables/position_pnl/?cursor=garbage": 400,
            f"/tables/position_pnl/?cursor={other_cursor}": 400, "/tables/position_pnl/?timeout=-1": 400,
            "/tables/mark_candles_1m/BTC-PERPETUAL/?window=yesterday": 400,
            "/tables/mark_candles_1m/BTC-PERPETUAL/?window=delta:-5s": 400,
            "/tables/position_pnl/BTC-PERPETUAL/?window=now": 400,
        }
        for path, want in refused.items():
            for name in "ab":
                status, body = await web.get(name, path)
                assert status == want and isinstance(body.get("error"), str), (name, path, status, body)
        empty = await web.ok("a", "/tables/position_pnl/?prefix=%00%FF%7C")
        assert empty["items"] == [] and empty["next_cursor"] is None

        # -- a peer that does not answer: partial, naming it -----------------------------------
        stopped = "b"
        stopped_key = next(key for key, name in owner_of.items() if name == stopped)
        child = analytics_stack.workers[stopped][0]
        os.kill(child.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            listing = await web.ok("a", "/tables/position_pnl/?timeout=1")
            status, key_answer = await web.get("a", f"/tables/position_pnl/{stopped_key}/?timeout=1")
            took = time.monotonic() - started
        finally:
            os.kill(child.pid, signal.SIGCONT)
        assert listing["partial"] is True
        assert [u["worker"] for u in listing["unreachable"]] == [web.url(stopped)], listing
        assert "1 s" in listing["unreachable"][0]["error"]
        assert {i["key"] for i in listing["items"]} == keys["a"]
        assert status == 504 and key_answer["partial"] is True, key_answer
        assert key_answer["unreachable"][0]["worker"] == web.url(stopped) and web.url(stopped) in key_answer["error"]
        assert took < 4, took
        # Back: whole again.
        await poll(lambda: _whole(web), "the stopped worker to answer again", 30)

    analytics_stack.stop_all()


async def _whole(web: Web) -> Any:
    try:
        status, body = await web.get("a", "/tables/position_pnl/?timeout=2")
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    return status == 200 and body["partial"] is False and len(body["items"]) == 2
