"""The sink's rows of the analytics records and what an insert hands back, without a database.

- the row builders of markout, pnl_snapshot and quote_quality (app/pipeline/sink/tables.py)
  put each field in its column, in the spec's order, and convert the fill's exchange time;
- a spec's ``returning`` columns must be columns (or persisted_at), and only such a spec's
  INSERT carries a RETURNING clause, on the COPY and the unnest path alike;
- the ack → persisted sample of an inserted row: its stamps and its exact duration;
- TopicSink tells ``on_inserted`` what the writer returned, once per batch, and nothing when
  the batch inserted nothing; the persistence consumer's ``publish_ack_latency`` produces one
  sample per row that names an instrument.
Writing them into PostgreSQL: tests/integration/test_sink_writer.py.
"""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agents import persistence
from app.pipeline.sink import SinkConfig, SourceRecord, TableSpec, TableWriter, TopicSink, WriteResult, spec
from app.pipeline.sink.tables import ACK_PERSISTED_STAGE, ACK_RETURNING, ack_persisted_sample
from models import examples
from models.latency import LatencySample

UTC = timezone.utc
SRC = SourceRecord("t", 0, 7, b"BTC-PERPETUAL", b"v", 1747578855.5)
AT = datetime(2025, 5, 18, 14, 0, 0, 123456, tzinfo=UTC)


def _by_column(record: str, value: dict) -> dict[str, Any]:
    table_spec = spec(record)
    row = table_spec.build(value, SRC)
    assert len(row) == len(table_spec.columns) == len(table_spec.types)
    return dict(zip(table_spec.columns, row))


def test_markout_row_puts_each_field_in_its_column():
    value = examples.example("markout")
    row = _by_column("markout", value)
    assert row.pop("time") == datetime.fromtimestamp(value["time"], UTC)
    assert row == {k: v for k, v in value.items() if k != "time"}
    assert spec("markout").key == ("trade_id", "order_id", "horizon_seconds", "time")


def test_markout_row_keeps_the_mid_columns_null_without_a_mid():
    value = {**examples.example("markout"), "mid_after": None, "markout_bps": None, "markout": None}
    row = _by_column("markout", value)
    assert (row["mid_after"], row["markout_bps"], row["markout"]) == (None, None, None)
    assert row["markout_bps_mark"] == value["markout_bps_mark"]


def test_a_markout_without_a_usable_time_cannot_become_a_row():
    with pytest.raises((ValueError, OverflowError)):
        spec("markout").build({**examples.example("markout"), "time": math.nan}, SRC)


@pytest.mark.parametrize("record", ["pnl_snapshot", "quote_quality"])
def test_per_minute_rows_are_the_record_field_by_field(record):
    value = examples.example(record)
    assert _by_column(record, value) == value  # the columns are the fields, the time is a stamp already
    assert spec(record).key == ("instrument_name", "time")


def test_the_tables_of_the_analytics_records():
    assert {r: spec(r).table for r in ("markout", "pnl_snapshot", "quote_quality")} == \
        {"markout": "markouts", "pnl_snapshot": "pnl_snapshots", "quote_quality": "quote_quality_1m"}


# -- returning ---------------------------------------------------------------------------------


def test_returning_must_name_columns():
    ack = spec("ack")
    assert ack.returning == ACK_RETURNING
    with pytest.raises(ValueError, match="returned columns"):
        replace(ack, returning=("time", "no_such_column"))
    assert replace(ack, returning=("persisted_at",)).returning == ("persisted_at",)


@pytest.mark.parametrize("mode", ["copy", "unnest"])
def test_only_a_spec_with_returning_gets_a_returning_clause(mode):
    ack, ticker = TableWriter(spec("ack"), mode), TableWriter(spec("ticker"), mode)
    statement = ack._insert_from_stage if mode == "copy" else ack._insert_unnest
    assert statement.endswith('ON CONFLICT DO NOTHING RETURNING "instrument_name", "time", "received_at", '
                              '"quoted_at", "order_sent_at", "persisted_at"')
    plain = ticker._insert_from_stage if mode == "copy" else ticker._insert_unnest
    assert plain.endswith("ON CONFLICT DO NOTHING") and "RETURNING" not in plain


def _inserted_ack(**changes: Any) -> dict[str, Any]:
    row = {"instrument_name": "BTC-PERPETUAL", "time": AT, "received_at": AT - timedelta(microseconds=900),
           "quoted_at": AT - timedelta(microseconds=820), "order_sent_at": AT - timedelta(microseconds=700),
           "persisted_at": AT + timedelta(milliseconds=4, microseconds=101)}
    row.update(changes)
    return row


def test_the_ack_persisted_sample_of_an_inserted_row():
    sample = ack_persisted_sample(_inserted_ack())
    assert isinstance(sample, LatencySample)
    assert (sample.stage, sample.instrument_name, sample.start_at, sample.end_at, sample.duration_us) == \
        (ACK_PERSISTED_STAGE, "BTC-PERPETUAL", AT, AT + timedelta(microseconds=4101), 4101)
    assert (sample.received_at, sample.quoted_at, sample.order_sent_at, sample.ack_received_at,
            sample.persisted_at) == (AT - timedelta(microseconds=900), AT - timedelta(microseconds=820),
                                     AT - timedelta(microseconds=700), AT, AT + timedelta(microseconds=4101))
    # an unprompted ack (a resting order filled) has no request stamps: the sample has none either
    bare = ack_persisted_sample(_inserted_ack(received_at=None, quoted_at=None, order_sent_at=None))
    assert (bare.received_at, bare.quoted_at, bare.order_sent_at, bare.duration_us) == (None, None, None, 4101)
    assert ack_persisted_sample(_inserted_ack(instrument_name=None)) is None  # a combination order


# -- on_inserted ---------------------------------------------------------------------------------


class FakeConnection:
    def is_closed(self) -> bool:
        return False


class FakeWriter:
    """Stands in for TableWriter: returns what it is told, records what it was given."""

    def __init__(self, results: list[WriteResult]) -> None:
        self.results = results
        self.batches: list[list] = []

    async def write(self, conn: Any, rows: list, persisted_at: datetime) -> WriteResult:
        self.batches.append(rows)
        return self.results.pop(0)


async def _connect() -> FakeConnection:
    return FakeConnection()


async def _no_letters(letters) -> None:
    raise AssertionError(f"no dead letters expected: {letters}")


def _ack_sink(results: list[WriteResult], on_inserted) -> TopicSink:
    sink = TopicSink(spec("ack"), "cryptics.thalex.ack.avro", decode=lambda data: examples.example("ack"),
                     connect=_connect, publish_dead_letters=_no_letters, config=SinkConfig(), on_inserted=on_inserted)
    sink.writer = FakeWriter(results)  # type: ignore[assignment]
    return sink


async def test_the_sink_reports_the_inserted_rows_once_per_batch():
    reported: list = []
    first, second = _inserted_ack(), _inserted_ack(time=AT + timedelta(seconds=1))
    sink = _ack_sink([WriteResult(inserted=2, duplicates=1, transactions=1, returned=[first, second]),
                      WriteResult(inserted=0, duplicates=3, transactions=1)], reported.append)
    batch = [SourceRecord("cryptics.thalex.ack.avro", 0, i, b"k", b"v") for i in range(3)]
    await sink.persist(batch)
    assert reported == [[first, second]]
    await sink.persist(batch)  # the redelivery inserted nothing: nothing to report
    assert reported == [[first, second]]
    assert sink.stats.rows_written == 2 and sink.stats.duplicates == 4 and sink.stats.batches == 2


async def test_a_failing_report_does_not_fail_the_batch():
    def explode(rows) -> None:
        raise RuntimeError("cannot report")

    sink = _ack_sink([WriteResult(inserted=1, transactions=1, returned=[_inserted_ack()])], explode)
    await sink.persist([SourceRecord("cryptics.thalex.ack.avro", 0, 0, b"k", b"v")])
    assert sink.stats.batches == 1 and sink.stats.rows_written == 1


def test_publish_ack_latency_produces_one_sample_per_row_with_an_instrument(monkeypatch):
    produced: list = []
    monkeypatch.setattr(persistence, "produce_later",
                        lambda name, key, value, on_error=None: produced.append((name, key, value)))
    rows = [_inserted_ack(), _inserted_ack(instrument_name=None),
            _inserted_ack(instrument_name="ETH-PERPETUAL", time=AT + timedelta(seconds=1))]
    persistence.publish_ack_latency(rows)
    assert [(name, key) for name, key, _ in produced] == [("latency", "BTC-PERPETUAL"), ("latency", "ETH-PERPETUAL")]
    samples = [value() for _, _, value in produced]  # built when the producer gets to them
    assert [(s.instrument_name, s.start_at, s.stage) for s in samples] == \
        [("BTC-PERPETUAL", AT, ACK_PERSISTED_STAGE), ("ETH-PERPETUAL", AT + timedelta(seconds=1), ACK_PERSISTED_STAGE)]
    assert persistence.ON_INSERTED == {"ack": persistence.publish_ack_latency}
