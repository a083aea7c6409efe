"""Test suite: unit tests of pure logic and integration tests with real processes."""
