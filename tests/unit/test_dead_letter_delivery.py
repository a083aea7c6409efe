"""Dead letters and the batch commit: the persistence agent's ``publish_dead_letters``
(agents/persistence.py) returns only once the deferred producer has every letter delivered,
and raises when one is not; the sink (app/pipeline/sink/sink.py) then publishes the batch's
letters again, and ``persist``, after which the consumer commits, returns only once they are
on Kafka. The aiokafka producer is tests/unit/fake_kafka.py's recorder; the database is never
reached (every record of these batches is a dead letter)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents import persistence
from app.pipeline.sink import SinkConfig, SourceRecord, TopicSink, spec
from models.dead_letter import DeadLetter
from tests.unit.fake_kafka import Producer, deferred_on, settle

TOPIC = "cryptics.thalex.ticker.avro"


def encode(name: str, letter: Any) -> tuple[str, bytes]:
    assert name == "dead_letter"
    return "topic.dead_letter", f"{letter.source_partition}:{letter.source_offset}".encode()


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Producer:
    """The fake aiokafka producer behind the persistence agent's produce_confirmed."""
    fake = Producer()
    monkeypatch.setattr(persistence, "produce_confirmed", deferred_on(fake, encode).produce_confirmed)
    return fake


def valueless(offset: int) -> SourceRecord:
    """A record the sink dead-letters at once (stage decode: it has no value)."""
    return SourceRecord(TOPIC, 0, offset, b"BTC-PERPETUAL", None)


async def refuse_connection() -> Any:
    raise AssertionError("a batch of dead letters only must not need the database")


def sink() -> TopicSink:
    return TopicSink(spec("ticker"), TOPIC, decode=lambda data: {}, connect=refuse_connection,
                     publish_dead_letters=persistence.publish_dead_letters,
                     config=SinkConfig(retry_initial=0.01, retry_max=0.01))


def letter(offset: int) -> DeadLetter:
    return sink()._dead_letter(valueless(offset), "decode", "the record has no value")


async def test_publish_returns_once_every_letter_is_delivered(producer: Producer):
    await persistence.publish_dead_letters([letter(5), letter(6)])
    assert producer.values() == [b"0:5", b"0:6"]


async def test_publish_raises_when_a_letter_is_not_delivered(producer: Producer):
    producer.fail_next_delivery = True
    with pytest.raises(ConnectionError, match="broker gone"):
        await persistence.publish_dead_letters([letter(5), letter(6)])


async def test_a_batch_is_done_only_once_its_dead_letters_are_on_kafka(producer: Producer):
    held: list[asyncio.Future] = []
    deliver = producer.send_batch

    async def hold(batch: Any, topic: str, *, partition: int) -> asyncio.Future:
        held.append(await deliver(batch, topic, partition=partition))
        return asyncio.get_running_loop().create_future()  # the broker has not answered yet
    producer.send_batch = hold  # type: ignore[method-assign]
    topic_sink = sink()
    persisting = asyncio.ensure_future(topic_sink.persist([valueless(5), valueless(6)]))
    await settle()
    assert len(producer.sent) == 1 and not persisting.done()  # handed over, not delivered: no commit yet
    persisting.cancel()  # the worker stops: the batch in hand is not committed and comes again
    with pytest.raises(asyncio.CancelledError):
        await persisting
    assert topic_sink.stats.batches == 0 and topic_sink.stats.dead_letters == 0


async def test_a_failed_delivery_makes_the_sink_publish_the_letters_again_before_the_batch_is_done(
        producer: Producer):
    producer.fail_next_delivery = True
    topic_sink = sink()
    await topic_sink.persist([valueless(5), valueless(6)])
    # Sent twice: the first batch was refused, the second delivered; only then was the batch done.
    assert producer.values() == [b"0:5", b"0:6", b"0:5", b"0:6"]
    assert topic_sink.stats.retries == 1 and "producing dead letters" in topic_sink.stats.last_error
    assert topic_sink.stats.dead_letters == 2 and topic_sink.stats.batches == 1
