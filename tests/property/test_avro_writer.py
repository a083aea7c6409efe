"""The compiled Avro writer (app/pipeline/avro_writer.py) writes exactly what fastavro writes:
random values generated from every schema version in schemas/ encode to the same bytes with
both. Examples, the fallback and refused schemas: tests/unit/test_avro_writer.py.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.pipeline.avro_writer import compile_writer
from tests.unit.test_avro_writer import SCHEMA_DIR, fastavro_bytes, values

SCHEMAS = sorted(SCHEMA_DIR.glob("*/v*.avsc"))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: f"{p.parent.name}/{p.stem}")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_compiled_writer_writes_what_fastavro_writes(path, data):
    schema = json.loads(path.read_text())
    value = data.draw(values(schema, {}))
    assert compile_writer(schema)(value) == fastavro_bytes(schema, value)
