"""The registry's Avro compatibility checker (app/stack/registry/compat.py), pure logic: a table
of reader/writer pairs covers each schema-resolution rule. The checker against fastavro on
random evolutions: tests/property/test_registry_compat.py.
"""
from __future__ import annotations

import io
import math
from typing import Any, Optional

import fastavro
import pytest
from hypothesis import event
from hypothesis import strategies as st

from app.stack.registry import compat
from app.stack.registry.compat import InvalidSchema, can_read, check


def record(name: str, *fields: dict, **extra: Any) -> dict:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict:
    return {"name": name, "type": type_, **extra}


def enum(name: str, symbols: list[str], **extra: Any) -> dict:
    return {"type": "enum", "name": name, "symbols": symbols, **extra}


def fixed(name: str, size: int, **extra: Any) -> dict:
    return {"type": "fixed", "name": name, "size": size, **extra}


LINKED = record("Node", f("value", "int"), f("next", ["null", "Node"]))
LINKED_LONG = record("Node", f("value", "long"), f("next", ["null", "Node"]))
TREE = record("Tree", f("label", "string"), f("children", {"type": "array", "items": "Tree"}))
TREE_BYTES = record("Tree", f("label", "bytes"), f("children", {"type": "array", "items": "Tree"}))
# Mutual recursion: A holds an optional B, B holds an optional A.
MUTUAL = record("A", f("x", "int"), f("b", ["null", record("B", f("y", "string"), f("a", ["null", "A"]))]))
MUTUAL_BAD = record("A", f("x", "int"), f("b", ["null", record("B", f("y", "int"), f("a", ["null", "A"]))]))


# (reader, writer, why it should be compatible / a phrase of the reason it is not)
COMPATIBLE = [
    # primitives and promotions
    ("int", "int"),
    ("long", "int"),
    ("float", "int"),
    ("double", "int"),
    ("float", "long"),
    ("double", "long"),
    ("double", "float"),
    ("bytes", "string"),
    ("string", "bytes"),
    ({"type": "int", "logicalType": "date"}, "int"),  # logical types resolve as their base type
    # records
    (record("R", f("a", "int")), record("R", f("a", "int"))),
    (record("R", f("a", "int")), record("R", f("a", "int"), f("gone", "string"))),  # writer-only field
    (record("R", f("a", "int"), f("b", ["null", "string"], default=None)), record("R", f("a", "int"))),
    (record("R", f("a", "long")), record("R", f("a", "int"))),  # promoted field
    (record("R", f("renamed", "int", aliases=["old"])), record("R", f("old", "int"))),  # field alias
    (record("New", f("a", "int"), aliases=["Old"]), record("Old", f("a", "int"))),  # record alias
    (record("R", f("a", "int"), namespace="x.one"), record("R", f("a", "int"), namespace="x.two")),
    (record("New", f("a", "int"), namespace="ns", aliases=["Old"]),  # a relative alias is in the reader's namespace
     record("Old", f("a", "int"), namespace="ns")),
    (record("R", f("inner", record("In", f("v", "long")))), record("R", f("inner", record("In", f("v", "int"))))),
    # enums
    (enum("E", ["A", "B", "C"]), enum("E", ["A", "B"])),
    (enum("E", ["A", "B"], default="A"), enum("E", ["A", "B", "C"])),
    # arrays, maps
    ({"type": "array", "items": "long"}, {"type": "array", "items": "int"}),
    ({"type": "map", "values": "double"}, {"type": "map", "values": "float"}),
    # fixed
    (fixed("F", 16), fixed("F", 16)),
    # unions
    (["null", "string"], "string"),
    (["null", "string", "int"], ["null", "string"]),
    (["null", "long"], ["null", "int"]),
    ("long", ["int", "long"]),
    (["string", "null"], ["null", "string"]),  # branch order does not matter
    # named types referred to by name, recursion
    (record("R", f("a", fixed("F", 4)), f("b", "F")), record("R", f("a", fixed("F", 4)), f("b", "F"))),
    (record("R", f("a", fixed("F", 4, namespace="n")), f("b", "n.F")),
     record("R", f("a", fixed("F", 4, namespace="n")), f("b", "n.F"))),
    (LINKED, LINKED),
    (LINKED_LONG, LINKED),
    (TREE, TREE),
    (TREE, TREE_BYTES),
    (TREE_BYTES, TREE),
    (MUTUAL, MUTUAL),
]

INCOMPATIBLE = [
    ("int", "long", 'writer type "long" cannot be read as "int"'),
    ("long", "float", 'writer type "float" cannot be read as "long"'),
    ("float", "double", 'writer type "double"'),
    ("int", "string", 'writer type "string" cannot be read as "int"'),
    ("boolean", "int", '"int" cannot be read as "boolean"'),
    ("string", "null", '"null"'),
    (record("R", f("a", "int"), f("b", "string")), record("R", f("a", "int")),
     'at /fields/b: reader field "b" of record "R" is missing from the writer and has no default'),
    (record("R", f("a", "int")), record("R", f("a", "string")), 'at /fields/a: writer type "string" cannot be read'),
    (record("R", f("renamed", "int")), record("R", f("old", "int")), 'reader field "renamed"'),
    (record("R", f("a", "int")), record("S", f("a", "int")), 'writer record "S" cannot be read as record "R"'),
    (record("New", f("a", "int"), namespace="ns", aliases=["Old"]),  # alias resolves to ns.Old, not other.Old
     record("Old", f("a", "int"), namespace="other"), 'record "other.Old"'),
    (record("R", f("inner", record("In", f("v", "int")))), record("R", f("inner", record("In", f("v", "long")))),
     "at /fields/inner/fields/v:"),
    (enum("E", ["A", "B"]), enum("E", ["A", "B", "C"]), 'writer symbols ["C"] are missing'),
    (enum("E", ["A"]), enum("Other", ["A"]), 'writer enum "Other" cannot be read as enum "E"'),
    ({"type": "array", "items": "int"}, {"type": "array", "items": "long"}, "at /items:"),
    ({"type": "map", "values": "int"}, {"type": "map", "values": "string"}, "at /values:"),
    ({"type": "map", "values": "int"}, {"type": "array", "items": "int"}, "writer type array cannot be read as map"),
    (fixed("F", 16), fixed("F", 8), "has size 8"),
    (fixed("F", 4), fixed("G", 4), 'writer fixed "G" cannot be read as fixed "F"'),
    (fixed("F", 4), "bytes", 'writer type "bytes" cannot be read as fixed "F"'),
    ("string", ["null", "string"], 'writer type "null" cannot be read as "string"'),
    (["null", "string"], ["null", "string", "int"], 'writer type "int" cannot be read by any branch'),
    (["null", "int"], "long", "cannot be read by any branch"),
    # The matching branch of the reader's union explains the failure, not "no branch".
    (["null", record("R", f("a", "int"), f("b", "int"))], record("R", f("a", "int")), 'reader field "b"'),
    (record("R", f("a", fixed("F", 4)), f("b", "F")), record("R", f("a", fixed("F", 8)), f("b", "F")), "has size 8"),
    (LINKED, LINKED_LONG, 'at /fields/value: writer type "long" cannot be read as "int"'),
    (MUTUAL_BAD, MUTUAL, 'at /fields/b/fields/y: writer type "string" cannot be read as "int"'),
]


@pytest.mark.parametrize("reader, writer", COMPATIBLE)
def test_compatible_pairs(reader: Any, writer: Any) -> None:
    assert can_read(reader, writer) == []


@pytest.mark.parametrize("reader, writer, reason", INCOMPATIBLE)
def test_incompatible_pairs(reader: Any, writer: Any, reason: str) -> None:
    reasons = can_read(reader, writer)
    assert reasons, "expected the pair to be incompatible"
    assert any(reason in r for r in reasons), reasons


def test_recursive_schemas_report_each_problem_once() -> None:
    assert can_read(LINKED, LINKED_LONG) == ['at /fields/value: writer type "long" cannot be read as "int"']


def test_a_named_type_reused_many_times_is_checked_quickly() -> None:
    """Each level refers twice to the next: 2**40 paths, but only 40 distinct pairs."""
    schema: Any = record("L0", f("leaf", "int"))
    for level in range(1, 41):
        schema = record(f"L{level}", f("left", schema), f("right", f"L{level - 1}"))
    assert can_read(schema, schema) == []


def test_schemas_may_be_json_text_or_bare_names() -> None:
    assert can_read('{"type": "array", "items": "long"}', {"type": "array", "items": "int"}) == []
    assert can_read("long", '"int"') == []


@pytest.mark.parametrize("schema, reason", [
    ("{not json", "not valid JSON"),
    ("string", "not valid JSON"),  # schema text is JSON: '"string"'
    ('"nosuchtype"', "nosuchtype"),
    (42, "invalid Avro schema"),
    ({"type": "record", "name": "R"}, 'record "R" needs a "fields" list'),
    (record("R", f("a", "int"), f("a", "long")), 'two fields named "a"'),
    (record("R", f("a", "Later"), f("b", enum("Later", ["X"]))), "Later"),  # used before it is defined
    (record("R", f("a", record("R", f("b", "int")))), "redefined named type"),
    (["int", "int"], 'contains "int" twice'),
    (["null", {"type": "array", "items": "int"}, {"type": "array", "items": "long"}], "contains array twice"),
    (["null", ["int", "string"]], "cannot directly contain another union"),
    (record("1R", f("a", "int")), "not a valid Avro name"),
    (record("R", f("bad-name", "int")), "invalid name"),
    (enum("E", ["A", "A"]), "unique"),
    (enum("E", ["A"], default="B"), "default"),
    ({"type": "fixed", "name": "F"}, "size"),
    ({"type": "array"}, "items"),
    (record("R", f("a", "int", default="text")), "Default value"),
])
def test_invalid_schemas_are_rejected(schema: Any, reason: str) -> None:
    with pytest.raises(InvalidSchema) as error:
        compat.validate(schema)
    assert reason.lower() in str(error.value).lower()


@pytest.mark.parametrize("schema", [
    record("R"),  # no fields is valid Avro
    '"string"',
    ["null", {"type": "array", "items": "int"}, {"type": "map", "values": "int"}, enum("E", ["A"]), fixed("F", 2)],
    record("R", f("a", enum("E", ["A"], namespace="n")), f("b", "n.E"), f("c", ["null", "R"], default=None)),
    {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2},
])
def test_valid_schemas_pass(schema: Any) -> None:
    compat.validate(schema)


def test_validate_returns_the_json_value() -> None:
    assert compat.validate('{"type": "array", "items": "int"}') == {"type": "array", "items": "int"}


# -- compatibility levels ---------------------------------------------------------

V1 = record("R", f("a", "int"))
WITH_OPTIONAL_B = record("R", f("a", "int"), f("b", ["null", "string"], default=None))
WITH_REQUIRED_B = record("R", f("a", "int"), f("b", "string"))
WITHOUT_A = record("R")


@pytest.mark.parametrize("level, new, compatible", [
    ("NONE", record("R", f("a", "string")), True),
    ("BACKWARD", WITH_OPTIONAL_B, True),
    ("BACKWARD", WITH_REQUIRED_B, False),   # the new reader needs b, old data lacks it
    ("BACKWARD", WITHOUT_A, True),          # a removed field is skipped when reading old data
    ("FORWARD", WITH_REQUIRED_B, True),     # old readers skip b
    ("FORWARD", WITHOUT_A, False),          # old readers need a, which has no default
    ("FULL", WITH_OPTIONAL_B, True),
    ("FULL", WITH_REQUIRED_B, False),
    ("FULL", WITHOUT_A, False),
])
def test_levels_against_the_latest(level: str, new: dict, compatible: bool) -> None:
    assert (check(level, new, [V1]) == []) is compatible


def test_backward_transitive_checks_every_version() -> None:
    v1 = record("R", f("a", "string"))
    v2 = record("R")  # a removed
    new = record("R", f("a", "int", default=0))  # a is back, with another type
    assert check("BACKWARD", new, [v1, v2]) == []
    reasons = check("BACKWARD_TRANSITIVE", new, [v1, v2], labels=["version 1", "version 2"])
    assert reasons == ['the new schema cannot read data written with version 1: '
                       'at /fields/a: writer type "string" cannot be read as "int"']


def test_forward_transitive_checks_every_version() -> None:
    v1 = record("R", f("a", "int"))
    v2 = record("R", f("a", "int", default=0))
    new = record("R")  # drops a: v2 defaults it, v1 cannot
    assert check("FORWARD", new, [v1, v2]) == []
    reasons = check("FORWARD_TRANSITIVE", new, [v1, v2])
    assert len(reasons) == 1 and reasons[0].startswith("existing schema 1 of 2 cannot read data written with the new")


def test_full_transitive_checks_both_ways_against_every_version() -> None:
    v1 = record("R", f("a", "int"))
    v2 = record("R", f("a", "long"))
    new = record("R", f("a", "long"))
    assert check("FULL", new, [v1, v2]) == []
    assert check("FULL_TRANSITIVE", new, [v1, v2]) == [
        'existing schema 1 of 2 cannot read data written with the new schema: '
        'at /fields/a: writer type "long" cannot be read as "int"'
    ]


def test_check_edge_cases() -> None:
    assert check("BACKWARD", WITH_REQUIRED_B, []) == []  # a first version is always compatible
    assert check("FULL", V1, [V1], labels=["version 7"]) == []
    with pytest.raises(ValueError, match="unknown compatibility level"):
        check("SIDEWAYS", V1, [V1])
    with pytest.raises(InvalidSchema):
        check("BACKWARD", {"type": "nosuch"}, [V1])


# -- the checker against fastavro ---------------------------------------------------

SAMPLES = {"null": None, "boolean": True, "int": 7, "long": 2**40, "float": 1.5, "double": 2.25,
           "bytes": b"ab", "string": "ab"}
WRAPPERS = {
    "plain": (lambda t: t, lambda v: v),
    "field": (lambda t: record("R", f("x", t)), lambda v: {"x": v}),
    "array": (lambda t: {"type": "array", "items": t}, lambda v: [v, v]),
    "map": (lambda t: {"type": "map", "values": t}, lambda v: {"k": v}),
    "optional": (lambda t: t if t == "null" else ["null", t], lambda v: v),
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
@pytest.mark.parametrize("writer", list(SAMPLES))
@pytest.mark.parametrize("reader", list(SAMPLES))
def test_checker_agrees_with_fastavro_on_every_primitive_pair(reader: str, writer: str, wrapper: str) -> None:
    """Compatible pairs decode; for incompatible ones fastavro refuses the data too."""
    wrap_schema, wrap_value = WRAPPERS[wrapper]
    writer_schema, reader_schema = wrap_schema(writer), wrap_schema(reader)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(writer_schema), wrap_value(SAMPLES[writer]))
    out.seek(0)
    compatible = can_read(reader_schema, writer_schema) == []
    try:
        fastavro.schemaless_reader(out, fastavro.parse_schema(writer_schema), fastavro.parse_schema(reader_schema))
        decoded = True
    except fastavro.read.SchemaResolutionError:
        decoded = False
    assert decoded is compatible


#
# Random record schemas are evolved field by field. Whenever the checker says the
# evolved reader can read the writer, random data written with the writer must
# decode with the reader, to the values schema resolution promises.

PRIMITIVE_TYPES = ["boolean", "int", "long", "float", "double", "bytes", "string"]


def values(schema: Any) -> st.SearchStrategy:
    """Random data for a writer schema (only the kinds the evolutions produce)."""
    if isinstance(schema, list):
        return st.one_of([values(branch) for branch in schema])
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "int":
        return st.integers(-2**31, 2**31 - 1)
    if kind == "long":
        return st.integers(-2**63, 2**63 - 1)
    if kind == "float":
        return st.floats(width=32, allow_nan=False)
    if kind == "double":
        return st.floats(allow_nan=False)
    if kind == "bytes":
        # Avro's bytes → string promotion assumes the bytes are UTF-8 text.
        return st.text(max_size=8).map(str.encode)
    if kind == "string":
        return st.text(max_size=8)
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=4), values(schema["values"]), max_size=4)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "record":
        return st.fixed_dictionaries({fld["name"]: values(fld["type"]) for fld in schema["fields"]})
    raise AssertionError(f"no data strategy for {schema}")


def branch_of(value: Any, union: list) -> Any:
    """The branch of a writer union ["null", T] that ``value`` was written as."""
    return "null" if value is None else next(b for b in union if b != "null")


def expected(value: Any, writer: Any, reader: Any) -> Any:
    """What schema resolution turns ``value`` (written with ``writer``) into for ``reader``."""
    if isinstance(writer, list):
        return expected(value, branch_of(value, writer), reader)
    if isinstance(reader, list):
        branch = next(b for b in reader if can_read(b, writer) == [])
        return expected(value, writer, branch)
    kind = reader if isinstance(reader, str) else reader["type"]
    if kind in ("float", "double"):
        return float(value)
    if kind == "bytes" and isinstance(value, str):
        return value.encode()
    if kind == "string" and isinstance(value, bytes):
        return value.decode()
    if kind == "array":
        return [expected(v, writer["items"], reader["items"]) for v in value]
    if kind == "map":
        return {k: expected(v, writer["values"], reader["values"]) for k, v in value.items()}
    if kind == "enum":
        return value if value in reader["symbols"] else reader["default"]
    if kind == "record":
        by_name = {fld["name"]: fld for fld in writer["fields"]}
        out = {}
        for fld in reader["fields"]:
            source = next((by_name[n] for n in [fld["name"], *fld.get("aliases", [])] if n in by_name), None)
            out[fld["name"]] = fld["default"] if source is None else expected(value[source["name"]], source["type"],
                                                                              fld["type"])
        return out
    return value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@st.composite
def field_types(draw: st.DrawFn, index: int, shape: Optional[str] = None) -> Any:
    """A writer field type: a primitive, an optional primitive, an array, a map or an enum."""
    shape = shape or draw(st.sampled_from(["primitive", "optional", "array", "map", "enum"]))
    primitive = draw(st.sampled_from(PRIMITIVE_TYPES))
    if shape == "primitive":
        return primitive
    if shape == "optional":
        return ["null", primitive]
    if shape == "array":
        return {"type": "array", "items": primitive}
    if shape == "map":
        return {"type": "map", "values": primitive}
    symbols = draw(st.lists(st.sampled_from(["A", "B", "C", "D"]), min_size=1, max_size=4, unique=True))
    return enum(f"E{index}", symbols)


def shape_of(type_: Any) -> str:
    if isinstance(type_, str):
        return "primitive"
    if isinstance(type_, list):
        return "optional"
    return type_["type"]


def promote(type_: Any) -> Any:
    """A reader type the Avro promotions allow for ``type_`` (or ``type_`` itself)."""
    targets = {"int": "double", "long": "float", "float": "double", "string": "bytes", "bytes": "string"}
    if isinstance(type_, str):
        return targets.get(type_, type_)
    if isinstance(type_, list):
        return [promote(b) for b in type_]
    if type_["type"] == "array":
        return {"type": "array", "items": promote(type_["items"])}
    if type_["type"] == "map":
        return {"type": "map", "values": promote(type_["values"])}
    return type_


DEFAULTS = {"boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0, "string": ""}

SAFE = ["keep", "drop", "promote", "optional", "rename", "enum_more", "enum_fewer_with_default"]
UNSAFE = ["retype", "reshape", "rename_without_alias", "enum_fewer", "required_new"]


@st.composite
def evolutions(draw: st.DrawFn, safe_only: bool) -> tuple[dict, dict]:
    """(writer, reader): a random record and an evolution of it."""
    n = draw(st.integers(1, 5))
    writer_fields = [f(f"f{i}", draw(field_types(i))) for i in range(n)]
    reader_fields = []
    ops = SAFE if safe_only else SAFE + UNSAFE
    for i, wf in enumerate(writer_fields):
        op = draw(st.sampled_from(ops))
        t = wf["type"]
        is_enum = isinstance(t, dict) and t["type"] == "enum"
        event(op)
        if op == "keep":
            reader_fields.append(dict(wf))
        elif op == "drop":
            pass
        elif op == "promote":
            reader_fields.append(f(wf["name"], promote(t)))
        elif op == "optional":  # T → ["null", T]; already optional fields stay as they are
            reader_fields.append(dict(wf) if isinstance(t, list) else f(wf["name"], ["null", t], default=None))
        elif op == "rename":
            reader_fields.append(f(f"renamed{i}", t, aliases=[wf["name"]]))
        elif op in ("enum_more", "enum_fewer_with_default", "enum_fewer") and is_enum:
            symbols = t["symbols"]
            if op == "enum_more":
                new = enum(t["name"], symbols + [s for s in ["W", "X"] if s not in symbols])
            elif op == "enum_fewer_with_default":
                new = enum(t["name"], symbols[:1] + ["Z"], default="Z")
            else:
                new = enum(t["name"], symbols[:1])
            reader_fields.append(f(wf["name"], new))
        elif op == "retype":  # same shape, another primitive (or other enum symbols)
            reader_fields.append(f(wf["name"], draw(field_types(i, shape_of(t)))))
        elif op == "reshape":  # any field type at all
            reader_fields.append(f(wf["name"], draw(field_types(i))))
        elif op == "rename_without_alias":
            reader_fields.append(f(f"renamed{i}", t))
        else:  # enum ops on a non-enum, or "required_new": keep the field
            reader_fields.append(dict(wf))
    # New reader fields: with defaults (safe), or required (not).
    for j in range(draw(st.integers(0, 2))):
        type_ = draw(st.sampled_from(list(DEFAULTS)))
        if safe_only or draw(st.booleans()):
            reader_fields.append(f(f"new{j}", type_, default=DEFAULTS[type_]))
            reader_fields.append(f(f"newopt{j}", ["null", type_], default=None))
        else:
            reader_fields.append(f(f"new{j}", type_))
    return record("Evolving", *writer_fields), record("Evolving", *reader_fields)


