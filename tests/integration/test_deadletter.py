"""`cryptics deadletter list` and `replay` as a user runs them, against a real broker and registry.

Real parts: a Tansu broker and the schema registry (conftest fixtures), the CLI as a child
process. The test writes the "poisoned" originals onto their source topics and the dead
letters the sink would have made of them onto the dead-letter topic (several per batch,
so the Tansu end-offset defect of docs/architecture.md#d6-embedded-broker-tansu is in
play), then reads the topics back.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.pipeline import topics
from app.pipeline.codec import AvroCodec
from app.stack.process import environ_for_child
from models.examples import example
from models.registry import record

from .conftest import ROOT, cryptics

TICKER, BOOK, FILL = (record(name).topic for name in ("ticker", "book", "fill"))
DEAD = record("dead_letter")
SOURCE_TOPICS = (TICKER, BOOK, FILL)
#: Records already on the source partitions before the poisoned ones: offsets other than 0.
EARLIER_RECORDS = 2


@dataclass
class Letter:
    """One dead letter the test makes, and where things ended up."""

    name: str
    source_topic: str
    source_partition: int
    stage: str
    table: str
    key: bytes
    value: Optional[bytes]
    error: str
    #: Partition of the dead letter on the dead-letter topic.
    partition: int
    failed_at: datetime = datetime(2025, 5, 18, 14, 34, 15, tzinfo=timezone.utc)
    source_offset: int = -1
    offset: int = -1

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"


def _letters() -> list[Letter]:
    # The value bytes need to be exact and distinct, not decodable: replay never decodes them.
    return [
        Letter("A", TICKER, 2, "database", "tickers", b"BTC-PERPETUAL",
               b"\x00\x00\x00\x00\x01\x1aBTC-PERPETUAL\x00\x00\x00\x00\x00\x00\xf0\xbf",
               "CheckViolationError: value for domain positive_float8 violates check constraint", partition=1),
        Letter("B", BOOK, 0, "row", "book_tops", b"ETH-PERPETUAL",
               b"\x00\x00\x00\x00\x02book-bytes-" + bytes(range(40)), "ValueError: exchange time is NaN", partition=1),
        Letter("C", TICKER, 1, "decode", "tickers", b"BTC-PERPETUAL", None, "the record has no value", partition=1),
        Letter("D", FILL, 1, "database", "fills", b"BTC-PERPETUAL", b"\x00\x00\x00\x00\x03fill\xff\x00bytes",
               "NotNullViolationError: null value in column \"price\" " + "x" * 100, partition=0),
        Letter("E", TICKER, 0, "decode", "tickers", b"ETH-PERPETUAL", b"not avro at all",
               "WireFormatError: magic byte is 110, expected 0", partition=2),
    ]


async def _seed(broker, registry_url: str) -> list[Letter]:
    """Create the topics, write the originals and their dead letters; fill in every offset."""
    await topics.ensure_topics(broker.url, topics.PIPELINE_TOPICS, partitions=3)
    letters = _letters()
    codec = AvroCodec(DEAD.subject, DEAD.schema, registry_url)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=200)
    await producer.start()
    try:
        # Sent together and awaited together: one linger for all, not one per record.
        earlier = [await producer.send(topic, b"earlier %d" % i, key=b"BTC-PERPETUAL", partition=partition)
                   for topic in SOURCE_TOPICS for partition in range(3) for i in range(EARLIER_RECORDS)]
        await asyncio.gather(*earlier)
        originals = [await producer.send(letter.source_topic, letter.value, key=letter.key,
                                         partition=letter.source_partition) for letter in letters]
        for letter, delivery in zip(letters, originals):
            letter.source_offset = (await delivery).offset
        # All dead letters sent before any is awaited: the linger puts the three of
        # partition 1 into one batch, after which Tansu under-reports the end offset.
        pending = []
        for i, letter in enumerate(letters):
            value = example("dead_letter")
            value.update(source_topic=letter.source_topic, source_partition=letter.source_partition,
                         source_offset=letter.source_offset, stage=letter.stage, error=letter.error,
                         failed_at=letter.failed_at + timedelta(seconds=i), key=letter.key, value=letter.value,
                         target_table=letter.table)
            letter.failed_at = value["failed_at"]
            pending.append(await producer.send(DEAD.topic, codec.dumps(value), key=letter.source_topic.encode(),
                                               partition=letter.partition))
        for letter, delivery in zip(letters, pending):
            letter.offset = (await delivery).offset
    finally:
        await producer.stop()
    return letters


Records = dict[tuple[str, int], list[tuple[Optional[bytes], Optional[bytes]]]]


async def _read_sources(bootstrap: str) -> Records:
    """Every (key, value) on each partition of the source topics, read until the broker has nothing more."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: Records = {(topic, p): [] for topic in SOURCE_TOPICS for p in range(3)}
    try:
        consumer.assign([TopicPartition(topic, p) for topic, p in out])
        idle = 0
        # not end_offsets(): Tansu under-reports them (docs/architecture.md#d6-embedded-broker-tansu)
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=300)
            idle = 0 if batch else idle + 1
            for tp, messages in batch.items():
                out[(tp.topic, tp.partition)].extend((m.key, m.value) for m in messages)
    finally:
        await consumer.stop()
    return out


def run(broker, registry_url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = environ_for_child({"CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
                             "CRYPTICS_STATE_DIR": str(tmp_path / "state")})
    return subprocess.run(cryptics("deadletter", *args), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def listed(broker, registry_url: str, tmp_path, *filters: str) -> list[dict]:
    result = run(broker, registry_url, tmp_path, "list", "--json", *filters)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ids(entries: list[dict]) -> list[str]:
    return [entry["id"] for entry in entries]


def in_order(letters: list[Letter]) -> list[Letter]:
    return sorted(letters, key=lambda letter: (letter.partition, letter.offset))


def test_list_shows_every_dead_letter_with_its_coordinates(broker, registry_url, tmp_path):
    asyncio.run(topics.ensure_topics(broker.url, topics.PIPELINE_TOPICS, partitions=3))
    assert listed(broker, registry_url, tmp_path) == []
    nothing = run(broker, registry_url, tmp_path, "replay", "--all")
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing to replay" in nothing.stdout

    letters = asyncio.run(_seed(broker, registry_url))
    by_name = {letter.name: letter for letter in letters}

    # The setup really has the defect the reader must work around; without it this test
    # could not tell a reader that trusts end_offsets() from one that does not.
    async def reported_end() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(DEAD.topic, 1)
            return (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()
    assert asyncio.run(reported_end()) < 3

    entries = listed(broker, registry_url, tmp_path)
    assert entries == [
        {"id": letter.id, "partition": letter.partition, "offset": letter.offset,
         "failed_at": letter.failed_at.isoformat(), "stage": letter.stage,
         "source_topic": letter.source_topic, "source_partition": letter.source_partition,
         "source_offset": letter.source_offset, "target_table": letter.table, "error": letter.error,
         "key": letter.key.decode(), "key_hex": letter.key.hex(),
         "value_length": len(letter.value) if letter.value is not None else None}
        for letter in in_order(letters)
    ]
    assert all(letter.source_offset == EARLIER_RECORDS for letter in letters)  # not 0: coordinates are real

    def names(*filters: str) -> set[str]:
        found = ids(listed(broker, registry_url, tmp_path, *filters))
        return {letter.name for letter in letters if letter.id in found}

    assert names("--topic", TICKER) == {"A", "C", "E"}
    assert names("--stage", "database") == {"A", "D"}
    assert names("--table", "fills") == {"D"}
    # Values of one filter: any of them; different filters: all of them.
    assert names("--topic", BOOK, "--topic", FILL, "--stage", "row") == {"B"}

    table = run(broker, registry_url, tmp_path, "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "FAILED", "AT", "(UTC)", "STAGE", "SOURCE", "TABLE", "ERROR"]
    assert lines[-1] == f"5 dead letters on {DEAD.topic}"
    d = by_name["D"]
    (row_d,) = [line for line in lines if line.startswith(d.id + " ")]
    assert f"{FILL}[1]@{d.source_offset}" in row_d and " fills " in row_d
    assert d.failed_at.strftime("%Y-%m-%d %H:%M:%S") in row_d
    assert d.error not in row_d and row_d.endswith("…")  # long errors are shortened in the table

    bad_stage = run(broker, registry_url, tmp_path, "list", "--stage", "nonsense")
    assert bad_stage.returncode != 0 and "nonsense" in bad_stage.stderr


def test_replay_puts_back_exactly_the_chosen_records(broker, registry_url, tmp_path):
    letters = asyncio.run(_seed(broker, registry_url))
    by_name = {letter.name: letter for letter in letters}
    before = asyncio.run(_read_sources(broker.bootstrap))
    assert len(before[(TICKER, 2)]) == EARLIER_RECORDS + 1  # the final comparison sees the originals too

    nothing_chosen = run(broker, registry_url, tmp_path, "replay")
    assert nothing_chosen.returncode != 0
    assert "nothing chosen" in nothing_chosen.stderr and "--all" in nothing_chosen.stderr
    filters_without_all = run(broker, registry_url, tmp_path, "replay", "--stage", "database")
    assert filters_without_all.returncode != 0 and "--all" in filters_without_all.stderr
    unknown = run(broker, registry_url, tmp_path, "replay", "--id", "0:999")
    assert unknown.returncode != 0 and "no dead letter at 0:999" in unknown.stderr

    dry = run(broker, registry_url, tmp_path, "replay", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for name in "ABDE":
        assert f"would replay {by_name[name].id} " in dry.stdout
    assert f"skipped {by_name['C'].id}: no value" in dry.stdout
    assert "would replay 4 of 5 chosen; skipped 1 (dry run: nothing produced)" in dry.stdout

    a, c, d, e = (by_name[name] for name in "ACDE")
    chosen = run(broker, registry_url, tmp_path, "replay", "--id", a.id, "--id", c.id, "--id", d.id)
    assert chosen.returncode == 0, chosen.stderr
    # Each lands right after the original record, on the original partition.
    assert f"replayed {a.id} " in chosen.stdout and f"-> {TICKER}[2]@{a.source_offset + 1}:" in chosen.stdout
    assert f"replayed {d.id} " in chosen.stdout and f"-> {FILL}[1]@{d.source_offset + 1}:" in chosen.stdout
    assert f"skipped {c.id}: no value to replay" in chosen.stdout
    assert "replayed 2 of 3 chosen; skipped 1" in chosen.stdout

    by_filter = run(broker, registry_url, tmp_path, "replay", "--all", "--topic", TICKER, "--stage", "decode")
    assert by_filter.returncode == 0, by_filter.stderr
    assert f"replayed {e.id} " in by_filter.stdout and f"skipped {c.id}: no value" in by_filter.stdout
    assert "replayed 1 of 2 chosen; skipped 1" in by_filter.stdout

    # Exactly the replayed records were added, each to its own partition; the dry run and
    # the refused commands produced nothing.
    expected = {coordinates: list(records) for coordinates, records in before.items()}
    expected[(TICKER, 2)].append((a.key, a.value))
    expected[(FILL, 1)].append((d.key, d.value))
    expected[(TICKER, 0)].append((e.key, e.value))
    assert asyncio.run(_read_sources(broker.bootstrap)) == expected

    # The dead letters stay where they were: replay reads, never deletes.
    assert ids(listed(broker, registry_url, tmp_path)) == [letter.id for letter in in_order(letters)]


def test_dead_letter_commands_have_help():
    for command in (["deadletter"], ["deadletter", "list"], ["deadletter", "replay"]):
        result = subprocess.run(cryptics(*command, "--help"), cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Usage: cryptics {' '.join(command)} ")
    replay_help = subprocess.run(cryptics("deadletter", "replay", "--help"), cwd=ROOT, capture_output=True,
                                 text=True, timeout=60).stdout
    assert "Safe to repeat" in replay_help and "natural keys" in replay_help


def test_dead_letter_commands_need_broker_and_registry():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTICS_")}
    no_broker = subprocess.run(cryptics("deadletter", "list"), cwd=ROOT, env=clean, capture_output=True,
                               text=True, timeout=60)
    assert no_broker.returncode != 0 and "CRYPTICS_BROKER_URL" in no_broker.stderr
    no_registry = subprocess.run(cryptics("deadletter", "replay", "--all"), cwd=ROOT,
                                 env={**clean, "CRYPTICS_BROKER_URL": "kafka://127.0.0.1:9"},
                                 capture_output=True, text=True, timeout=60)
    assert no_registry.returncode != 0 and "CRYPTICS_SCHEMA_REGISTRY_URL" in no_registry.stderr
