"""The registry's compatibility checker (app/stack/registry/compat.py) against fastavro itself:
schema evolutions it calls compatible really decode (written with the writer, read with the
reader). The table of resolution rules: tests/unit/test_registry_compat.py.
"""
from __future__ import annotations

import io

import fastavro
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.stack.registry.compat import can_read
from tests.unit.test_registry_compat import evolutions, expected, same, values


def decode_checks(writer: dict, reader: dict, datum: dict) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(writer), datum)
    out.seek(0)
    decoded = fastavro.schemaless_reader(out, fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    want = expected(datum, writer, reader)
    assert same(decoded, want), (decoded, want)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_safe_evolutions_are_compatible_and_decode(data: st.DataObject) -> None:
    writer, reader = data.draw(evolutions(safe_only=True))
    assert can_read(reader, writer) == []
    decode_checks(writer, reader, data.draw(values(writer)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_whatever_the_checker_accepts_fastavro_decodes(data: st.DataObject) -> None:
    writer, reader = data.draw(evolutions(safe_only=False))
    if can_read(reader, writer):
        event("incompatible")
        return
    event("compatible")
    decode_checks(writer, reader, data.draw(values(writer)))
