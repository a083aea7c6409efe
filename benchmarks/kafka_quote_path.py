"""A worker whose quote agent is fed from Kafka instead of the in-process channel (for bench_quoting).

    .venv/bin/python -m benchmarks.kafka_quote_path        # same settings as `cryptics worker`

Everything else is the product's worker, unchanged: the same app, every agent of
agents/ (app.worker.import_agents), the same start-up (app.worker.run creates the
topics, then runs faust.Worker). Only the quote agent's input is rewired:

- the market-data source still hands ticker, book and index records to the in-process
  channel ``market_events`` and produces them to Kafka (``send_soon``), as it always does;
- ``quote_agent`` still consumes the channel, but ``quoting.on_market_event`` is shadowed
  on the ``quoting`` instance by a function that only counts the event, so the channel
  path decides nothing;
- one agent per topic (``cryptics.thalex.ticker.avro``, book, index; Avro through the
  schema registry, decoded into the same faust.Record models) calls the real
  ``Quoting.on_market_event(quoting, record)``, with the same error handling as
  ``quote_agent``.

So the decision, the risk gate and the order gateway are the product's code and run on
the product's venue session; the only difference is the hop tick → Kafka → quote agent.
``GET /kafka-quote-path/`` counts what each path saw, and how far behind the source the
Kafka agents are (``lag_ms``: now − received_at of the last record each consumed). This is a benchmark rig only: it is
never part of the product (design D1 keeps the hot path in-process).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import faust

from app.faust_app import app, record_topic, settings
from app.worker import import_agents, run

log = logging.getLogger(__name__)

import_agents()

import agents.quoting as quoting_module  # noqa: E402  (after import_agents: registered like the worker's)

quoting = quoting_module.quoting
#: channel_ignored: market events the in-process quote agent received and dropped;
#: kafka_<record>: records the Kafka agents handed to the quote logic; kafka_errors: decisions that raised.
counts: Counter[str] = Counter()

#: now − the record's received_at (ms) for the last record each Kafka agent consumed: how far the
#: Kafka path runs behind the source.
lag_ms: dict[str, float] = {}

_real_on_market_event = quoting_module.Quoting.on_market_event


async def _ignore_channel_event(record: Any) -> None:
    counts["channel_ignored"] += 1


# An instance attribute shadows the class's method: quote_agent (the channel path) now
# only counts; the class method is still there for the Kafka agents below.
quoting.on_market_event = _ignore_channel_event  # type: ignore[method-assign]


async def _decide(record: Any) -> None:
    try:
        await _real_on_market_event(quoting, record)
    except Exception:
        # As quote_agent does: count, pull this session's orders, carry on.
        quoting.errors += 1
        counts["kafka_errors"] += 1
        log.exception("kafka quote path: decision failed; cancelling this session's orders")
        if quoting.gateway is not None:
            try:
                await quoting.gateway.cancel_all()
            except Exception:
                log.exception("kafka quote path: cancel_session after a failure failed too")


def _kafka_agent(name: str) -> None:
    async def consume(stream: faust.StreamT) -> None:
        async for record in stream:
            counts[f"kafka_{name}"] += 1
            if record.received_at is not None:
                lag_ms[name] = (time.time() - record.received_at.timestamp()) * 1e3
            await _decide(record)

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
