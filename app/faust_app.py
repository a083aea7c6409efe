"""The Faust application: one app object, configured from app/settings.py.

Agents live in agents/ and are imported by ``cryptics worker`` (app/worker.py),
which is what registers them on this app.

Everything the worker publishes itself goes onto Kafka one way: ``produce_later``
(fire and forget, the hot path) or ``produce_confirmed`` (a future the broker's
acknowledgement completes), both through one ``DeferredProducer``
(app/pipeline/producer.py) on the aiokafka producer inside Faust's.
"""
from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any, Callable, Optional

import faust

from app import settings as settings_module
from app.pipeline import complete_flush
from app.pipeline.codec import AvroCodec
from app.pipeline.producer import DeferredProducer
from app.security import faust_broker_credentials

complete_flush.register()

settings = settings_module.load()


def web_url(s: settings_module.Settings) -> str:
    """This worker's real web URL, from CRYPTICS_WEB_HOST and CRYPTICS_WEB_PORT. A wildcard
    host (0.0.0.0, ::) listens everywhere but cannot be dialled from another machine: the
    host's name stands in for it."""
    host = s.web_host
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{s.web_port}"


def create_app(s: settings_module.Settings) -> faust.App:
    # Without a broker URL the worker has nothing to talk to; ``cryptics up``
    # always provides one, ``cryptics worker`` checks for it before starting.
    broker = s.broker_url or "kafka://127.0.0.1:9092"
    return faust.App(
        s.app_id,
        broker=broker,
        # TLS and SASL for every client Faust makes (docs/operations.md#secured-connections).
        broker_credentials=faust_broker_credentials(s),
        store="memory://",
        # exactly_once does not work on Tansu (docs/architecture.md#d6-embedded-broker-tansu)
        processing_guarantee="at_least_once",
        # Faust would otherwise wait, on shutdown and on every rebalance, until each event
        # taken is acked. A persistence agent acks only after its batch commits, so with the
        # database away a SIGTERM (or a rebalance) waited forever. Every consumer here is
        # idempotent (docs/architecture.md#d8-persistence-semantics): an unacked event is
        # simply delivered again.
        stream_wait_empty=False,
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication,
        broker_session_timeout=s.session_timeout,
        broker_heartbeat_interval=min(3.0, s.session_timeout / 3),
        consumer_auto_offset_reset="earliest",
        producer_linger=s.producer_linger,
        # No standby copies of the tables: a worker's tables hold the keys of its own partitions
        # only, and a partition that moves is recovered from its changelog by its new owner.
        table_standby_replicas=0,
        web_host=s.web_host,
        web_port=s.web_port,
        web_bind=s.web_host,
        # How the other workers reach this one: the assignor hands it to every member with the
        # partitions this worker holds, and the table views ask peers there (agents/table_views.py).
        canonical_url=web_url(s),
        datadir=str(s.state_dir / "faust"),
        # Faust's own internal topics (changelogs, leader) are created explicitly by
        # Faust with topic_partitions; pipeline topics by `cryptics topics create`.
        topic_allow_declare=True,
    )


app = create_app(settings)


def avro_value_codec(topic: str, schema: Any) -> AvroCodec:
    """The codec for values of ``topic``: subject ``<topic>-value``
    (docs/architecture.md#d4-avro-and-schemas)."""
    return AvroCodec(f"{topic}-value", schema, settings.schema_registry_url)


@functools.lru_cache(maxsize=None)
def record_topic(name: str) -> faust.TopicT:
    """The Faust topic of record ``name`` (models/registry.py): Avro values of the
    newest schema, key = the record's key field as a plain string
    (docs/architecture.md#d3-kafka-topics)."""
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


def _encode_record(name: str, value: Any) -> tuple[str, bytes]:
    """Record ``name``'s topic and the Avro bytes of ``value`` (Confluent wire format,
    docs/architecture.md#d4-avro-and-schemas)."""
    topic = record_topic(name)
    payload = value.to_representation() if isinstance(value, faust.Record) else value
    return topic.get_topic_name(), topic.value_serializer.dumps(payload)


async def _kafka_producer() -> Any:
    """The aiokafka producer inside Faust's: one set of broker connections for the worker."""
    await app.producer.maybe_start()  # started by the worker already; this only waits for it
    return app.producer._producer  # the driver keeps it there (faust/transport/drivers/aiokafka.py)


deferred_producer = DeferredProducer(_encode_record, _kafka_producer)


def produce_later(name: str, key: Any, value: Any, on_error: Optional[Callable[[Exception], None]] = None) -> None:
    """Produce record ``name`` (models/registry.py) with ``key`` to its topic, but only once the
    event loop has finished what it is doing now (Kafka off the critical path:
    docs/architecture.md#d1-the-hot-path-stays-in-one-process).

    ``value`` is the record, or a function that builds it: building a Faust record costs
    25-70 µs, which the hot path should not pay either. ``on_error`` is told if building or
    encoding fails (the source counts it as a bad notification); it is logged either way.

    The venue writes a market step as a burst of notifications (ticker, book, index);
    deferring the record work lets the hot path handle the whole burst first, so the index
    notification that follows a ticker is not kept waiting behind the ticker's records.
    Order is kept per topic-partition. How the records reach Kafka: app/pipeline/producer.py."""
    deferred_producer.produce(name, key, value, on_error)


def produce_confirmed(name: str, key: Any, value: Any) -> asyncio.Future:
    """Like ``produce_later``, for a caller that must know the broker has the record: the
    returned future completes with the record's RecordMetadata once its batch is delivered,
    or with the exception that kept it off Kafka (encoding included). The record is queued
    when this is called, so records of one topic-partition keep the order of the calls."""
    return deferred_producer.produce_confirmed(name, key, value)


@app.on_before_shutdown.connect
async def _flush_deferred_records(sender: Any, **kwargs: Any) -> None:
    # Faust flushes its own producer after this signal: what was deferred goes out first.
    await deferred_producer.flush()
