"""The Tansu end-offset defect (docs/architecture.md#d6-embedded-broker-tansu), and the correction that fixes it, on a real broker."""
from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.pipeline import topics
from app.pipeline.tansu_compat import corrected_end_offsets


async def _produce_batches(bootstrap: str, topic: str, sizes: dict[int, int]) -> None:
    """Write ``sizes[p]`` records to partition p, as multi-record batches."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=100)
    await producer.start()
    try:
        futures = []
        for partition, count in sizes.items():
            for i in range(count):
                futures.append(await producer.send(topic, b"v%d" % i, key=b"k", partition=partition))
        for f in futures:
            await f
    finally:
        await producer.stop()


async def test_list_offsets_under_reports_and_the_correction_fixes_it(broker):
    topic = "compat-check"
    await topics.ensure_topics(broker.url, [topic], partitions=3)
    sizes = {0: 250, 1: 1, 2: 0}
    await _produce_batches(broker.bootstrap, topic, sizes)
    tps = [TopicPartition(topic, p) for p in sizes]

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        reported = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()

    # The defect: after a multi-record batch, ListOffsets(LATEST) stops short.
    # If this ever fails, Tansu was fixed and app/pipeline/tansu_compat.py can go.
    assert reported[tps[0]] < 250

    corrected = await corrected_end_offsets(broker.bootstrap, reported)
    assert corrected == {tps[0]: 250, tps[1]: 1, tps[2]: 0}


async def test_topics_are_created_with_the_configured_partitions(broker):
    first = await topics.ensure_topics(broker.url, ["a.avro", "b.avro"], partitions=3)
    assert sorted(first.created) == ["a.avro", "b.avro"]
    again = await topics.ensure_topics(broker.url, ["a.avro", "b.avro"], partitions=3)
    assert again.created == () and sorted(again.existing) == ["a.avro", "b.avro"]


async def test_partition_count_mismatch_is_refused(broker):
    await topics.ensure_topics(broker.url, ["c.avro"], partitions=2)
    try:
        await topics.ensure_topics(broker.url, ["c.avro"], partitions=3)
    except topics.TopicMismatch as exc:
        assert "c.avro" in str(exc) and "2" in str(exc)
    else:
        raise AssertionError("a topic with 2 partitions was accepted where 3 are configured")


def test_bootstrap_servers_parsing():
    assert topics.bootstrap_servers("tansu://127.0.0.1:1234") == "127.0.0.1:1234"
    assert topics.bootstrap_servers("kafka://k1:9092;k2:9092") == "k1:9092,k2:9092"


async def test_partition_starts_are_the_group_commit_or_the_log_start(broker):
    """Where the analytics' continuity guard expects a newly assigned partition to start."""
    topic = "starts-check"
    await topics.ensure_topics(broker.url, [topic], partitions=3)
    await _produce_batches(broker.bootstrap, topic, {0: 30, 1: 5, 2: 0})
    committer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="starts-group", enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): 17})
    finally:
        await committer.stop()
    starts = await topics.partition_starts(broker.bootstrap, "starts-group", [(topic, 0), (topic, 1), (topic, 2)])
    assert starts == {(topic, 0): 17, (topic, 1): 0, (topic, 2): 0}
    # Another group has committed nothing: every partition starts at the log's first offset.
    assert await topics.partition_starts(broker.bootstrap, "other-group", [(topic, 0)]) == {(topic, 0): 0}
    assert await topics.partition_starts(broker.bootstrap, "starts-group", []) == {}
