"""The persisted tables checked against their topics: each topic read back from Kafka, each
record's natural key in every table it feeds, against the keys the tables hold.

For tests and the fault campaign (benchmarks/fault_campaign.py). A table's primary key is
its natural key, so its rows are its distinct keys: "every topic record is one row" reads
"the topic's distinct keys are the table's keys". Records that do not decode (poison) are
counted apart: the sink sends them to the dead-letter topic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.pipeline.codec import AvroCodec, WireFormatError
from app.pipeline.sink.tables import TABLES, SourceRecord, tables_of
from app.pipeline.topics import read_until_quiet
from models.registry import record


@dataclass
class TopicKeys:
    """What one persisted record's topic holds."""

    records: int = 0
    #: (partition, offset) of every record that does not decode.
    undecodable: set = field(default_factory=set)
    #: Per table the record feeds, the distinct natural keys of the decoded records.
    keys: dict[str, set] = field(default_factory=dict)
    #: (partition, offset) of each decoded record → its natural key in each table.
    key_at: dict[tuple[int, int], dict[str, tuple]] = field(default_factory=dict)


async def topic_keys(bootstrap: str, registry_url: str, name: str) -> TopicKeys:
    """Record ``name``'s topic read back: its records, the undecodable ones, each table's keys."""
    r = record(name)
    codec = AvroCodec(r.subject, r.schema, registry_url)
    out = TopicKeys(keys={s.table: set() for s in tables_of(name)})
    for m in await read_until_quiet(bootstrap, r.topic):
        out.records += 1
        try:
            value = codec.loads(m.value)
        except WireFormatError:
            out.undecodable.add((m.partition, m.offset))
            continue
        src = SourceRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp / 1000)
        at = out.key_at[(m.partition, m.offset)] = {}
        for s in tables_of(name):
            at[s.table] = key = s.key_of(s.build(value, src))
            out.keys[s.table].add(key)
    return out


async def table_keys(conn) -> dict[str, set]:
    """Every persisted table's natural keys, read through the asyncpg connection ``conn``."""
    out = {}
    for table, table_spec in TABLES.items():
        rows = await conn.fetch(f"SELECT {', '.join(table_spec.key)} FROM {table}")
        out[table] = {tuple(row) for row in rows}
    return out
