"""What a replay needs, recorded (docs/operations.md#recordings): the full-depth book in
book_updates, and `cryptics record export` / `import` of a recorded range as Parquet.

- ``test_a_recorded_run_rebuilds_the_book_and_travels_as_parquet``: a real run (the simulated
  venue's market, a `cryptics worker` quoting and persisting, tests/integration/analytics_stack.py).
  Replaying each instrument's book_updates rows through app/exchange/book.py's LocalBook gives,
  at every row, the top of book its book_tops row recorded. Then the run's range is exported,
  imported into a fresh database, and every dataset table there equals the original row for
  row; a second import adds nothing; an export of one instrument holds that instrument only.
- ``test_bad_input_gets_one_line_and_exit_code_2``: each bad input to the CLI (a range with no
  data, an unknown instrument, a directory that is no dataset, Parquet files of the wrong
  shape, a manifest whose counts disagree) gets its one line and exit code 2.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from app.exchange.book import BookGap, LocalBook
from app.pipeline import recording
from app.pipeline.sink import SourceRecord, TableWriter, tables_of
from app.stack import migrate
from app.stack.process import environ_for_child
from models import examples

from .analytics_stack import INSTRUMENTS
from .conftest import ROOT, cryptics

UTC = timezone.utc
TOP = ("best_bid_price", "best_bid_amount", "best_ask_price", "best_ask_amount")


async def _fresh_database(postgres) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return postgres.dsn(name)


async def _drop_database(postgres, dsn: str) -> None:
    conn = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


async def _rows(dsn: str, table: str) -> list[tuple]:
    """Every row of ``table``, in primary-key order."""
    conn = await asyncpg.connect(dsn)
    try:
        key = await recording.primary_key(conn, table)
        return [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY {', '.join(key)}")]
    finally:
        await conn.close()


def _replayed_tops(updates: list[asyncpg.Record], instrument: str) -> list[tuple]:
    """The top of book after each book_updates row, as the market-data source derives it: a
    book that does not add up (a delta before any snapshot, a crossed book) has no top."""
    book = LocalBook(instrument)
    tops = []
    for row in updates:
        payload = {"bid_changes": [[p, a] for p, a in zip(row["bid_prices"], row["bid_amounts"])],
                   "ask_changes": [[p, a] for p, a in zip(row["ask_prices"], row["ask_amounts"])],
                   "time": row["time"].timestamp()}
        try:
            book.apply(payload, row["snapshot"])
        except BookGap:
            pass
        bid, ask = (book.best_bid(), book.best_ask()) if book.synced else (None, None)
        tops.append((row["time"], row["received_at"], *(bid or (None, None)), *(ask or (None, None))))
    return tops


async def test_a_recorded_run_rebuilds_the_book_and_travels_as_parquet(analytics_stack, database, postgres,
                                                                       tmp_path):
    stack = analytics_stack
    stack.spawn("a")
    await stack.poll(lambda: stack.fills_per_instrument(2), "fills on both instruments", 180)
    await stack.halt_and_settle()
    stack.stop_all()

    conn = await asyncpg.connect(database)
    try:
        for instrument in INSTRUMENTS:
            updates = await conn.fetch("SELECT * FROM book_updates WHERE instrument_name = $1 "
                                       "ORDER BY time, received_at", instrument)
            tops = await conn.fetch(f"SELECT time, received_at, {', '.join(TOP)} FROM book_tops "
                                    "WHERE instrument_name = $1 ORDER BY time, received_at", instrument)
            assert len(updates) >= 5 and any(r["snapshot"] for r in updates), (instrument, len(updates))
            assert sum(len(r["bid_prices"]) + len(r["ask_prices"]) for r in updates) > len(updates)
            assert _replayed_tops(updates, instrument) == [tuple(r) for r in tops]
        bounds = [await conn.fetchrow(f"SELECT min(time), max(time) FROM {t}") for t in recording.DATASET_TABLES]
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in recording.DATASET_TABLES}
        # the latest migration applied (0010 is TimescaleDB's only: plain PostgreSQL stops at 0009)
        latest = await conn.fetchval("SELECT max(version) FROM cryptics_migrations")
    finally:
        await conn.close()
    assert all(counts.values()), counts  # the run recorded every dataset table, our acks and fills too
    start = min(b[0] for b in bounds)
    end = max(b[1] for b in bounds) + timedelta(microseconds=1)

    env = environ_for_child({"CRYPTICS_DATABASE_URL": database})
    out = tmp_path / "dataset"
    exported = subprocess.run(cryptics("record", "export", "--from", start.isoformat(), "--to", end.isoformat(),
                                       "--out", str(out)), cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == recording.FORMAT_VERSION
    assert sorted(manifest["instruments"]) == sorted(INSTRUMENTS)
    assert latest >= 9
    assert manifest["tables"] == {t: {"rows": counts[t], "migration": latest} for t in recording.DATASET_TABLES}
    schema = pq.read_schema(out / "book_updates.parquet")
    assert schema.field("bid_prices").type == pa.list_(pa.float64())
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert pq.read_schema(out / "order_acks.parquet").field("fills").type == pa.string()  # jsonb

    copy = await _fresh_database(postgres)
    try:
        await migrate.migrate(copy)
        env_copy = environ_for_child({"CRYPTICS_DATABASE_URL": copy})
        for attempt in range(2):
            imported = subprocess.run(cryptics("record", "import", str(out)), cwd=ROOT, env=env_copy,
                                      capture_output=True, text=True, timeout=120)
            assert imported.returncode == 0, imported.stderr
            added = sum(counts.values()) if attempt == 0 else 0
            assert imported.stdout.count("+") == len(recording.DATASET_TABLES)
            assert sum(int(part.split("+")[1].split()[0].rstrip(","))
                       for part in imported.stdout.split(": ", 1)[1].split(", ")) == added, imported.stdout
        for table in recording.DATASET_TABLES:
            assert await _rows(copy, table) == await _rows(database, table), table
    finally:
        await _drop_database(postgres, copy)

    one = tmp_path / "one"
    exported = subprocess.run(cryptics("record", "export", "--from", start.isoformat(), "--to", end.isoformat(),
                                       "--instrument", INSTRUMENTS[0], "--out", str(one)), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    names = set(pq.read_table(one / "book_updates.parquet").column("instrument_name").to_pylist())
    assert names == {INSTRUMENTS[0]}
    indexes = set(pq.read_table(one / "index_prices.parquet").column("index_name").to_pylist())
    assert indexes == {recording.index_of(INSTRUMENTS[0])}


# -- bad input ----------------------------------------------------------------------------------


async def _small_recording(dsn: str, at: datetime) -> None:
    """A few book notifications and tickers of BTC-PERPETUAL at ``at``, through the sink's writers."""
    await migrate.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        for name in ("book", "ticker"):
            values = []
            for i in range(5):
                v = examples.example(name)
                v["instrument_name"] = "BTC-PERPETUAL"
                t = at + timedelta(seconds=i)
                v.update({"time": t.timestamp(), "received_at": t} if name == "book" else
                         {"mark_timestamp": t.timestamp(), "received_at": t})
                values.append(v)
            for table_spec in tables_of(name):
                rows = [table_spec.build(v, SourceRecord("t", 0, i, None, None, None)) for i, v in enumerate(values)]
                assert (await TableWriter(table_spec).write(conn, rows, at)).rejected == []
    finally:
        await conn.close()


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cryptics("record", *args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _refused(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


async def test_bad_input_gets_one_line_and_exit_code_2(database, tmp_path):
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    await _small_recording(database, at)
    env = environ_for_child({"CRYPTICS_DATABASE_URL": database})
    start, end = at.isoformat(), (at + timedelta(minutes=1)).isoformat()

    _refused(_cli(env, "export", "--from", "2024-01-01T00:00:00Z", "--to", "2024-01-02T00:00:00Z",
                  "--out", str(tmp_path / "none")), "no recorded market data between")
    _refused(_cli(env, "export", "--from", start, "--to", end, "--instrument", "NOPE-PERPETUAL",
                  "--out", str(tmp_path / "nope")), "unknown instrument: NOPE-PERPETUAL")
    good = tmp_path / "good"
    assert _cli(env, "export", "--from", start, "--to", end, "--out", str(good)).returncode == 0
    assert json.loads((good / "manifest.json").read_text())["tables"]["book_updates"]["rows"] == 5

    (tmp_path / "empty").mkdir()
    _refused(_cli(env, "import", str(tmp_path / "empty")), "is not a dataset: no manifest.json")
    _refused(_cli(env, "import", str(tmp_path / "missing")), "is not a dataset: not a directory")

    def variant(name: str, change) -> Path:
        """A copy of the good dataset with book_updates.parquet (or the manifest) changed."""
        folder = tmp_path / name
        folder.mkdir()
        for path in good.iterdir():
            (folder / path.name).write_bytes(path.read_bytes())
        change(folder)
        return folder

    def rewrite(folder: Path, table: pa.Table) -> None:
        pq.write_table(table, folder / "book_updates.parquet")

    updates = pq.read_table(good / "book_updates.parquet")
    missing = variant("missing-column", lambda f: rewrite(f, updates.drop_columns(["ask_amounts"])))
    _refused(_cli(env, "import", str(missing)), "book_updates.parquet: missing column ask_amounts")
    extra = variant("extra-column", lambda f: rewrite(f, updates.append_column("depth", pa.array([1] * 5))))
    _refused(_cli(env, "import", str(extra)), "book_updates.parquet: column depth not in table book_updates")
    as_text = updates.set_column(updates.schema.get_field_index("snapshot"), "snapshot",
                                 pa.array([str(v) for v in updates.column("snapshot").to_pylist()]))
    wrong = variant("wrong-type", lambda f: rewrite(f, as_text))
    _refused(_cli(env, "import", str(wrong)), "book_updates.parquet: column snapshot is string")

    def miscount(folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["tables"]["book_updates"]["rows"] = 7
        (folder / "manifest.json").write_text(json.dumps(manifest))
    _refused(_cli(env, "import", str(variant("miscounted", miscount))),
             "book_updates.parquet: 5 rows, the manifest says 7")

    # Nothing of the refused imports got in; the good dataset imports into its own database
    # as nothing new (every row is there already).
    done = _cli(env, "import", str(good))
    assert done.returncode == 0 and "book_updates +0" in done.stdout, done.stdout + done.stderr
    assert len(await asyncio.wait_for(_rows(database, "book_updates"), 30)) == 5
