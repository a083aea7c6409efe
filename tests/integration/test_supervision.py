"""`cryptics up` supervises its children (docs/operations.md#supervision): a killed child is
started again while the rest keeps running, a crash loop stops the stack, the broker's death
is survived with its topics and workers started again and its loss reported, PostgreSQL's
death loses nothing. Real processes throughout; `cryptics status` is checked against up.json."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import asyncpg
import psutil

from app.pipeline.topics import PIPELINE_TOPICS, bootstrap_servers
from app.stack.process import free_port

from .conftest import ROOT, cryptics, database_url_of

TICKERS = "cryptics.thalex.ticker.avro"


class SupervisedUp:
    """`cryptics up` in a child process, its output in a file, its up.json read on demand."""

    def __init__(self, state_dir: Path, **settings: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTICS_")}
        self.env.update(CRYPTICS_STATE_DIR=str(state_dir), CRYPTICS_WEB_PORT=str(free_port()), **settings)
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log = state_dir.parent / f"{state_dir.name}.out"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cryptics("up"), cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def state(self) -> Optional[dict]:
        try:
            return json.loads((self.state_dir / "up.json").read_text())
        except FileNotFoundError:
            return None

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float, interval: float = 0.2) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail with the output if `up` exits first."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"cryptics up exited ({self.proc.returncode}) waiting for {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.output()}")
            time.sleep(interval)

    def wait_up(self, timeout: float = 120) -> dict:
        return self.wait_for(lambda: (s := self.state()) and s["state"] == "up" and s, "healthy stack", timeout)

    def pids(self) -> dict[str, int]:
        return {name: s["pid"] for name, s in self.state()["services"].items()}

    def restarted(self, name: str, old_pid: int, timeout: float) -> dict:
        """Wait until ``name`` runs again under a new pid; its entry in up.json."""
        def check():
            s = self.state()
            service = s and s["services"][name]
            return service if service and service["state"] == "running" and service["pid"] != old_pid else None
        return self.wait_for(check, f"{name} running again", timeout)

    def status(self) -> subprocess.CompletedProcess:
        return subprocess.run(cryptics("status"), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> int:
        """SIGTERM and wait; a stopped (SIGSTOP) child is continued first so it can stop too."""
        for p in self.descendants():
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            for p in self.descendants():
                p.kill()
            self.proc.kill()
            return self.proc.wait(10)


def _get_json(url: str) -> Optional[dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _quotes(web: str) -> Optional[dict]:
    """The worker's gateway counters once it holds the venue session and has sent orders: a
    worker process counts from zero, so a restarted one that shows orders quoted after its start."""
    quoting, market = _get_json(f"{web}/quoting/"), _get_json(f"{web}/market-data/")
    if not quoting or not market or not market["session_open"] or not market["lease"]["held"]:
        return None
    gateway = quoting["gateway"]
    return gateway if gateway.get("inserts", 0) + gateway.get("amends", 0) > 0 and gateway.get("acks", 0) > 0 else None


def _status_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines()[1:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def _assert_status_matches(up: SupervisedUp) -> dict:
    result = up.status()
    state = up.state()
    assert result.returncode == 0, (result.stdout, result.stderr)
    rows = _status_rows(result.stdout)
    assert set(rows) == set(state["services"]), result.stdout
    for name, service in state["services"].items():
        _, shown_state, pid, restarts, last_exit, _up_for = rows[name]
        assert (shown_state, int(pid), int(restarts)) == (service["state"], service["pid"], service["restarts"])
        assert last_exit == (service["last_exit_text"] or "-")
    assert f"stack up: supervisor pid {state['pid']}" in result.stdout
    return rows


def _assert_no_process_left(processes: list[psutil.Process]) -> None:
    deadline = time.monotonic() + 20
    while True:
        left = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left]}"


def test_a_killed_worker_is_restarted_and_quotes_again(service_root):
    up = SupervisedUp(service_root / "sup-worker")
    try:
        up.wait_up()
        rows = _assert_status_matches(up)
        assert {r[3] for r in rows.values()} == {"0"}  # no restart yet
        before = up.pids()
        web = up.state()["urls"]["web"]
        up.wait_for(lambda: _quotes(web), "the worker quoting", 30)

        os.kill(before["worker"], signal.SIGKILL)
        worker = up.restarted("worker", before["worker"], timeout=60)
        assert worker["restarts"] == 1 and worker["last_exit"] == -9
        assert "worker exited with signal 9 (SIGKILL); restart 1 in 0.5 s" in up.output()
        after = up.pids()
        # Only the worker was restarted: the broker, PostgreSQL and the rest kept their processes.
        assert {n: p for n, p in after.items() if n != "worker"} == {n: p for n, p in before.items() if n != "worker"}
        assert all(s["restarts"] == 0 for n, s in up.state()["services"].items() if n != "worker")

        gateway = up.wait_for(lambda: _quotes(web), "the restarted worker quoting", 45)
        assert gateway["acks"] > 0
        heartbeat = _get_json(f"{web}/heartbeat/")
        assert heartbeat["worker"].endswith(f":{after['worker']}")  # the answer came from the new process

        rows = _assert_status_matches(up)
        assert rows["worker"][1:5] == ["running", str(after["worker"]), "1", "signal 9 (SIGKILL)"]
    finally:
        code = up.stop()
    assert code == 0, up.output()
    assert "stopped (restarts: worker 1)" in up.output()
    assert up.status().returncode == 3  # no stack: up.json was removed


def _listen_on(port: int, within: float) -> socket.socket:
    """A socket listening on ``port``, tried until ``within`` seconds have passed: the kernel
    takes a few milliseconds to release the port of a killed listener."""
    deadline = time.monotonic() + within
    while True:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def test_a_crash_loop_stops_the_stack_naming_the_child(service_root):
    """The venue killed once, then its port taken: each restart exits at once (the port is in use),
    five exits within 60 s."""
    up = SupervisedUp(service_root / "sup-loop", CRYPTICS_ANALYTICS_ENABLED="false")
    blocker = None
    try:
        up.wait_up()
        processes = up.descendants()
        venue_pid = up.pids()["venue"]
        venue_port = int(up.state()["urls"]["venue"].split(":")[2].split("/")[0])
        os.kill(venue_pid, signal.SIGKILL)
        try:
            psutil.Process(venue_pid).wait(10)  # gone (reaped by `up` or not): its socket is closed
        except psutil.NoSuchProcess:
            pass
        blocker = _listen_on(venue_port, within=0.4)  # `up` restarts it 0.5 s after the exit at the soonest
        code = up.proc.wait(90)
    finally:
        if up.proc.poll() is None:
            up.stop()
        if blocker is not None:
            blocker.close()
    out = up.output()
    assert code == 1, out
    assert ("venue exited 5 times within 60 s (last exit codes: signal 9 (SIGKILL), code 1, code 1, code 1, code 1): "
            "a crash loop; stopping the stack") in out
    assert "venue exited with signal 9 (SIGKILL); restart 1 in 0.5 s" in out, out
    for restart, delay in [(2, "1.0"), (3, "2.0"), (4, "4.0")]:
        assert (f"venue did not come back (simulated venue: process exited with code 1); restart {restart} "
                f"in {delay} s") in out, out
    assert "address already in use" in out  # the venue's log tail says why
    assert out.index("a crash loop") < out.index("stopping broker")
    _assert_no_process_left(processes)
    assert up.status().returncode == 3


async def _topic_partitions(bootstrap: str) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t in PIPELINE_TOPICS]
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def _produce_raw(bootstrap: str, topic: str, count: int) -> None:
    """``count`` records on partition 0 of ``topic``; bytes, not Avro: they only need offsets."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, f"test record {i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


def test_a_killed_broker_is_restarted_with_its_topics_and_workers_and_the_loss_reported(service_root):
    """To know a least loss, the workers are frozen (SIGSTOP: their sinks commit nothing) while the
    test puts 300 records on the ticker topic; the broker is killed once the supervisor has seen them."""
    up = SupervisedUp(service_root / "sup-broker")
    frozen: list[int] = []
    try:
        up.wait_up()
        before = up.pids()
        urls = up.state()["urls"]
        bootstrap = bootstrap_servers(urls["broker"])
        assert set(asyncio.run(_topic_partitions(bootstrap)).values()) == {3}

        frozen = [before["worker"], before["analytics"]]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        asyncio.run(_produce_raw(bootstrap, TICKERS, 300))
        seen = up.wait_for(lambda: (u := up.state()["unpersisted"]) and u["by_topic"].get(TICKERS, 0) >= 300 and u,
                           "the supervisor to see the 300 records unpersisted", 20)
        assert seen["records"] >= 300

        os.kill(before["broker"], signal.SIGKILL)
        broker = up.restarted("broker", before["broker"], timeout=30)
        assert broker["restarts"] == 1 and broker["last_exit"] == -9
        worker = up.restarted("worker", before["worker"], timeout=60)
        analytics = up.restarted("analytics", before["analytics"], timeout=60)
        assert worker["restarts"] == 1 and analytics["restarts"] == 1
        after = up.pids()
        assert {n: after[n] for n in ("postgres", "registry", "venue")} == \
               {n: before[n] for n in ("postgres", "registry", "venue")}

        out = up.output()
        assert "broker exited with signal 9 (SIGKILL); restart 1 in 0.5 s" in out
        lost = re.search(r"lost with the broker: (\d+) records produced but not yet persisted .*: (.*)$", out, re.M)
        assert lost, out
        by_topic = dict((t, int(n)) for t, n in re.findall(r"(\S+) (\d+)(?:,|$)", lost.group(2)))
        assert by_topic[TICKERS] >= 300 and int(lost.group(1)) >= by_topic[TICKERS], lost.group(0)
        assert re.search(r"lost with the broker: \d+ dead letters and \d+ changelog records of \d+ Faust tables", out)
        assert up.state()["broker_losses"][0]["by_topic"][TICKERS] >= 300
        # In order: the workers stopped, the broker back, its topics created again, then the workers.
        death = out.index("broker exited")
        steps = ["stopping worker, analytics (they run on the broker)", "broker      healthy in",
                 f"topics      created {len(PIPELINE_TOPICS)}, existing 0", "worker      healthy in", "analytics   healthy in"]
        at = [out.find(step, death) for step in steps]
        assert -1 not in at and at == sorted(at), (at, out[death:])

        # The topics are the configured ones (3 partitions), not auto-created ones (Tansu gives 4).
        partitions = asyncio.run(_topic_partitions(bootstrap))
        assert set(partitions) == set(PIPELINE_TOPICS) and set(partitions.values()) == {3}
        up.wait_for(lambda: _quotes(urls["web"]), "the restarted worker quoting", 45)
        assert up.state()["state"] == "up"
    finally:
        code = up.stop()
    assert code == 0, up.output()


async def _rows(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()


def test_a_killed_postgres_is_restarted_and_the_others_carry_on(service_root):
    up = SupervisedUp(service_root / "sup-postgres", CRYPTICS_ANALYTICS_ENABLED="false")
    try:
        up.wait_up()
        before = up.pids()
        urls = up.state()["urls"]
        dsn = database_url_of(urls)
        up.wait_for(lambda: _quotes(urls["web"]), "the worker quoting", 30)
        rows = up.wait_for(lambda: asyncio.run(_rows(dsn, "tickers")), "tickers in the database", 30)

        os.kill(before["postgres"], signal.SIGKILL)
        postgres = up.restarted("postgres", before["postgres"], timeout=30)
        assert postgres["restarts"] == 1 and postgres["last_exit"] == -9
        out = up.output()
        assert "postgres exited with signal 9 (SIGKILL); restart 1 in 0.5 s" in out
        assert re.search(r"migrations  applied \[\], already \[1, ", out[out.index("postgres exited"):]), out
        # Nothing else was restarted: the sinks retried, the lease was taken again, the registry reconnected.
        assert {n: p for n, p in up.pids().items() if n != "postgres"} == \
               {n: p for n, p in before.items() if n != "postgres"}
        # Rows from before are still there, and new ones arrive.
        after = asyncio.run(_rows(dsn, "tickers"))
        assert after >= rows
        up.wait_for(lambda: asyncio.run(_rows(dsn, "tickers")) > after, "new tickers persisted", 45, interval=1)
        up.wait_for(lambda: (m := _get_json(f"{urls['web']}/market-data/")) and m["lease"]["acquisitions"] >= 2
                    and m["lease"]["held"] and m["session_open"], "the quoting lease taken again", 30)
        assert isinstance(_get_json(f"{urls['registry']}/subjects"), list)
        assert up.state()["state"] == "up"
    finally:
        code = up.stop()
    assert code == 0, up.output()
