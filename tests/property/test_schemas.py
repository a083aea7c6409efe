"""Random values of every schema round-trip, and values of older versions resolve under the
newest (BACKWARD, docs/architecture.md#d4-avro-and-schemas). The schema and model checks:
tests/unit/test_schemas.py.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import schemas
from models.registry import record
from tests.unit.test_schemas import NAMES, PAIRS, added_fields, read, write

_LONG = st.integers(-(2**63), 2**63 - 1)


_DATETIMES = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                          timezones=st.just(timezone.utc))


_STRATEGIES: dict[str, st.SearchStrategy] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": _LONG,
    # NaN is valid Avro but never equal to itself; infinities round-trip.
    "double": st.floats(allow_nan=False),
    "float": st.floats(allow_nan=False, width=32),
    "string": st.text(max_size=20),
    "bytes": st.binary(max_size=20),
}


_RANDOM = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def avro_strategy(schema: Any, named: dict[str, st.SearchStrategy] | None = None) -> st.SearchStrategy:
    """Values valid for ``schema`` as fastavro reads them: a small generator from the Avro schema."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return st.one_of([avro_strategy(branch, named) for branch in schema])
    if isinstance(schema, str):
        return _STRATEGIES[schema] if schema in _STRATEGIES else named[schema]
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-micros":
        return _DATETIMES
    if kind == "enum":
        named[schema["name"]] = strategy = st.sampled_from(schema["symbols"])
        return strategy
    if kind == "array":
        return st.lists(avro_strategy(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), avro_strategy(schema["values"], named), max_size=4)
    if kind == "record":
        fields = {f["name"]: avro_strategy(f["type"], named) for f in schema["fields"]}
        named[schema["name"]] = strategy = st.fixed_dictionaries(fields)
        return strategy
    return avro_strategy(kind, named)


@pytest.mark.parametrize("name", NAMES)
@_RANDOM
@given(data=st.data())
def test_random_values_round_trip(name: str, data: st.DataObject) -> None:
    rt = record(name)
    value = data.draw(avro_strategy(rt.schema), label=name)
    assert read(write(rt.schema, value), rt.schema) == value
    model = rt.model.from_data(value)
    assert model.to_representation() == value


@pytest.mark.parametrize("name,old,new", PAIRS)
@_RANDOM
@given(data=st.data())
def test_random_older_values_resolve(name: str, old: int, new: int, data: st.DataObject) -> None:
    older, newer = schemas.load(name, old), schemas.load(name, new)
    value = data.draw(avro_strategy(older), label=f"{name} v{old}")
    decoded = read(write(older, value), older, newer)
    assert decoded == {**value, **{f["name"]: None for f in added_fields(older, newer)}}
