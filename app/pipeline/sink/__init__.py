"""Persistence: pipeline records from Kafka into TimescaleDB/PostgreSQL (docs/architecture.md#d7-database, #d8-persistence-semantics).

- ``tables``: which record goes into which table(s) (timescale/0002, 0003, 0006, 0009), natural
  keys, and the row builders;
- ``writer``: one table's batches, binary COPY into a staging table and
  ``INSERT … ON CONFLICT DO NOTHING`` in one transaction, bisecting data errors;
- ``sink``: one topic's batches end to end: decode once, then per table build, write with
  retries, dead-letter what cannot be written;
- ``config``: batch size and age, retry pauses (``CRYPTICS_SINK_*``).

The Faust agents that feed it live in agents/persistence.py; ``cryptics deadletter``
(app/pipeline/deadletter.py) lists and replays the dead letters.
"""
from app.pipeline.sink.config import SinkConfig
from app.pipeline.sink.sink import SinkStats, SinkTable, TopicSink, for_record
from app.pipeline.sink.tables import RECORD_TABLES, SPECS, TABLES, SourceRecord, TableSpec, spec, tables_of
from app.pipeline.sink.writer import TableWriter, WriteResult

__all__ = ["RECORD_TABLES", "SPECS", "TABLES", "SinkConfig", "SinkStats", "SinkTable", "SourceRecord", "TableSpec",
           "TableWriter", "TopicSink", "WriteResult", "for_record", "spec", "tables_of"]
