"""The analytics' continuity guard (app/analytics/continuity.py): pure decisions, a clock given."""
import random

from hypothesis import given, settings, strategies as st

from app.analytics.continuity import APPLY, HOLD, GaveUp, OffsetContinuity, Seek


def test_in_order_partitions_are_applied():
    guard = OffsetContinuity()
    for offset in range(5, 10):  # two partitions interleaved, each in order
        assert guard.admit("t", 0, offset, 0.0) is APPLY
        assert guard.admit("t", 1, offset + 100, 0.0) is APPLY
    assert not guard.gaps and not guard.rewinds and not guard.held
    assert guard.expected == {("t", 0): 10, ("t", 1): 110}


def test_a_hole_seeks_back_and_holds_the_partition_until_the_offset_comes_again():
    guard = OffsetContinuity()
    guard.admit("ticker", 0, 10, 0.0)
    assert guard.admit("ticker", 0, 13, 0.0) == Seek("ticker", 0, 11)
    # Events already fetched behind the hole are held back: the seek delivers them again.
    assert guard.admit("ticker", 0, 14, 0.1) is HOLD
    assert guard.admit("ticker", 1, 3, 0.1) is APPLY  # another partition is not held
    assert guard.admit("ticker", 0, 11, 0.2) is APPLY  # the redelivery: in order from the hole
    assert [guard.admit("ticker", 0, o, 0.2) for o in (12, 13, 14)] == [APPLY] * 3
    assert guard.gaps == {"ticker": 1} and guard.resynced == {"ticker": 1} and guard.held == {"ticker": 2}
    assert not guard.skipped and not guard.rewinds


def test_offsets_that_never_come_again_are_given_up_after_the_timeout():
    guard = OffsetContinuity(resync_timeout=5.0)
    guard.admit("fill", 2, 0, 0.0)
    assert isinstance(guard.admit("fill", 2, 4, 1.0), Seek)
    assert guard.admit("fill", 2, 4, 5.9) is HOLD  # the log starts at 4 now: the seek cannot fetch 1-3
    assert guard.admit("fill", 2, 4, 6.0) == GaveUp("fill", 2, 1, 4)  # applied: 1-3 are not coming
    assert guard.admit("fill", 2, 5, 6.0) is APPLY
    assert guard.skipped == {"fill": 3} and not guard.resynced


def test_giving_up_a_hole_resumes_from_the_first_offset_held_behind_it():
    guard = OffsetContinuity(resync_timeout=5.0)
    guard.admit("position", 1, 29, 0.0)
    assert guard.admit("position", 1, 31, 1.0) == Seek("position", 1, 30)  # 30 is not in the log
    assert [guard.admit("position", 1, o, 2.0) for o in (31, 32, 33)] == [HOLD] * 3  # after the seek
    # The timeout, noticed by a later event: only 30 is given up; 31 on were held, so the
    # partition is sought back to 31 and this event held too.
    assert guard.admit("position", 1, 34, 6.5) == GaveUp("position", 1, 30, 31)
    assert [guard.admit("position", 1, o, 6.6) for o in (31, 32, 33, 34, 35)] == [APPLY] * 5
    assert guard.skipped == {"position": 1} and not guard.resyncing


def test_a_quiet_partition_waiting_for_a_hole_is_given_up_on_by_the_clock():
    guard = OffsetContinuity(resync_timeout=5.0)
    guard.admit("position", 1, 65, 0.0)
    assert guard.admit("position", 1, 67, 1.0) == Seek("position", 1, 66)
    assert guard.admit("position", 1, 68, 1.5) is HOLD  # the last event the partition will have
    assert guard.overdue(5.9) == []  # not yet
    assert guard.overdue(6.0) == [GaveUp("position", 1, 66, 67)]
    # Once: it now waits for 67, which the log has; with nothing delivered since, there is no
    # offset to resume from, however long it takes.
    assert guard.overdue(6.1) == [] and guard.overdue(60.0) == []
    assert [guard.admit("position", 1, o, 60.1) for o in (67, 68)] == [APPLY] * 2
    assert guard.skipped == {"position": 1} and not guard.resyncing


def test_a_rewind_is_applied_and_counted():
    guard = OffsetContinuity()
    for offset in range(10):
        guard.admit("quote", 0, offset, 0.0)
    assert guard.admit("quote", 0, 6, 0.0) is APPLY  # a redelivery after a rebalance: the states skip it
    assert guard.admit("quote", 0, 7, 0.0) is APPLY
    assert guard.rewinds == {"quote": 1} and not guard.gaps


def test_the_head_of_an_assignment_is_checked_against_where_it_starts():
    guard = OffsetContinuity()
    guard.start_at({("trade", 0): 0, ("trade", 1): 57})
    assert guard.admit("trade", 0, 1, 0.0) == Seek("trade", 0, 0)  # the consumer began past offset 0
    assert guard.admit("trade", 1, 57, 0.0) is APPLY  # began at the committed offset
    # A partition kept across a rebalance goes on where it was, whatever the new start says.
    guard.start_at({("trade", 1): 50})
    assert guard.expected[("trade", 1)] == 58


def test_a_rebalance_during_a_resync_seeks_back_again():
    guard = OffsetContinuity(resync_timeout=5.0)
    guard.admit("ack", 1, 0, 0.0)
    assert guard.admit("ack", 1, 3, 0.0) == Seek("ack", 1, 1)
    # A rebalance; the consumer restarts where the group committed: past the hole, since the
    # held events were acknowledged.
    guard.seek_again([("ack", 1)])
    assert guard.admit("ack", 1, 4, 1.0) == Seek("ack", 1, 1)
    assert guard.admit("ack", 1, 5, 5.9) is HOLD  # a fresh timeout from the new seek
    assert guard.admit("ack", 1, 1, 6.0) is APPLY
    assert guard.gaps == {"ack": 1} and guard.resynced == {"ack": 1} and not guard.skipped


def test_a_forgotten_partition_starts_afresh():
    guard = OffsetContinuity()
    guard.admit("fill", 2, 4, 0.0)
    guard.admit("fill", 2, 9, 0.0)
    guard.forget([("fill", 2)])
    assert guard.admit("fill", 2, 40, 0.0) is APPLY
    assert not guard.resyncing


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60))
def test_whatever_the_consumer_skips_every_offset_is_applied_in_order(seed, n):
    """A log of ``n`` records and a consumer that skips ahead at random (never past the last
    record) and, once sought back, delivers from there again (as Kafka does): every offset is
    applied, the first time in order."""
    rng = random.Random(seed)
    guard = OffsetContinuity()
    guard.start_at({("t", 0): 0})
    applied, position, target = [], 0, None
    for _ in range(50 * n):
        if position >= n:
            break
        position = min(position + rng.choice((0, 0, 0, 1, 2)), n - 1)
        verdict = guard.admit("t", 0, position, 0.0)
        assert not isinstance(verdict, GaveUp)  # the clock stands still: nothing is given up
        if verdict is APPLY:
            applied.append(position)
            position += 1
        elif isinstance(verdict, Seek):
            target = position = verdict.offset
        else:  # held: records fetched before the seek took effect
            position += 1
            if position == n:
                position = target
    first_time = [o for i, o in enumerate(applied) if o not in applied[:i]]
    assert first_time == list(range(n))
