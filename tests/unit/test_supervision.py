"""The pure parts of `cryptics up`'s supervision: when a child is restarted and when the stack
gives up (app/stack/restarts.py), what a broker death is said to lose (app/stack/unpersisted.py),
and `cryptics status`'s table and exit code (app/stack/status.py)."""
from __future__ import annotations

import pytest

from app.stack.restarts import Exit, ExitHistory, RestartPolicy, describe_exit
from app.stack.status import NOT_RUNNING, RECOVERING, UP, describe
from app.stack.unpersisted import LossReport, Snapshot, TopicBacklog, _Partition


# -- restarts -------------------------------------------------------------------------------------

def test_the_delay_doubles_up_to_the_maximum_while_the_child_keeps_dying_quickly():
    history = ExitHistory(RestartPolicy(first_delay=0.5, max_delay=3.0, crash_loop_exits=100))
    delays = [history.record(Exit(at=i * 100.0, code=1, uptime=1.0)).delay for i in range(6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_child_that_stayed_up_starts_over_at_the_first_delay():
    history = ExitHistory(RestartPolicy(first_delay=0.5, stable_after=30.0, crash_loop_exits=100))
    assert [history.record(Exit(at=i * 100.0, code=1, uptime=2.0)).delay for i in range(3)] == [0.5, 1.0, 2.0]
    assert history.record(Exit(at=400.0, code=1, uptime=31.0)).delay == 0.5
    assert history.record(Exit(at=500.0, code=1, uptime=2.0)).delay == 1.0


def test_five_exits_within_sixty_seconds_are_a_crash_loop():
    history = ExitHistory(RestartPolicy())
    verdicts = [history.record(Exit(at=t, code=code, uptime=0.1))
                for t, code in [(0.0, -9), (10.0, 1), (20.0, 1), (30.0, 1)]]
    assert not any(v.crash_loop for v in verdicts)
    fifth = history.record(Exit(at=59.0, code=2, uptime=0.1))
    assert fifth.crash_loop and fifth.delay == 0
    assert [e.code for e in fifth.recent] == [-9, 1, 1, 1, 2]


def test_exits_further_apart_than_the_window_are_no_crash_loop():
    history = ExitHistory(RestartPolicy(crash_loop_exits=3, crash_loop_window=60.0))
    assert not history.record(Exit(at=0.0, code=1, uptime=1)).crash_loop
    assert not history.record(Exit(at=50.0, code=1, uptime=1)).crash_loop
    # 70 s after the first: the first has left the window, so only two are in it
    third = history.record(Exit(at=70.0, code=1, uptime=1))
    assert not third.crash_loop and [e.at for e in third.recent] == [50.0, 70.0]
    assert history.record(Exit(at=80.0, code=1, uptime=1)).crash_loop


def test_a_policy_that_cannot_work_is_refused():
    with pytest.raises(ValueError):
        RestartPolicy(first_delay=5, max_delay=1)
    with pytest.raises(ValueError):
        RestartPolicy(crash_loop_exits=0)


def test_exit_codes_and_signals_are_named():
    assert describe_exit(-9) == "signal 9 (SIGKILL)"
    assert describe_exit(-15) == "signal 15 (SIGTERM)"
    assert describe_exit(1) == "code 1"
    assert describe_exit(0) == "code 0"
    assert describe_exit(None) == "no exit code"


# -- what a broker death loses ---------------------------------------------------------------------

def test_a_partitions_window_is_the_age_of_the_oldest_uncommitted_end_it_saw():
    p = _Partition()
    assert p.observe(at=100.0, end=10, committed=10) == 0.0  # all persisted
    assert p.observe(at=101.0, end=15, committed=10) == 0.0  # offsets 10..14 first seen now
    assert p.observe(at=102.0, end=20, committed=12) == 1.0  # offset 12 was seen first at 101
    assert p.observe(at=105.0, end=20, committed=16) == 3.0  # offset 16 first seen at 102
    assert p.observe(at=106.0, end=20, committed=20) == 0.0  # caught up


def test_the_loss_report_counts_each_topic_and_what_nobody_persists():
    snapshot = Snapshot(
        at=1000.0,
        persisted={"t.ticker": TopicBacklog(end=120, committed=100, oldest_seconds=1.5),
                   "t.fill": TopicBacklog(end=7, committed=7, oldest_seconds=0.0),
                   "t.ack": TopicBacklog(end=3, committed=5, oldest_seconds=0.0)},  # commit ahead of a short end
        dead_letters=4, changelogs={"app-a-changelog": 30, "app-b-changelog": 12})
    assert snapshot.unpersisted == 20 and snapshot.oldest_seconds == 1.5
    report = LossReport(snapshot, staleness=0.7)
    first, second = report.lines()
    assert "20 records produced but not yet persisted" in first and "0.7 s before" in first
    assert first.endswith(": t.ticker 20")  # the caught-up topics are not listed
    assert "4 dead letters and 42 changelog records of 2 Faust tables" in second
    assert report.as_json()["by_topic"] == {"t.ticker": 20}


# -- cryptics status -------------------------------------------------------------------------------

def _service(state="running", pid=100, restarts=0, last_exit=None, up_since=900.0):
    return {"pid": pid, "state": state, "restarts": restarts, "last_exit": last_exit,
            "last_exit_text": describe_exit(last_exit) if last_exit is not None else None, "up_since": up_since}


def test_status_of_a_stack_that_is_up():
    state = {"pid": 7, "started_at": 880.0, "services": {
        "broker": _service(pid=11), "worker": _service(pid=12, restarts=1, last_exit=-9, up_since=990.0)}}
    text, code = describe(state, supervisor_alive=True, now=1000.0)
    assert code == UP
    lines = text.splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "PID", "RESTARTS", "LAST", "EXIT", "UP", "FOR"]
    assert lines[1].split() == ["broker", "running", "11", "0", "-", "1m40s"]
    assert lines[2].split() == ["worker", "running", "12", "1", "signal", "9", "(SIGKILL)", "10s"]
    assert "stack up: supervisor pid 7, started 2m00s ago" in text


def test_status_while_a_child_restarts_is_not_up():
    state = {"pid": 7, "services": {"broker": _service(), "worker": _service(state="backoff", last_exit=1)}}
    text, code = describe(state, supervisor_alive=True, now=1000.0)
    assert code == RECOVERING and "stack recovering" in text


def test_status_without_a_stack():
    assert describe(None, supervisor_alive=False)[1] == NOT_RUNNING
    text, code = describe({"pid": 7, "services": {"broker": _service()}}, supervisor_alive=False)
    assert code == NOT_RUNNING and "pid 7, which is gone" in text
