"""Hostile HTTP requests against a running worker: hypothesis draws paths, query strings,
methods, bodies and bearer headers for every web view, and each answer must be a clear one
(200, or 400/401/404/405 with a JSON or text body naming the problem), never a 500, never a
traceback, never a change of the trading state without the token and a valid body. The
worker stays up and keeps serving throughout (docs/operations.md#the-table-views).

The parsers behind these views have their own fuzz tests (tests/property/test_fuzz_inputs.py);
this one sends the requests through aiohttp and Faust's routing, the way an attacker would.
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from hypothesis import HealthCheck, example, given, settings, strategies as st

from .analytics_stack import TOKEN, NotYet
from .observers import get_json

#: The views and the query parameters they read (agents/*.py, app/web/tables.py).
PREFIXES = ["", "tables/", "tables/position_pnl/", "tables/position_pnl/BTC-PERPETUAL/", "tables/stage_latency_1m/",
            "tables/mark_candles_1s/BTC-PERPETUAL/", "tables/nope/", "quoting/", "quoting/state/", "analytics/",
            "sink/", "market-data/", "heartbeat/", "metrics", "metrics/", "router/", "static/", "static/inspector.js"]
PARAMS = ["limit", "cursor", "prefix", "window", "timeout", "local", "partial", "format"]
ANSWERS = {200, 400, 401, 404, 405}

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
segments = st.just([]) | st.lists(texts.map(lambda t: urllib.parse.quote(t, safe="")), max_size=3)
#: Values near the ones the views take, and anything else.
near_values = st.sampled_from(["", "0", "-1", "10", "1001", "abc", "now", "current", "delta:60s", "delta:-5s",
                               "delta:1e9s", "series", "1e309", "nan", "true", "yes", "0.5"])
queries = st.dictionaries(st.sampled_from(PARAMS) | texts, near_values | texts | st.integers().map(str), max_size=4)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                           max_leaves=8)
bodies = (st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
          | st.fixed_dictionaries({"state": st.sampled_from(["active", "reducing", "halted", "on", ""]) | json_values,
                                   "reason": json_values}).map(lambda v: json.dumps(v).encode()))
#: What an HTTP client can put in a header at all (latin-1, no control characters).
header_texts = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                       max_size=40)
bearers = st.none() | st.just(f"Bearer {TOKEN}") | header_texts.map(lambda t: "Bearer " + t) | header_texts


def _request(port: int, method: str, path: str, body: Optional[bytes], bearer: Optional[str]) -> tuple[int, str, str]:
    headers = {"Content-Type": "application/json"}
    if bearer is not None:
        headers["Authorization"] = bearer
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers.get_content_type(), response.read(20000).decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read(20000).decode("utf-8", "replace")


async def test_hostile_requests_get_clear_answers_and_change_nothing(analytics_stack):
    stack = analytics_stack
    stack.spawn("a")
    port = stack.workers["a"][1]
    await stack.poll(lambda: (get_json(port, "/tables/position_pnl/") or {}).get("items") or NotYet("no keys"),
                     "position_pnl keys", 90)
    state = {"expected": get_json(port, "/quoting/state/")["state"]}
    seen: dict[int, int] = {}

    # Derandomized, so that every run sends the same requests; the examples make sure the
    # parsers behind the views are reached, whatever the draws (each must be a 400 or 401).
    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @example(method="GET", prefix="tables/position_pnl/", extra=[], query={"limit": "abc"}, body=b"", bearer=None)
    @example(method="GET", prefix="tables/stage_latency_1m/", extra=[], query={"window": "yesterday"}, body=b"",
             bearer=None)
    @example(method="GET", prefix="tables/position_pnl/", extra=[], query={"cursor": "%%%"}, body=b"", bearer=None)
    @example(method="POST", prefix="quoting/state/", extra=[], query={}, body=b"{not json", bearer=f"Bearer {TOKEN}")
    @example(method="POST", prefix="quoting/state/", extra=[], query={}, body=b'{"state": "on"}',
             bearer=f"Bearer {TOKEN}")
    @example(method="POST", prefix="quoting/state/", extra=[], query={}, body=b'{"state": "halted"}', bearer="Bearer x")
    @given(method=st.sampled_from(["GET", "GET", "GET", "POST", "PUT", "DELETE"]),
           prefix=st.sampled_from(PREFIXES) | st.just("quoting/state/"),
           extra=segments, query=queries, body=bodies, bearer=bearers)
    def one_request(method, prefix, extra, query, body, bearer):
        path = "/" + prefix + "/".join(extra) + ("?" + urllib.parse.urlencode(query) if query else "")
        status, kind, text = _request(port, method, path, body if method != "GET" else None, bearer)
        seen[status] = seen.get(status, 0) + 1
        assert status in ANSWERS, (method, path, body, status, text[:500])
        assert "Traceback" not in text, (method, path, text[:2000])
        if status >= 400:
            assert text.strip(), (method, path, status)  # a clear answer says something
        # the trading state changes only with the token and a valid body, to what was asked
        changed = method == "POST" and prefix == "quoting/state/" and not extra and status == 200
        if changed:
            assert bearer == f"Bearer {TOKEN}", (path, bearer)
            state["expected"] = json.loads(body)["state"]
        now = get_json(port, "/quoting/state/")
        assert now is not None and now["state"] == state["expected"], (method, path, body, bearer, now)

    await asyncio.get_running_loop().run_in_executor(None, one_request)
    # what was drawn reached the views, not only the router's 404 (else the test proves little)
    assert seen.get(200, 0) >= 20 and seen.get(400, 0) >= 4 and seen.get(401, 0) >= 1 and sum(seen.values()) >= 200, seen
    child, _ = stack.workers["a"]
    assert child.alive(), child.log_tail(60)
    assert get_json(port, "/quoting/") is not None
