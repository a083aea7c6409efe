"""The Avro schemas in schemas/ and the models mirroring them; pure, no network.

For every record (models/registry.py lists them):
- every version is a valid Avro schema for fastavro and for the registry's stricter
  validator (what the embedded registry accepts, Confluent accepts too);
- the model mirrors the newest version field by field (names, order, optionality,
  Python types, nested records), so models cannot drift from schemas;
- a realistic example (models/examples.py, from docs/thalex-protocol.md) round-trips through
  fastavro and through the model;
- every older version's data is read by every newer version (BACKWARD, docs/architecture.md#d4-avro-and-schemas),
  with the added fields None, and the registry's checker (app/stack/registry/compat.py)
  agrees, while it reports the changes that would break readers;
- the other folders are the analytics tables' value schemas (``TABLE_STATES``): each parses,
  sits in namespace cryptics.analytics and documents every field.
Random values of each schema: tests/property/test_schemas.py.
"""
from __future__ import annotations

import io
import types
import typing
from datetime import datetime
from itertools import combinations, pairwise
from typing import Any

import fastavro
import faust
import pytest
from fastavro.read import SchemaResolutionError

from app.stack.registry import compat
from models import examples, schemas
from models.registry import RECORDS, TABLE_STATES, record

NAMES = list(RECORDS)
VERSIONS = [(name, v) for name in NAMES for v in schemas.versions(name)]
PAIRS = [(name, old, new) for name in NAMES for old, new in combinations(schemas.versions(name), 2)]
EVOLVED = [name for name in NAMES if len(schemas.versions(name)) > 1]
STATE_VERSIONS = [(name, v) for name in TABLE_STATES if (schemas.SCHEMA_ROOT / name).is_dir()
                  for v in schemas.versions(name)]

TIMESTAMP_MICROS = {"type": "long", "logicalType": "timestamp-micros"}
STAMP = ["null", TIMESTAMP_MICROS]
MISSING = object()


def write(schema: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return out.getvalue()


def read(data: bytes, writer: Any, reader: Any | None = None) -> Any:
    writer_parsed = fastavro.parse_schema(writer)
    reader_parsed = fastavro.parse_schema(reader) if reader is not None else writer_parsed
    return fastavro.schemaless_reader(io.BytesIO(data), writer_parsed, reader_parsed)


def field_names(schema: dict) -> list[str]:
    return [f["name"] for f in schema["fields"]]


def added_fields(old: dict, new: dict) -> list[dict]:
    known = set(field_names(old))
    return [f for f in new["fields"] if f["name"] not in known]


# -- every version is a valid schema ----------------------------------------------------


def test_every_schema_folder_is_a_record_or_a_table_state() -> None:
    folders = {p.name for p in schemas.SCHEMA_ROOT.iterdir() if p.is_dir()}
    assert not set(RECORDS) & set(TABLE_STATES)
    assert folders == set(RECORDS) | set(TABLE_STATES)


@pytest.mark.parametrize("name,version", VERSIONS)
def test_schema_parses(name: str, version: int) -> None:
    schema = schemas.load(name, version)
    fastavro.parse_schema(schema)
    compat.validate(schema)  # the registry's own validation: unique fields, valid names, ...
    assert schema["type"] == "record"
    expected_namespace = "cryptics.system" if name == "heartbeat" else "cryptics.thalex"
    assert schema["namespace"] == expected_namespace
    assert schemas.versions(name) == list(range(1, len(schemas.versions(name)) + 1))


def _assert_documented(schema: Any, where: str) -> None:
    """Every record and enum in ``schema`` has a doc, and so has every field of every record."""
    if isinstance(schema, list):
        for branch in schema:
            _assert_documented(branch, where)
    elif isinstance(schema, dict) and schema.get("type") in ("record", "enum"):
        assert schema.get("doc", "").strip(), f"{where}: {schema['name']} has no doc"
        for f in schema.get("fields", ()):
            assert f.get("doc", "").strip(), f"{where}.{f['name']} has no doc"
            _assert_documented(f["type"], f"{where}.{f['name']}")
    elif isinstance(schema, dict) and schema.get("type") == "array":
        _assert_documented(schema["items"], where)
    elif isinstance(schema, dict) and schema.get("type") == "map":
        _assert_documented(schema["values"], where)


@pytest.mark.parametrize("name,version", VERSIONS)
def test_every_record_and_field_is_documented(name: str, version: int) -> None:
    _assert_documented(schemas.load(name, version), name)


def test_the_documentation_check_looks_inside_maps_and_unions() -> None:
    bare = {"type": "record", "name": "Inner", "doc": "x", "fields": [{"name": "a", "type": "long"}]}
    outer = {"type": "record", "name": "Outer", "doc": "x", "fields": [
        {"name": "m", "doc": "x", "type": ["null", {"type": "map", "values": bare}], "default": None}]}
    with pytest.raises(AssertionError, match="outer.m.a has no doc"):
        _assert_documented(outer, "outer")


def test_every_table_state_schema_is_there() -> None:
    """The analytics' table states each have a schema folder (their modules: app/analytics/)."""
    missing = [name for name in TABLE_STATES if not (schemas.SCHEMA_ROOT / name).is_dir()]
    assert not missing, f"no schema folder for the table states {missing}"


@pytest.mark.parametrize("name,version", STATE_VERSIONS)
def test_table_state_schema_parses_and_is_documented(name: str, version: int) -> None:
    schema = schemas.load(name, version)
    fastavro.parse_schema(schema)
    compat.validate(schema)
    assert schema["type"] == "record" and schema["namespace"] == "cryptics.analytics"
    assert schemas.versions(name) == list(range(1, len(schemas.versions(name)) + 1))
    _assert_documented(schema, name)
    # Every state records the offsets it has applied, per source record
    # (docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once).
    offsets = {f["name"]: f for f in schema["fields"]}.get("offsets")
    assert offsets is not None, f"{name} has no offsets field"
    assert offsets["type"] == {"type": "map", "values": "long"} and offsets.get("default") == {}, offsets


# -- the models mirror the newest schemas -----------------------------------------------

_PRIMITIVE_TYPES = {"string": str, "double": float, "float": float, "long": int, "int": int,
                    "boolean": bool, "bytes": bytes}


def _optional_inner(annotation: Any) -> tuple[bool, Any]:
    """(is Optional[...], the annotation inside it)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # Optional[X] or X | None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, f"{annotation} is a union of more than one type"
        return True, args[0]
    return False, annotation


def _check_type(avro: Any, annotation: Any, named: dict[str, Any], where: str) -> None:
    """Assert that the Python annotation is what the Avro type reads as."""
    if isinstance(avro, str) and avro in named:
        avro = named[avro]
    if isinstance(avro, str):
        assert annotation is _PRIMITIVE_TYPES[avro], f"{where}: {annotation} for Avro {avro}"
        return
    assert isinstance(avro, dict), f"{where}: unexpected union inside a union"
    kind = avro["type"]
    if avro.get("logicalType") == "timestamp-micros":
        assert annotation is datetime, f"{where}: timestamp-micros must be a datetime, not {annotation}"
    elif kind == "enum":
        named[avro["name"]] = avro
        assert annotation is str, f"{where}: enum {avro['name']} must be a str"
    elif kind == "array":
        assert typing.get_origin(annotation) is list, f"{where}: array must be a List, not {annotation}"
        (item,) = typing.get_args(annotation)
        _check_type(avro["items"], item, named, f"{where}[]")
    elif kind == "record":
        named[avro["name"]] = avro
        _check_model(annotation, avro, named, where)
    else:
        _check_type(kind, annotation, named, where)


def _check_model(model: Any, schema: dict, named: dict[str, Any], where: str) -> None:
    assert isinstance(model, type) and issubclass(model, faust.Record), f"{where}: {model} is not a faust.Record"
    assert model.__name__ == schema["name"], f"{where}: model {model.__name__} for record {schema['name']}"
    assert model._options.include_metadata is False, f"{where}: {model.__name__} would add Faust metadata"
    fields = model._options.fields
    assert list(fields) == field_names(schema), f"{where}: model fields differ from the schema's (names or order)"
    for f in schema["fields"]:
        at = f"{where}.{f['name']}"
        nullable = isinstance(f["type"], list) and "null" in f["type"]
        optional, inner = _optional_inner(fields[f["name"]])
        assert optional == nullable, f"{at}: Optional in the model iff nullable in the schema"
        if nullable:
            assert f.get("default", MISSING) is None, f"{at}: a nullable field must default to null (D4)"
            assert model._options.defaults.get(f["name"], MISSING) is None, f"{at}: the model must default to None"
            branches = [b for b in f["type"] if b != "null"]
            assert len(branches) == 1, f"{at}: only [null, T] unions are used"
            avro_type = branches[0]
        else:
            assert "default" not in f, f"{at}: required fields have no default"
            assert f["name"] not in model._options.defaults, f"{at}: the model gives a required field a default"
            avro_type = f["type"]
        _check_type(avro_type, inner, named, at)


@pytest.mark.parametrize("name", NAMES)
def test_model_mirrors_newest_schema(name: str) -> None:
    rt = record(name)
    _check_model(rt.model, rt.schema, {}, name)


def test_the_checker_catches_drift() -> None:
    """The mirror check fails for a model field that is Optional where the schema's is required,
    and for a model that lacks a schema field."""

    class Drifted(faust.Record, include_metadata=False):
        index_name: str
        price: float
        timestamp: typing.Optional[float] = None

    schema = {"type": "record", "name": "Drifted", "fields": [
        {"name": "index_name", "type": "string"}, {"name": "price", "type": "double"},
        {"name": "timestamp", "type": "double"}]}
    with pytest.raises(AssertionError, match="Optional in the model iff nullable"):
        _check_model(Drifted, schema, {}, "drifted")
    schema["fields"].append({"name": "extra", "type": ["null", "double"], "default": None})
    with pytest.raises(AssertionError, match="names or order"):
        _check_model(Drifted, schema, {}, "drifted")


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name: str) -> None:
    rt = record(name)
    assert rt.topic == f"cryptics.{rt.venue}.{name}.avro"
    assert rt.subject == f"{rt.topic}-value"
    assert rt.versions == schemas.versions(name)
    assert rt.schema is schemas.load(name)
    key = {f["name"]: f["type"] for f in rt.schema["fields"]}[rt.key_field]
    assert key in ("string", ["null", "string"]), f"the key field {rt.key_field} must be a string"


def test_unknown_record_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="ticker"):
        record("tickers")


# -- examples round-trip ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_example_round_trip(name: str) -> None:
    rt = record(name)
    value = examples.example(name)
    assert read(write(rt.schema, value), rt.schema) == value
    # Through the model, as Faust does it: to_representation() goes to the codec,
    # from_data() rebuilds the record (nested records included) from what it decoded.
    model = rt.model.from_data(value)
    assert model.to_representation() == value
    decoded = read(write(rt.schema, model.to_representation()), rt.schema)
    assert rt.model.from_data(decoded) == model


def test_decoded_timestamps_are_aware_utc() -> None:
    value = read(write(record("ticker").schema, examples.example("ticker")), record("ticker").schema)
    assert value["received_at"].tzinfo is not None
    assert value["received_at"].utcoffset().total_seconds() == 0


def test_nested_records_are_plain_dicts_for_the_codec() -> None:
    book = record("book").model.from_data(examples.book_with_levels(3))
    assert type(book.bid_changes[0]).__name__ == "BookLevel"
    representation = book.to_representation()
    assert all(type(level) is dict for level in representation["bid_changes"] + representation["trades"])


# -- evolution: BACKWARD over every version pair ------------------------------------------


@pytest.mark.parametrize("name,old,new", PAIRS)
def test_newer_reads_older(name: str, old: int, new: int) -> None:
    older, newer = schemas.load(name, old), schemas.load(name, new)
    written = examples.example(name, old)
    decoded = read(write(older, written), older, newer)
    expected = {**written, **{f["name"]: f["default"] for f in added_fields(older, newer)}}
    assert decoded == expected
    assert all(decoded[f["name"]] is None for f in added_fields(older, newer))
    assert compat.check("BACKWARD", newer, [older]) == []


@pytest.mark.parametrize("name", EVOLVED)
def test_newest_reads_every_version(name: str) -> None:
    versions = schemas.versions(name)
    older = [schemas.load(name, v) for v in versions[:-1]]
    assert compat.check("BACKWARD_TRANSITIVE", schemas.load(name), older) == []


@pytest.mark.parametrize("name", EVOLVED)
def test_versions_only_append_optional_fields(name: str) -> None:
    """D4: a version keeps the fields before it unchanged and adds ["null", T] fields defaulting to null."""
    versions = schemas.versions(name)
    for old, new in pairwise(versions):
        older, newer = schemas.load(name, old), schemas.load(name, new)
        assert newer["fields"][: len(older["fields"])] == older["fields"], f"{name} v{new} changed a v{old} field"
        for f in added_fields(older, newer):
            assert isinstance(f["type"], list) and f["type"][0] == "null" and f["default"] is None, f


@pytest.mark.parametrize("name", EVOLVED)
def test_v2_adds_d9_stage_stamps(name: str) -> None:
    added = added_fields(schemas.load(name, 1), schemas.load(name, 2))
    assert added, f"{name} v2 adds nothing"
    for f in added:
        assert f["name"].endswith("_at") and f["type"] == STAMP and f["default"] is None, f


# -- the checker reports breaking changes ---------------------------------------------------

_BREAKING_TYPE = {"boolean": "string"}  # any other primitive is unreadable as boolean


def _first_required_primitive(schema: dict) -> dict:
    return next(f for f in schema["fields"] if isinstance(f["type"], str) and f["type"] in _PRIMITIVE_TYPES)


def _with_fields(schema: dict, fields: list[dict]) -> dict:
    return {**schema, "fields": fields}


def _breaking_changes(schema: dict) -> dict[str, tuple[dict, str]]:
    """name → (a changed schema that cannot read data written with ``schema``, a phrase of the reason)."""
    changes: dict[str, tuple[dict, str]] = {}
    changes["new required field"] = (
        _with_fields(schema, schema["fields"] + [{"name": "venue_sequence", "type": "long"}]), "venue_sequence")
    target = _first_required_primitive(schema)
    new_type = _BREAKING_TYPE.get(target["type"], "boolean")
    changes["type change"] = (
        _with_fields(schema, [{**f, "type": new_type} if f is target else f for f in schema["fields"]]),
        target["name"])
    optional = next((f for f in schema["fields"] if isinstance(f["type"], list)), None)
    if optional is not None:  # made required: the reader cannot take the writer's nulls
        required = {k: v for k, v in optional.items() if k != "default"}
        required["type"] = optional["type"][1]
        changes["optional made required"] = (
            _with_fields(schema, [required if f is optional else f for f in schema["fields"]]), optional["name"])
    return changes


@pytest.mark.parametrize("name", NAMES)
def test_breaking_changes_are_reported(name: str) -> None:
    newest = record(name).schema
    value = examples.example(name)
    for what, (changed, culprit) in _breaking_changes(newest).items():
        compat.validate(changed)
        reasons = compat.check("BACKWARD", changed, [newest])
        assert reasons, f"{name}: {what} was not reported"
        assert any(culprit in r for r in reasons), f"{name}: {what}: {reasons}"
        # And the checker is right: fastavro cannot read the data either (the "optional made
        # required" change fails only on a null value, so it is checked with one).
        datum = value if what != "optional made required" else {**value, culprit: None}
        with pytest.raises((SchemaResolutionError, TypeError, ValueError)):
            read(write(newest, datum), newest, changed)


@pytest.mark.parametrize("name", EVOLVED)
def test_a_new_field_without_default_is_reported(name: str) -> None:
    versions = schemas.versions(name)
    older, newer = schemas.load(name, versions[-2]), schemas.load(name, versions[-1])
    added = {f["name"] for f in added_fields(older, newer)}
    no_default = _with_fields(newer, [{k: v for k, v in f.items() if k != "default"} if f["name"] in added else f
                                      for f in newer["fields"]])
    reasons = compat.check("BACKWARD", no_default, [older])
    assert len(reasons) == len(added) and all("default" in r for r in reasons), reasons


# -- what the random values of tests/property/test_schemas.py must cover -------------------


def test_the_generator_covers_enums_nested_records_and_stamps() -> None:
    """The generator really produces what the schemas use (else the random tests prove little)."""
    found: set[str] = set()

    def kinds(schema: Any, seen: set[str]) -> None:
        if isinstance(schema, list):
            for b in schema:
                kinds(b, seen)
        elif isinstance(schema, dict):
            seen.add(schema.get("logicalType") or schema["type"])
            for f in schema.get("fields", ()):
                kinds(f["type"], seen)
            if "items" in schema:
                kinds(schema["items"], seen)

    for name in NAMES:
        kinds(record(name).schema, found)
    assert {"enum", "array", "record", "timestamp-micros"} <= found

