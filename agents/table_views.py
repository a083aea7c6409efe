"""Table views: every Faust table of the app as JSON, from any worker (docs/architecture.md#d12-web-views).

Contract
- consumes: the app's Faust tables (``app.tables``: the analytics tables of agents/analytics.py,
  ``heartbeat_counts`` of agents/heartbeat.py, and any table added later), read from this
  worker's memory; the partition assignment (``app.router``: which worker, by its canonical
  web URL, holds which changelog partition); the other workers' answers to the same views
  with ``?local=1``; the tick and volume tick of each instrument from the market-data source
  (agents/market_data.py, from public/instruments), or from a peer that has them (only the
  lease holder opens a venue session: the others learn the steps from its answers).
- produces: nothing on Kafka. HTTP requests to the other workers' web views, each with a
  timeout (``?timeout=``, default 2 s).
- tables: none of its own.
- web views (read-only, no token):
  - ``GET /tables/`` → every table: name, help, kind (table, windowed, global), its window,
    changelog topic, partitions with the worker holding each, key and entry counts summed
    over the workers.
  - ``GET /tables/{name}/?prefix=&limit=&cursor=`` → a page of entries (key, window, value,
    worker) in key order, then window start, gathered from every worker holding a partition of
    the table; ``next_cursor`` for the next page (null on the last). For a windowed table
    ``?window=now|current|delta:60s`` keeps only that window's entries (one per key; ``series``
    or no ``window``: every live window).
  - ``GET /tables/{name}/{key}/`` → one value, from the worker that owns the key; for a
    windowed table ``?window=now|current|delta:60s|series``.
  - every answer says ``partial`` and which peers did not answer (``unreachable``); a listing
    also names partitions no worker holds yet (``unassigned_partitions``).
  - ``?local=1``: this worker's own part only, never forwarded (what the workers ask each other).
  Errors are JSON ``{"error": ..., "status": n}``: an unknown table or key 404, a bad limit,
  cursor, window or timeout 400, a key whose owner does not answer 504 (naming it), a
  partition with no owner yet 503.

Routing a key. An analytics table puts each key on the partition of its instrument's records
(app/pipeline/copartitioned.py), which is the producer's partitioner on the instrument's bytes
(``<instrument>|<stage>`` for the latency table: the part before ``|``); another table's key
is on the partition of its serialized changelog key, as Faust's own ``table_route`` assumes.
The owner of that changelog partition answers; a windowed table that is not co-partitioned
(none today) has no partition to route by, and every holder is asked.

Numbers are JSON numbers; prices and sizes are rounded to the instrument's steps by the worker
answering the client (app/web/tables.py says which fields, and how). A latency histogram's value
also carries its ``summary`` (count, mean, p50, p90, p99, max in µs), computed by the worker
holding it.

The views run on the worker's event loop, beside the hot path: a page is at most 1,000 entries,
and the peers are asked concurrently.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
import urllib.parse
from typing import Any, Mapping, Optional

import aiohttp
import faust
from yarl import URL

from agents.market_data import source
from app.faust_app import app, settings
from app.pipeline.copartitioned import CoPartitionedTable
from app.web.tables import (BadRequest, Entry, Steps, WindowChoice, chosen_range, decode_cursor, encode_cursor,
                            entries, find_window, instrument_of, key_partition, live_series, merge, page,
                            in_window, parse_flag, parse_limit, parse_timeout, parse_window, plain, rounded,
                            steps_of, summarized, valid_item, window_json)

log = logging.getLogger(__name__)

#: Seconds between two attempts to learn the instruments' steps from the peers.
LEARN_INTERVAL = 1.0


class Answer(Exception):
    """A JSON answer other than 200, raised from deep inside a view."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": message, "status": status, **extra}


# -- the cluster ------------------------------------------------------------------------------


def own_url() -> str:
    return str(app.conf.canonical_url).rstrip("/")


def members() -> list[str]:
    """Every worker of the group by its web URL (this one included), as the assignor knows them."""
    urls = {str(url).rstrip("/") for url in app.router.tables_metadata()}
    return sorted(urls | {own_url()})


def holders(table: faust.Table) -> dict[int, str]:
    """Partition → the web URL of the worker holding it (its active changelog partition)."""
    topic = table.changelog_topic.get_topic_name()
    out: dict[int, str] = {}
    for url, topics in app.router.tables_metadata().items():
        for partition in topics.get(topic, ()):
            out[partition] = str(url).rstrip("/")
    return out


def partitions_of(table: faust.Table) -> int:
    return table.partitions or app.conf.topic_partitions


def kind_of(table: faust.Table) -> str:
    if table.is_global:
        return "global"
    return "windowed" if table.window is not None else "table"


def key_partition_of(table: faust.Table, key: str) -> Optional[int]:
    """The changelog partition of ``key``; None when the key alone does not say."""
    if isinstance(table, CoPartitionedTable):
        return key_partition(instrument_of(key).encode("utf-8", "replace"), partitions_of(table))
    if table.window is not None:
        return None  # (key, window) keys are on the partition of the event that wrote them
    try:
        raw = table.changelog_topic.prepare_key(key, None)[0]
    except Exception:  # a key the table's serializer refuses: no partition to route by
        return None
    return None if raw is None else key_partition(raw, partitions_of(table))


def describe(table: faust.Table) -> dict:
    """What GET /tables/ says of a table, but its key counts."""
    held = holders(table)
    window = table.window
    return {
        "name": table.name, "help": table.help or "", "kind": kind_of(table),
        "window": None if window is None else {"size_seconds": getattr(window, "size", None),
                                               "expires_seconds": getattr(window, "expires", None)},
        "changelog_topic": table.changelog_topic.get_topic_name(),
        "partitions": [{"partition": p, "worker": held.get(p)} for p in range(partitions_of(table))],
    }


async def from_the_workers_with(name: str, path: str, query: Mapping[str, str]) -> dict:
    """The answer to ``path`` of a worker that has table ``name``, which this one has not: under
    `cryptics up` the analytics tables live in the analytics worker only. 404 if none has it."""
    if parse_flag(query.get("local")):
        raise Answer(404, f"no table {name!r} on {own_url()}", tables=sorted(app.tables))
    timeout = parse_timeout(query.get("timeout"))
    peers = [url for url in members() if url != own_url()]
    answers = await asyncio.gather(*(ask(url, "/tables/", {"local": "1"}, timeout) for url in peers))
    for url, (status, body, _) in zip(peers, answers):
        if status == 200 and isinstance(body, dict) and name in (body.get("tables") or {}):
            status, answer, error = await ask(url, path, dict(query), timeout)
            if status is None:
                raise Answer(504, f"{url}, which holds table {name!r}, did not answer: {error}", table=name,
                             unreachable=[{"worker": url, "error": error}])
            if status != 200 or not isinstance(answer, dict):
                raise Answer(status, (answer or {}).get("error", f"{url} answered HTTP {status}"), table=name)
            return {**answer, "via": url}
    raise Answer(404, f"no table {name!r}; GET /tables/ lists them", tables=sorted(app.tables))


def table_named(name: str) -> faust.Table:
    table = app.tables.get(name)
    if table is None:
        raise Answer(404, f"no table {name!r}; GET /tables/ lists them", tables=sorted(app.tables))
    return table


# -- the instruments' steps -------------------------------------------------------------------


class StepsBook:
    """The tick and volume tick of each instrument: the market-data source's, else learned from peers."""

    def __init__(self) -> None:
        self.learned: dict[str, Steps] = {}
        self._asked_at = -math.inf

    def known(self) -> dict[str, Steps]:
        return {**self.learned, **steps_of(source.instruments)}

    def to_json(self) -> dict[str, dict]:
        return {name: steps.to_json() for name, steps in sorted(self.known().items())}

    def merge(self, data: Any) -> None:
        if isinstance(data, dict):
            self.learned.update(steps_of(data))

    def of(self, key: Any) -> Optional[Steps]:
        instrument = instrument_of(key)
        return None if instrument is None else self.known().get(instrument)

    async def learn(self, timeout: float) -> None:
        """Ask the peers for the steps of the configured instruments this worker does not know."""
        known = self.known()
        if all(name in known for name in settings.instrument_names):
            return
        if time.monotonic() - self._asked_at < LEARN_INTERVAL:
            return
        self._asked_at = time.monotonic()
        peers = [url for url in members() if url != own_url()]
        for status, body, _ in await asyncio.gather(*(ask(url, "/tables/", {"local": "1"}, timeout) for url in peers)):
            if status == 200 and isinstance(body, dict):
                self.merge(body.get("steps"))


steps_book = StepsBook()


# -- asking the peers -------------------------------------------------------------------------


class _Client:
    session: Optional[aiohttp.ClientSession] = None


async def ask(url: str, path: str, query: dict[str, str], timeout: float) -> tuple[Optional[int], Any, Optional[str]]:
    """GET ``path`` of the worker at ``url``: (status, JSON body, None), or (None, None, why not)."""
    if _Client.session is None or _Client.session.closed:
        _Client.session = aiohttp.ClientSession()
    target = URL(url + path, encoded=True).with_query(query)
    try:
        async with _Client.session.get(target, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                return None, None, f"answered HTTP {response.status} with no JSON"
            return response.status, body, None
    except asyncio.TimeoutError:
        return None, None, f"no answer within {timeout:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"


@app.on_before_shutdown.connect
async def _close_client(sender: Any, **kwargs: Any) -> None:
    if _Client.session is not None:
        await _Client.session.close()


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# -- this worker's part -----------------------------------------------------------------------


def _value(name: str, key: Any, value: Any) -> Any:
    return rounded(name, summarized(name, plain(value)), steps_book.of(key))


def _item(name: str, entry: Entry) -> dict:
    item: dict[str, Any] = {"key": plain(entry.key)}
    if entry.window is not None:
        item["window"] = window_json(entry.window)
    item["value"] = _value(name, entry.key, entry.value)
    item["worker"] = own_url()
    item["position"] = list(entry.position)
    return item


def local_counts() -> dict[str, dict[str, int]]:
    counts = {}
    for name, table in app.tables.items():
        stored = list(table.data.keys())
        keys = len({k[0] for k in stored if isinstance(k, tuple) and k}) if table.window is not None else len(stored)
        counts[name] = {"keys": keys, "entries": len(stored)}
    return counts


def local_page(table: faust.Table, prefix: str, after: Any, limit: int,
               choice: Optional[WindowChoice] = None) -> tuple[list[dict], bool]:
    """This worker's first ``limit`` entries after ``after``; with a window choice (now, current,
    delta) only the entries of that window, one per key."""
    found = entries(list(table.data.items()), table.window is not None)
    if choice is not None and choice.kind != "series" and table.window is not None:
        found = in_window(found, chosen_range(choice, table.window, time.time()))
    chosen, more = page(found, prefix=prefix, after=after, limit=limit)
    return [_item(table.name, entry) for entry in chosen], more


def local_key(table: faust.Table, key: str, choice: Optional[WindowChoice]) -> dict:
    """This worker's answer for one key (Answer 404 if it does not hold it)."""
    name = table.name
    body: dict[str, Any] = {"table": name, "kind": kind_of(table), "key": key, "worker": own_url(),
                            "partition": key_partition_of(table, key)}
    if table.window is None:
        if key not in table.data:
            raise Answer(404, f"no key {key!r} in table {name!r} on {own_url()}", table=name, key=key)
        body["value"] = _value(name, key, table.data[key])
        return body
    mine = [entry for entry in entries(list(table.data.items()), True) if entry.key == key]
    if not mine:
        raise Answer(404, f"no key {key!r} in table {name!r} on {own_url()}", table=name, key=key)
    now = time.time()
    choice = choice or WindowChoice("now")
    body["window_choice"] = choice.text
    if choice.kind == "series":
        body["windows"] = [{"window": window_json(e.window), "value": _value(name, key, e.value)}
                           for e in live_series(mine, table.window, now)]
    else:
        chosen = chosen_range(choice, table.window, now)
        found = find_window(mine, chosen)
        body["window"] = window_json(chosen)
        body["value"] = None if found is None else _value(name, key, found.value)
    return body


def _reround(name: str, body: dict) -> dict:
    """A peer's key answer rounded with what this worker knows (rounding twice changes nothing)."""
    steps = steps_book.of(body.get("key"))
    if "value" in body:
        body["value"] = rounded(name, body["value"], steps)
    if isinstance(body.get("windows"), list):
        body["windows"] = [{**w, "value": rounded(name, w.get("value"), steps)} if isinstance(w, dict) else w
                           for w in body["windows"]]
    return body


# -- the views --------------------------------------------------------------------------------


class _JsonView(faust.web.View):
    """A view whose every answer is JSON: refusals and failures included, never a traceback."""

    async def get(self, request: faust.web.Request, **match: str) -> faust.web.Response:
        try:
            return self.json(await self.answer(request, **match))
        except Answer as answer:
            return self.json(answer.body, status=answer.status)
        except BadRequest as exc:
            return self.json({"error": str(exc), "status": 400}, status=400)
        except Exception:
            log.exception("table views: %s failed", request.path)
            return self.json({"error": "the view failed; the worker's log has the details", "status": 500},
                             status=500)

    async def answer(self, request: faust.web.Request, **match: str) -> dict:
        raise NotImplementedError


@app.page("/tables/")
class TablesView(_JsonView):
    async def answer(self, request: faust.web.Request) -> dict:
        query = request.query
        timeout = parse_timeout(query.get("timeout"))
        counts = local_counts()
        if parse_flag(query.get("local")):
            described = [{**describe(table), **counts[name]} for name, table in sorted(app.tables.items())]
            return {"worker": own_url(), "tables": counts, "described": described, "steps": steps_book.to_json()}
        everyone = members()
        peers = [url for url in everyone if url != own_url()]
        answers = await asyncio.gather(*(ask(url, "/tables/", {"local": "1"}, timeout) for url in peers))
        totals = {name: dict(c) for name, c in counts.items()}
        unreachable = []
        for url, (status, body, error) in zip(peers, answers):
            if status != 200 or not isinstance(body, dict) or not isinstance(body.get("tables"), dict):
                unreachable.append({"worker": url, "error": error or f"answered HTTP {status}"})
                continue
            steps_book.merge(body.get("steps"))
            for name, c in body["tables"].items():
                table = app.tables.get(name)
                if table is None or table.is_global or not isinstance(c, dict):
                    continue  # a global table: every worker holds all of it; counted once
                for field in ("keys", "entries"):
                    if isinstance(c.get(field), int):
                        totals[name][field] += c[field]
        tables = [{**describe(table), **totals[name]} for name, table in sorted(app.tables.items())]
        # Tables only other workers have (the analytics worker's, under `cryptics up`), as they describe them.
        listed = set(app.tables)
        for url, (status, body, _) in zip(peers, answers):
            if status == 200 and isinstance(body, dict) and isinstance(body.get("described"), list):
                for entry in body["described"]:
                    if isinstance(entry, dict) and entry.get("name") not in listed:
                        listed.add(entry.get("name"))
                        tables.append({**entry, "via": url})
        tables.sort(key=lambda t: str(t.get("name")))
        return {"worker": own_url(), "workers": everyone, "tables": tables,
                "partial": bool(unreachable), "unreachable": unreachable}


@app.page("/tables/{name}/")
class TableView(_JsonView):
    async def answer(self, request: faust.web.Request, name: str) -> dict:
        if name not in app.tables:
            return await from_the_workers_with(name, f"/tables/{_quoted(name)}/", request.query)
        table = table_named(name)
        query = request.query
        prefix = query.get("prefix", "")
        limit = parse_limit(query.get("limit"))
        raw_cursor = query.get("cursor")
        after = decode_cursor(name, raw_cursor)
        timeout = parse_timeout(query.get("timeout"))
        raw_window = query.get("window")
        if table.window is None and raw_window:
            raise BadRequest(f"table {name!r} has no windows: ?window= is for windowed tables")
        choice = parse_window(raw_window) if raw_window else None
        held = holders(table)
        peers = [] if table.is_global else sorted(set(held.values()) - {own_url()})
        if parse_flag(query.get("local")) or not peers:
            await steps_book.learn(timeout)
        own_items, own_more = local_page(table, prefix, after, limit, choice)
        if parse_flag(query.get("local")):
            return {"worker": own_url(), "table": name, "items": own_items, "more": own_more,
                    "steps": steps_book.to_json()}
        forwarded = {"local": "1", "limit": str(limit), "prefix": prefix}
        if raw_cursor:
            forwarded["cursor"] = raw_cursor
        if raw_window:
            forwarded["window"] = raw_window
        answers = await asyncio.gather(*(ask(url, f"/tables/{_quoted(name)}/", forwarded, timeout) for url in peers))
        pages = [(own_items, own_more)]
        unreachable = []
        for url, (status, body, error) in zip(peers, answers):
            if status != 200 or not isinstance(body, dict) or not isinstance(body.get("items"), list):
                unreachable.append({"worker": url, "error": error or f"answered HTTP {status}"})
                continue
            steps_book.merge(body.get("steps"))
            pages.append(([item for item in body["items"] if valid_item(item)], bool(body.get("more"))))
        items, more = merge(pages, limit)
        next_cursor = encode_cursor(name, tuple(items[-1]["position"])) if more and items else None
        for item in items:
            item.pop("position")
            item["value"] = rounded(name, item.get("value"), steps_book.of(item.get("key")))
        unassigned = [] if table.is_global else [p for p in range(partitions_of(table)) if p not in held]
        return {"table": name, "kind": kind_of(table), "worker": own_url(), "workers": sorted({own_url(), *peers}),
                "prefix": prefix, "limit": limit, **({"window_choice": choice.text} if choice else {}),
                "items": items, "next_cursor": next_cursor,
                "partial": bool(unreachable or unassigned), "unreachable": unreachable,
                "unassigned_partitions": unassigned}


@app.page("/tables/{name}/{key}/")
class TableKeyView(_JsonView):
    async def answer(self, request: faust.web.Request, name: str, key: str) -> dict:
        if name not in app.tables:
            return await from_the_workers_with(name, f"/tables/{_quoted(name)}/{_quoted(key)}/", request.query)
        table = table_named(name)
        query = request.query
        raw_window = query.get("window")
        if table.window is None and raw_window:
            raise BadRequest(f"table {name!r} has no windows: ?window= is for windowed tables")
        choice = parse_window(raw_window) if table.window is not None else None
        timeout = parse_timeout(query.get("timeout"))
        local = parse_flag(query.get("local"))
        held = holders(table)
        partition = key_partition_of(table, key)
        if local or table.is_global or (partition is not None and held.get(partition) == own_url()):
            await steps_book.learn(timeout)
            body = local_key(table, key, choice)
            if local:
                body["steps"] = steps_book.to_json()
            return body if local else {**body, "partial": False, "unreachable": []}
        forwarded = {"local": "1"}
        if raw_window:
            forwarded["window"] = raw_window
        path = f"/tables/{_quoted(name)}/{_quoted(key)}/"
        if partition is None:
            return await self._ask_every_holder(table, key, choice, path, forwarded, sorted(set(held.values())), timeout)
        owner = held.get(partition)
        if owner is None:
            raise Answer(503, f"partition {partition} of {name!r} has no worker yet (the group is rebalancing); "
                              "try again in a few seconds", table=name, key=key, partition=partition)
        status, body, error = await ask(owner, path, forwarded, timeout)
        if error is not None:
            raise Answer(504, f"{owner} holds partition {partition} of {name!r} and did not answer: {error}",
                         table=name, key=key, partition=partition, worker=owner, partial=True,
                         unreachable=[{"worker": owner, "error": error}])
        if status not in (200, 404) or not isinstance(body, dict):
            raise Answer(502, f"{owner} answered HTTP {status}", table=name, key=key, worker=owner)
        steps_book.merge(body.pop("steps", None))
        if status == 404:
            raise Answer(404, str(body.get("error") or f"no key {key!r} in table {name!r}"), table=name, key=key,
                         worker=owner)
        return {**_reround(name, body), "partial": False, "unreachable": []}

    async def _ask_every_holder(self, table: faust.Table, key: str, choice: Optional[WindowChoice], path: str,
                                forwarded: dict, urls: list[str], timeout: float) -> dict:
        """A key with no partition to route by: this worker's answer, else the first peer's that has it."""
        await steps_book.learn(timeout)
        try:
            mine: Optional[dict] = local_key(table, key, choice)
        except Answer:
            mine = None
        peers = [url for url in urls if url != own_url()]
        answers = await asyncio.gather(*(ask(url, path, forwarded, timeout) for url in peers))
        unreachable = [{"worker": url, "error": error or f"answered HTTP {status}"}
                       for url, (status, _, error) in zip(peers, answers) if status not in (200, 404)]
        found = [body for status, body, _ in answers if status == 200 and isinstance(body, dict)]
        for body in found:
            steps_book.merge(body.pop("steps", None))
        if mine is None and found:
            mine = _reround(table.name, found[0])
        if mine is None:
            raise Answer(404, f"no key {key!r} in table {table.name!r}", table=table.name, key=key,
                         partial=bool(unreachable), unreachable=unreachable)
        return {**mine, "partial": bool(unreachable), "unreachable": unreachable}
