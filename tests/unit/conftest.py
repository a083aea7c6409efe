"""The unit tier: examples of pure logic, no process, no socket (tests/isolation.py enforces
it); the whole tier runs well under a minute. Randomized properties of the same code are in
tests/property/, tests with real services in tests/integration/."""
from tests.isolation import pytest_runtest_call, pytest_runtest_setup  # noqa: F401  (hooks)
