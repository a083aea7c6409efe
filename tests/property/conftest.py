"""The property tier: randomized properties (Hypothesis) of pure logic: the compiled modules
against their twins, the Avro writer against fastavro, fuzzers of the parsers, invariants of
the risk gate and the matching engine. No process, no socket (tests/isolation.py enforces
it); minutes rather than seconds, which is why they are not in tests/unit/."""
from tests.isolation import pytest_runtest_call, pytest_runtest_setup  # noqa: F401  (hooks)
