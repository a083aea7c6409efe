"""The fault campaign's short version (benchmarks/fault_campaign.py): the embedded stack under
`cryptics up`, quoting and analysing the simulated venue's market, five faults of five kinds
in about two minutes, then the exact accounting. Real processes throughout: Tansu,
PostgreSQL, the registry and both workers under the supervisor; the venue in this process."""
from __future__ import annotations

from benchmarks.fault_campaign import Campaign, print_report


async def test_five_faults_in_two_minutes_leave_the_accounting_exact(tmp_path):
    lines: list[str] = []
    # The kinds the other tests exercise least, a fault every 18-26 s.
    kinds = ("worker_kill", "worker_term", "poison_burst", "slow_database", "venue_drop")
    campaign = Campaign(tmp_path, seconds=120, faults=5, seed=7, say=lines.append, gap=(18.0, 26.0), kinds=kinds)
    checks, summary = await campaign.run()
    print_report(checks, summary, lines.append)
    report = "\n".join(lines)
    assert len(summary["faults"]) == 5, report
    # Each kind once: the draw takes every kind once before any twice.
    assert summary["faults_by_kind"] == dict.fromkeys(kinds, 1), report
    assert summary["restarts"]["worker"] == 2, report  # the kill and the SIGTERM, both restarted
    assert summary["fills"] > 0, report  # the market traded with us: the position checks meant something
    failed = [c.name for c in checks if not c.passed]
    assert not failed, report
