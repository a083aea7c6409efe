"""The `cryptics` command line as a user runs it: real subprocesses."""
from __future__ import annotations

import os
import subprocess

import pytest

from app.stack import migrate

from .conftest import ROOT, cryptics

COMMANDS = [[], ["up"], ["status"], ["worker"], ["registry"], ["venue"], ["db"], ["db", "migrate"], ["topics"], ["topics", "create"],
            ["deadletter"], ["deadletter", "list"], ["deadletter", "replay"]]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTICS_")}
    full_env.update(env or {})
    return subprocess.run(cryptics(*args), cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cryptics")
def test_every_command_has_help(command):
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    assert " ".join(["cryptics", *command]).split()[-1] in result.stdout


def test_db_migrate_applies_once(database):
    first = run("db", "migrate", env={"CRYPTICS_DATABASE_URL": database})
    assert first.returncode == 0, first.stderr
    # plain PostgreSQL: every migration but the TimescaleDB-only one
    plain = [m.version for m in migrate.discover() if not m.timescaledb_only]
    assert len(plain) >= 4
    assert f"applied: {plain}" in first.stdout
    second = run("db", "migrate", env={"CRYPTICS_DATABASE_URL": database})
    assert second.returncode == 0, second.stderr
    assert f"applied: []; already applied: {plain}" in second.stdout


def test_topics_create(broker):
    env = {"CRYPTICS_BROKER_URL": broker.url}
    first = run("topics", "create", env=env)
    assert first.returncode == 0, first.stderr
    assert "cryptics.system.heartbeat.avro" in first.stdout.split("already there")[0]
    mismatch = run("topics", "create", env={**env, "CRYPTICS_TOPIC_PARTITIONS": "5"})
    assert mismatch.returncode != 0
    assert "partition count other than 5" in mismatch.stderr


@pytest.mark.parametrize("command,variable", [
    (["db", "migrate"], "CRYPTICS_DATABASE_URL"),
    (["topics", "create"], "CRYPTICS_BROKER_URL"),
    (["worker"], "CRYPTICS_BROKER_URL"),
    (["registry"], "CRYPTICS_DATABASE_URL"),
])
def test_missing_service_url_is_a_clear_error(command, variable):
    result = run(*command)
    assert result.returncode != 0
    assert variable in result.stderr + result.stdout


#: Three refusals of three kinds: a value that does not parse (two of them) and a typo'd name.
BAD = {"CRYPTICS_QUOTE_BID_SIZES": "abc", "CRYPTICS_TOPIC_PARTITIONS": "many", "CRYPTICS_SINK_BATCH_SIZ": "10"}


@pytest.mark.parametrize("command", [["up"], ["worker"], ["venue"], ["db", "migrate"]], ids=" ".join)
def test_bad_settings_get_a_line_each_and_exit_2_before_anything_starts(command, tmp_path):
    state = tmp_path / "state"
    result = run(*command, env={**BAD, "CRYPTICS_STATE_DIR": str(state), "CRYPTICS_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4, lines  # one per variable, then the count
    for variable, line in zip(sorted(BAD), sorted(lines[:3])):
        assert line.startswith(f"cryptics: {variable}"), (variable, line)
    assert "3 bad settings; nothing started" in lines[3]
    assert "abc" in result.stderr and "unknown setting" in result.stderr
    assert not state.exists()  # `up` creates its state folder first thing when it starts


def test_a_worker_open_to_the_network_needs_a_token():
    # Checked before anything starts: no broker, registry or database is needed to be refused.
    env = {"CRYPTICS_BROKER_URL": "tansu://127.0.0.1:1", "CRYPTICS_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1",
           "CRYPTICS_WEB_HOST": "0.0.0.0"}
    result = run("worker", env=env)
    assert result.returncode != 0
    assert "CRYPTICS_WEB_TOKEN" in result.stderr and "0.0.0.0" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_status_without_a_running_stack_exits_3(tmp_path):
    state = tmp_path / "state"
    result = run("status", env={"CRYPTICS_STATE_DIR": str(state)})
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "no stack running (no up.json" in result.stdout
    # An up.json left behind by a supervisor killed with -9: its pid is gone.
    gone = subprocess.Popen(["true"])
    gone.wait()
    state.mkdir()
    (state / "up.json").write_text(f'{{"pid": {gone.pid}, "services": {{"broker": {{"state": "running"}}}}}}')
    result = run("status", env={"CRYPTICS_STATE_DIR": str(state)})
    assert result.returncode == 3 and f"pid {gone.pid}, which is gone" in result.stdout, result.stdout
