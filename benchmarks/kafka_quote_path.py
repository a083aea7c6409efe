"""A worker whose quote agent is fed from Kafka instead of the in-process channel (for bench_quoting).

    .venv/bin/python -m benchmarks.kafka_quote_path        # same settings as `cryptics worker`

Everything else is the product's worker, unchanged: the same app, every agent of
agents/ (app.worker.import_agents), the same start-up (app.worker.run creates the
topics, then runs faust.Worker). Only the quote agent's input is rewired:

- the market-data source still hands ticker, book and index events to its in-process
  channel (``source.market_listeners``) and produces their records to Kafka
  (``produce_later``), as it always does; but the channel's listener is now a function that
  only counts the event,
  so the in-process path decides nothing;
- one agent per topic (``cryptics.thalex.ticker.avro``, book, index; Avro through the
  schema registry, decoded into the same faust.Record models) calls the real
  ``quoting.on_market_event(MarketEvent.of(record))``, error handling included.

So the decision, the risk gate and the order gateway are the product's code and run on
the product's venue session; the only difference is the hop tick → Kafka → quote agent.
``GET /kafka-quote-path/`` counts what each path saw, and how far behind the source the
Kafka agents are (``lag_ms``: now − received_at of the last record each consumed). This is a benchmark rig only: it is
never part of the product (docs/architecture.md#d1-the-hot-path-stays-in-one-process keeps the hot path in-process).
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

import faust

from app.faust_app import app, record_topic, settings
from app.worker import import_agents, run

import_agents()

import agents.quoting as quoting_module  # noqa: E402  (after import_agents: registered like the worker's)
from agents.market_data import MarketEvent  # noqa: E402

quoting = quoting_module.quoting
#: channel_ignored: market events the in-process channel delivered and this rig dropped;
#: kafka_<record>: records the Kafka agents handed to the quote logic.
counts: Counter[str] = Counter()

#: now − the record's received_at (ms) for the last record each Kafka agent consumed: how far the
#: Kafka path runs behind the source.
lag_ms: dict[str, float] = {}


def _ignore_channel_event(event: Any) -> None:
    counts["channel_ignored"] += 1


# The in-process channel now only counts; the Kafka agents below do the deciding.
quoting_module.source.market_listeners.remove(quoting.on_market_event)
quoting_module.source.market_listeners.append(_ignore_channel_event)


def _kafka_agent(name: str) -> None:
    async def consume(stream: faust.StreamT) -> None:
        async for record in stream:
            counts[f"kafka_{name}"] += 1
            if record.received_at is not None:
                lag_ms[name] = (time.time() - record.received_at.timestamp()) * 1e3
            quoting.on_market_event(MarketEvent.of(record))

    app.agent(record_topic(name), name=f"kafka_quote_{name}")(consume)


for _name in ("ticker", "book", "index"):
    _kafka_agent(_name)


@app.page("/kafka-quote-path/")
async def kafka_quote_path_view(web, request):
    return web.json({"counts": dict(counts), "lag_ms": lag_ms})


def main() -> None:
    run(settings)  # topics first, then faust.Worker, exactly as `cryptics worker`


if __name__ == "__main__":
    main()
