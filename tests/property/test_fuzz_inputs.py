"""Fuzzing the inputs a worker takes from outside: Avro bytes off a topic and the settings.

Every bad input gets the error its callers catch (``WireFormatError`` for bytes, which the sink
and the analytics dead-letter; ``SettingsErrors`` for settings, which the CLI prints a line per
variable of), never another exception. The JSON-RPC parser's fuzz test is in
test_exchange_messages.py.
"""
from __future__ import annotations

import base64
import json
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.config import SettingsErrors
from app.pipeline.codec import AvroCodec, WireFormatError
from app.settings import Settings
from models.registry import RECORDS

SCHEMA_ID = 7


def _codec(name: str) -> AvroCodec:
    """A consumer's codec that knows its writer schema already (no registry: no socket here)."""
    r = RECORDS[name]
    codec = AvroCodec(r.subject, r.schema, None)
    codec._writers[SCHEMA_ID] = codec.parsed
    return codec


CODECS = {name: _codec(name) for name in RECORDS}
HEADER = struct.pack(">bI", 0, SCHEMA_ID)


@pytest.mark.parametrize("name", sorted(RECORDS))
@settings(max_examples=150, deadline=None)
@given(payload=st.binary(max_size=300), framed=st.booleans())
def test_any_bytes_decode_to_a_record_or_a_wire_format_error(name, payload, framed):
    # Framed: our schema id, then anything. Unframed: anything that is no frame (too short, or
    # another magic byte); a frame with another schema id is a registry lookup, tested with the
    # registry (tests/integration/test_codec.py).
    assume(framed or len(payload) < 5 or payload[0] != 0)
    data = HEADER + payload if framed else payload
    try:
        value = CODECS[name].loads(data)
    except WireFormatError:
        return
    assert isinstance(value, dict)  # what decodes is a whole record of the schema


#: Variables of each kind the settings parse: numbers, tuples, flags, names, paths, and names
#: that are no setting.
VARIABLES = ["CRYPTICS_TOPIC_PARTITIONS", "CRYPTICS_HEARTBEAT_INTERVAL", "CRYPTICS_QUOTE_BID_SIZES",
             "CRYPTICS_QUOTE_HALF_SPREAD", "CRYPTICS_QUOTE_MODE", "CRYPTICS_RISK_MAX_POSITION",
             "CRYPTICS_QUOTE_TARGET_POSITION", "CRYPTICS_GATEWAY_MASS_QUOTE", "CRYPTICS_VENUE",
             "CRYPTICS_INSTRUMENTS", "CRYPTICS_BROKER_URL", "CRYPTICS_SINK_BATCH_SIZE", "CRYPTICS_ANALYTICS_ENABLED",
             "CRYPTICS_STATE_DIR", "CRYPTICS_WEB_PORT", "CRYPTICS_SINK_BATCH_SIZ", "CRYPTICS_RISK_X"]
VALUES = st.one_of(st.text(max_size=20), st.sampled_from(["", "0", "-1", "nan", "inf", "1e400", "0.1,0.2", ",", "1,x",
                                                           "true", "maybe", "simulated", "kafka://h:1", "avellaneda_stoikov"]))


@settings(max_examples=400, deadline=None)
@given(env=st.dictionaries(st.sampled_from(VARIABLES), VALUES, max_size=6))
def test_any_settings_parse_or_get_a_line_per_refusal(env):
    env = {k: v.replace("\x00", "") for k, v in env.items()}
    try:
        Settings.from_env(env)
    except SettingsErrors as exc:
        assert exc.lines and all(line.startswith("CRYPTICS_") for line in exc.lines), exc.lines
        for line in exc.lines:  # each line names a variable: one that was set, or one a check is about
            assert "\n" not in line


# -- the web views' query parameters and headers (app/web/tables.py, app/web/auth.py) ----------

_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", "0", "-1", "1e9", "nan", "inf", "1000", "1001", " 5",
                                                       "delta:60s", "delta:1.5m", "delta:-1s", "delta:", "series"]))


@settings(max_examples=500, deadline=None)
@given(raw=_TEXT)
def test_query_parameters_parse_or_get_a_bad_request(raw):
    from app.web.tables import MAX_LIMIT, MAX_TIMEOUT, BadRequest, parse_flag, parse_limit, parse_timeout, parse_window

    for parse, check in ((parse_limit, lambda v: 1 <= v <= MAX_LIMIT),
                         (parse_timeout, lambda v: 0 < v <= MAX_TIMEOUT),
                         (parse_window, lambda v: v.kind in ("now", "current", "series", "delta") and v.delta >= 0)):
        try:
            value = parse(raw)
        except BadRequest as exc:
            assert str(exc)  # a message for the 400
        else:
            assert check(value), (parse.__name__, raw, value)
    assert isinstance(parse_flag(raw), bool)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


#: Cursors that are JSON, near ours: another table, a key of another type, odd window starts.
_NEAR_CURSORS = st.fixed_dictionaries({
    "t": st.sampled_from(["position_pnl", "mark_candles_1s", "other"]),
    "p": st.lists(st.one_of(st.text(max_size=8), st.none(), st.floats(), st.integers(), st.booleans()), max_size=3),
}).map(lambda d: _b64(json.dumps(d).encode()))


@settings(max_examples=500, deadline=None)
@given(raw=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(_b64), _NEAR_CURSORS),
       table=st.sampled_from(["position_pnl", "mark_candles_1s"]))
def test_a_cursor_is_ours_or_a_bad_request(raw, table):
    from app.web.tables import BadRequest, decode_cursor, encode_cursor

    try:
        position = decode_cursor(table, raw)
    except BadRequest:
        return
    if position is not None:  # what decodes is a position this table's next cursor would carry
        assert isinstance(position[0], str) and (position[1] is None or isinstance(position[1], float))
        assert decode_cursor(table, encode_cursor(table, position)) == position


@settings(max_examples=300, deadline=None)
# aiohttp hands a header over decoded as UTF-8 with surrogate escapes for the bytes that are not
# (the web fuzz test's 'Bearer \x80' was a 500 before check_bearer encoded them back).
@given(header=st.one_of(st.none(), st.text(max_size=60),
                        st.binary(max_size=40).map(lambda b: "Bearer " + b.decode("utf-8", "surrogateescape"))),
       token=st.text(min_size=1, max_size=30))
def test_a_bearer_header_is_the_token_or_unauthorized(header, token):
    from app.web.auth import Unauthorized, check_bearer

    headers = {} if header is None else {"Authorization": header}
    try:
        check_bearer(headers, token)
    except Unauthorized as exc:
        assert str(exc)
    else:  # accepted only with the token itself
        assert header is not None and header.partition(" ")[2].strip() == token
