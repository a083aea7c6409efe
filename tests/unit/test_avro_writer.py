"""The compiled Avro writer (app/pipeline/avro_writer.py), by example: the values it leaves to
fastavro (through AvroCodec's fallback), and the schemas it does not take. That it writes
exactly what fastavro writes, on random values of every schema: tests/property/test_avro_writer.py.
"""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pytest
from hypothesis import strategies as st

from app.pipeline.avro_writer import Unsupported, compile_writer

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
TICKER = json.loads((SCHEMA_DIR / "ticker" / "v2.avsc").read_text())
ZONES = st.sampled_from([timezone.utc, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])


def values(schema, named: dict, namespace: str = ""):
    """A Hypothesis strategy for values of ``schema``."""
    if isinstance(schema, list):
        return st.one_of(*(values(branch, named, namespace) for branch in schema))
    if isinstance(schema, str):
        primitive = {
            "null": st.none(), "boolean": st.booleans(), "int": st.integers(-2**31, 2**31 - 1),
            "long": st.integers(-2**63, 2**63 - 1),
            "double": st.floats(allow_nan=False) | st.integers(-2**53, 2**53), "string": st.text(max_size=20),
            "bytes": st.binary(max_size=20),
        }
        if schema in primitive:
            return primitive[schema]
        full = schema if "." in schema else f"{namespace}.{schema}"
        return st.deferred(lambda: named[full])
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-micros":
        return st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=ZONES) \
            | st.integers(-2**62, 2**62)
    if kind == "record":
        namespace = schema.get("namespace", namespace)
        strategy = st.fixed_dictionaries({f["name"]: values(f["type"], named, namespace) for f in schema["fields"]})
        named[f"{namespace}.{schema['name']}"] = strategy
        return strategy
    if kind == "enum":
        strategy = st.sampled_from(schema["symbols"])
        named[f"{schema.get('namespace', namespace)}.{schema['name']}"] = strategy
        return strategy
    if kind == "array":
        return st.lists(values(schema["items"], named, namespace), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), values(schema["values"], named, namespace), max_size=4)
    return values(kind, named, namespace)


def fastavro_bytes(schema, value) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), value)
    return out.getvalue()


def test_values_left_to_fastavro_are_refused_not_miswritten():
    ticker = TICKER
    write = compile_writer(ticker)
    from models.examples import example

    good = example("ticker")
    assert write(good) == fastavro_bytes(ticker, good)
    for field, odd in (("received_at", datetime(2026, 1, 1)),  # naive: fastavro's own rule applies
                       ("mark_price", True), ("mark_price", "100"), ("instrument_name", b"BTC"),
                       ("received_at", 2**64)):
        with pytest.raises(Unsupported):
            write({**good, field: odd})
    with pytest.raises(Unsupported):
        write({k: v for k, v in good.items() if k != "mark_price"})  # required, no default


def test_schemas_outside_its_subset_are_refused():
    for schema in (["null", "string", "double"], {"type": "fixed", "name": "F", "size": 4}, "float",
                   {"type": "int", "logicalType": "date"}, "Nowhere"):
        with pytest.raises(Unsupported):
            compile_writer(schema)


def test_the_codec_falls_back_to_fastavro_for_what_the_writer_refuses():
    from app.pipeline.codec import AvroCodec
    from models.examples import example

    ticker = TICKER
    codec = AvroCodec("t-value", ticker, None)
    codec._schema_id = 7  # no registry needed to frame the bytes
    naive = {**example("ticker"), "received_at": datetime(2026, 1, 1, 12)}
    assert codec._dumps(naive) == b"\x00\x00\x00\x00\x07" + fastavro_bytes(ticker, naive)
    with pytest.raises((ValueError, TypeError)):
        codec._dumps({**example("ticker"), "mark_price": "not a number"})


def test_a_timestamp_beyond_year_9999_is_a_wire_format_error():
    """fastavro raises OverflowError reading it; the codec turns it into the error the sink
    dead-letters, like any other undecodable bytes."""
    from app.pipeline.codec import AvroCodec, WireFormatError
    from models.examples import example

    codec = AvroCodec("t-value", TICKER, None)
    codec._schema_id = 7
    codec._writers[7] = codec.parsed  # the writer schema the registry would give for id 7
    with pytest.raises(WireFormatError, match="OverflowError"):
        codec._loads(codec._dumps({**example("ticker"), "received_at": 2**62}))
