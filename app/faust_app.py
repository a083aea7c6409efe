"""The Faust application: one app object, configured from app/settings.py.

Agents live in agents/ and are imported by ``cryptics worker`` (app/worker.py),
which is what registers them on this app.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Callable, Optional

import faust

from . import settings as settings_module
from . import tansu_compat
from .codec import AvroCodec

tansu_compat.register()

log = logging.getLogger(__name__)

settings = settings_module.load()


def create_app(s: settings_module.Settings) -> faust.App:
    # Without a broker URL the worker has nothing to talk to; ``cryptics up``
    # always provides one, ``cryptics worker`` checks for it before starting.
    broker = s.broker_url or "kafka://127.0.0.1:9092"
    return faust.App(
        s.app_id,
        broker=broker,
        store="memory://",
        processing_guarantee="at_least_once",  # exactly_once does not work on Tansu (design D6)
        # Faust would otherwise wait, on shutdown and on every rebalance, until each event
        # taken is acked. A persistence agent acks only after its batch commits, so with the
        # database away a SIGTERM (or a rebalance) waited forever. Every consumer here is
        # idempotent (design D8): an unacked event is simply delivered again.
        stream_wait_empty=False,
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication,
        broker_session_timeout=s.session_timeout,
        broker_heartbeat_interval=min(3.0, s.session_timeout / 3),
        consumer_auto_offset_reset="earliest",
        producer_linger=s.producer_linger,
        web_host=s.web_host,
        web_port=s.web_port,
        web_bind=s.web_host,
        datadir=str(s.state_dir / "faust"),
        # Faust's own internal topics (changelogs, leader) are created explicitly by
        # Faust with topic_partitions; pipeline topics by `cryptics topics create`.
        topic_allow_declare=True,
    )


app = create_app(settings)


def avro_value_codec(topic: str, schema: Any) -> AvroCodec:
    """The codec for values of ``topic``: subject ``<topic>-value`` (design D4)."""
    return AvroCodec(f"{topic}-value", schema, settings.schema_registry_url)


@functools.lru_cache(maxsize=None)
def record_topic(name: str) -> faust.TopicT:
    """The Faust topic of record ``name`` (models/registry.py): Avro values of the
    newest schema, key = the record's key field as a plain string (design D3)."""
    from models.registry import record

    r = record(name)
    return app.topic(
        r.topic,
        key_type=str,
        key_serializer="raw",
        value_type=r.model,
        value_serializer=avro_value_codec(r.topic, r.schema),
        partitions=settings.topic_partitions,
    )


#: (record name, key, value or builder, on_error) waiting for ``produce_later``'s flush.
_later: list[tuple[str, Any, Any, Optional[Callable[[Exception], None]]]] = []


def produce_later(name: str, key: Any, value: Any, on_error: Optional[Callable[[Exception], None]] = None) -> None:
    """``record_topic(name).send_soon(key=key, value=value)``, but only once the event loop
    has finished what it is doing now (design D1: Kafka off the critical path).

    ``value`` is the record, or a function that builds it: building a Faust record costs
    25-70 µs, which the hot path should not pay either. ``on_error`` is told if building or
    encoding fails (the source counts it as a bad notification); it is logged either way.

    Faust encodes a record (Avro) inside ``send_soon``. The venue writes a market step as a
    burst of notifications (ticker, book, index); deferring the produces to a ``call_soon``
    lets the hot path handle the burst first, so the index notification that follows a
    ticker is not kept waiting behind the ticker's records. Order is kept: every deferred
    produce goes through this one queue."""
    if not _later:
        asyncio.get_running_loop().call_soon(_produce_pending)
    _later.append((name, key, value, on_error))


def _produce_pending() -> None:
    pending = _later[:]
    _later.clear()
    for name, key, value, on_error in pending:
        try:
            record_topic(name).send_soon(key=key, value=value() if callable(value) else value)
        except Exception as exc:  # one record that cannot be built or encoded must not cost the others
            log.exception("producing a %s record (key %r) failed", name, key)
            if on_error is not None:
                on_error(exc)
