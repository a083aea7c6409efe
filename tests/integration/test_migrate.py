"""Migration runner on a real PostgreSQL: once, in order, idempotent, tamper-evident."""
from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from app.stack import migrate


def _write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_project_migrations_apply_once(database):
    first = await migrate.migrate(database)
    assert first.applied == tuple(m.version for m in migrate.discover() if not m.timescaledb_only)
    assert "instruments" in await _tables(database)
    second = await migrate.migrate(database)
    assert second.applied == () and second.already == first.applied


async def test_order_checksum_and_timescaledb_only_steps(database, tmp_path):
    _write(tmp_path, "0002_second.sql", "ALTER TABLE t ADD COLUMN b int;")
    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (a int);")
    _write(tmp_path, "0003_hyper.timescaledb.sql", "SELECT create_hypertable('t', 'a');")
    report = await migrate.migrate(database, tmp_path)
    assert report.applied == (1, 2)  # in number order, not file-listing order
    assert report.timescaledb is False and report.skipped_timescaledb == (3,)

    conn = await asyncpg.connect(database)
    try:
        columns = [r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position")]
        assert columns == ["a", "b"]
        recorded = [r["version"] for r in await conn.fetch("SELECT version FROM cryptics_migrations ORDER BY 1")]
        assert recorded == [1, 2]  # the skipped TimescaleDB step is not recorded
    finally:
        await conn.close()

    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (a bigint);")
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        await migrate.migrate(database, tmp_path)


async def test_a_failing_migration_rolls_back_and_stops(database, tmp_path):
    _write(tmp_path, "0001_ok.sql", "CREATE TABLE ok (a int);")
    _write(tmp_path, "0002_bad.sql", "CREATE TABLE half (a int); SELECT * FROM no_such_table;")
    _write(tmp_path, "0003_later.sql", "CREATE TABLE later (a int);")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate.migrate(database, tmp_path)
    assert await _tables(database) == {"ok", "cryptics_migrations"}


async def test_concurrent_runners_apply_each_migration_once(database, tmp_path):
    _write(tmp_path, "0001_counter.sql", "CREATE TABLE runs (n int); INSERT INTO runs VALUES (1);")
    reports = await asyncio.gather(*(migrate.migrate(database, tmp_path) for _ in range(4)))
    assert sorted(len(r.applied) for r in reports) == [0, 0, 0, 1]
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM runs") == 1
    finally:
        await conn.close()


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql"])
def test_badly_named_files_are_refused(tmp_path, name):
    _write(tmp_path, name, "SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="NNNN_description"):
        migrate.discover(tmp_path)


def test_duplicate_numbers_are_refused(tmp_path):
    _write(tmp_path, "0001_a.sql", "SELECT 1;")
    _write(tmp_path, "0001_b.sql", "SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="two migrations numbered 0001"):
        migrate.discover(tmp_path)
