from app.analytics.continuity import OffsetContinuity


def test_in_order_partitions_report_nothing():
    watch = OffsetContinuity()
    for offset in range(5, 10):  # two partitions interleaved, each in order
        assert watch.observe("t", 0, offset) is None
        assert watch.observe("t", 1, offset + 100) is None
    assert not watch.gaps and not watch.rewinds
    assert watch.expected == {("t", 0): 10, ("t", 1): 110}


def test_a_hole_is_a_gap_and_a_step_back_a_rewind():
    watch = OffsetContinuity()
    watch.observe("ticker", 0, 10)
    assert watch.observe("ticker", 0, 13) == ("gap", 11)
    assert watch.skipped["ticker"] == 2 and watch.gaps["ticker"] == 1
    assert watch.observe("ticker", 0, 12) == ("rewind", 14)
    assert watch.observe("ticker", 0, 13) is None  # the redelivery goes on in order
    assert watch.rewinds["ticker"] == 1 and watch.gaps["ticker"] == 1


def test_a_forgotten_partition_starts_afresh():
    watch = OffsetContinuity()
    watch.observe("fill", 2, 4)
    watch.forget([("fill", 2)])
    assert watch.observe("fill", 2, 40) is None
    assert not watch.gaps
