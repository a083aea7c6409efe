"""Avro (cached AvroCodec, Confluent wire format) vs orjson JSON: µs per record, one run.

    .venv/bin/python -m benchmarks.bench_codec [--seconds 0.2]

Starts an embedded PostgreSQL in a temporary folder and the schema registry
in-process (app.stack.registry.server), registers each record's newest schema once,
then times encode and decode of realistic records (models/examples.py): ticker,
book (10 levels a side), ack and fill. Every number is the best of 5 repeats.

Three tables:
- the codecs on plain dictionaries (what fastavro and orjson take and return);
  orjson writes datetimes as RFC 3339 strings and reads them back as strings, so
  its decode does less work than Avro's, which rebuilds timezone-aware datetimes;
- the same through Faust's serializer registry with the models (Record →
  bytes → Record), which is what an agent pays per event;
- decoding bytes written with schema v1 by a v2 reader, where fastavro resolves
  the two schemas on every message.
Decoding is timed on codecs that did not write the bytes, as in a consumer: they know
the writer schema only by the id in the bytes, fetched from the registry once. It also
counts registry HTTP requests made while timing: the codec caches ids and writer schemas
(docs/architecture.md#d4-avro-and-schemas), so there should be none.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import threading
import timeit
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

RECORDS = ("ticker", "book", "ack", "fill")
REPEAT = 5


@contextmanager
def embedded_registry() -> Iterator[str]:
    """A schema registry served from a background thread, on a throw-away PostgreSQL; its URL."""
    from app.stack.postgres import EmbeddedPostgres
    from app.stack.registry.server import start_server

    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-codec-"))
    os.chmod(root, 0o755)  # the PostgreSQL service user must be able to traverse it
    pg = EmbeddedPostgres(root / "pgdata", root / "logs")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="registry", daemon=True)
    try:
        asyncio.run(pg.start())
        thread.start()
        runner, url = asyncio.run_coroutine_threadsafe(start_server(pg.dsn()), loop).result(60)
        try:
            yield url
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        loop.close()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def us_per_call(fn: Callable[[], Any], seconds: float) -> float:
    """Best-of-5 µs per call, each repeat running about ``seconds``."""
    number = max(1, int(seconds / max(timeit.timeit(fn, number=200) / 200, 1e-9)))
    return min(timeit.repeat(fn, number=number, repeat=REPEAT)) / number * 1e6


def values() -> dict[str, dict[str, Any]]:
    from models import examples

    out = {name: examples.example(name) for name in RECORDS}
    out["book"] = examples.book_with_levels(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="time per repeat of each measurement")
    args = parser.parse_args()

    import app.pipeline.codec
    from app.faust_app import app as faust_application
    from app.pipeline.codec import AvroCodec
    from models import schemas
    from models.registry import record

    serializers = faust_application.serializers
    data = values()
    with embedded_registry() as url:
        codecs = {name: AvroCodec(record(name).subject, record(name).schema, url) for name in RECORDS}
        encoded = {name: codecs[name].dumps(data[name]) for name in RECORDS}  # registers each schema once
        # The same events as a v1 producer wrote them: the v2 values without the v2 fields.
        v1_bytes = {}
        for name in RECORDS:
            v1 = schemas.load(name, 1)
            v1_value = {f["name"]: data[name][f["name"]] for f in v1["fields"]}
            v1_bytes[name] = AvroCodec(record(name).subject, v1, url).dumps(v1_value)
        # Decoding is timed on codecs of their own, as in a consumer (another process): they fetch
        # each writer schema from the registry by id, once, before timing, as a running consumer would have.
        readers = {name: AvroCodec(record(name).subject, record(name).schema, url) for name in RECORDS}
        for name in RECORDS:
            readers[name].loads(encoded[name])
            readers[name].loads(v1_bytes[name])

        client = app.pipeline.codec.registry_client(url)
        requests = 0
        original = client.request

        def counting(*a: Any, **kw: Any) -> Any:
            nonlocal requests
            requests += 1
            return original(*a, **kw)

        client.request = counting  # type: ignore[method-assign]

        plain, layered, resolved = [], [], []
        for name in RECORDS:
            codec, reader, value, avro = codecs[name], readers[name], data[name], encoded[name]
            json_bytes = orjson.dumps(value)
            assert reader.loads(avro) == value
            plain.append((name, len(avro), len(json_bytes),
                          us_per_call(partial(codec.dumps, value), args.seconds),
                          us_per_call(partial(reader.loads, avro), args.seconds),
                          us_per_call(partial(orjson.dumps, value), args.seconds),
                          us_per_call(partial(orjson.loads, json_bytes), args.seconds)))

            model_type = record(name).model
            model = model_type.from_data(value)
            assert serializers.loads_value(model_type, avro, serializer=reader) == model
            layered.append((name,
                            us_per_call(partial(serializers.dumps_value, model_type, model, serializer=codec),
                                        args.seconds),
                            us_per_call(partial(serializers.loads_value, model_type, avro, serializer=reader),
                                        args.seconds)))

            resolved.append((name, us_per_call(partial(reader.loads, v1_bytes[name]), args.seconds)))

    print(f"µs per record, best of 5 (registry requests while timing: {requests})\n")
    print(f"{'record':8} {'avro B':>7} {'json B':>7} {'avro enc':>9} {'avro dec':>9} {'json enc':>9} {'json dec':>9}")
    for name, avro_size, json_size, ae, ad, je, jd in plain:
        print(f"{name:8} {avro_size:7d} {json_size:7d} {ae:9.2f} {ad:9.2f} {je:9.2f} {jd:9.2f}")
    print("\nthrough Faust's serializer registry with the models (Record ↔ bytes)")
    print(f"{'record':8} {'enc':>9} {'dec':>9}")
    for name, enc, dec in layered:
        print(f"{name:8} {enc:9.2f} {dec:9.2f}")
    print("\nv1 bytes decoded by the v2 codec (schema resolution per message) vs v2 bytes")
    print(f"{'record':8} {'v1→v2':>9} {'v2→v2':>9}")
    for (name, v1_dec), row in zip(resolved, plain, strict=True):
        print(f"{name:8} {v1_dec:9.2f} {row[4]:9.2f}")
    print("\nbook = a 10-level-a-side snapshot with one trade; orjson decode leaves datetimes as strings.")


if __name__ == "__main__":
    main()
