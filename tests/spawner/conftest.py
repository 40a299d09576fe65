"""Fixtures for the spawner tests (helpers live in tests/helpers/spawner.py)."""

from tests.helpers.spawner import ksim  # noqa: F401 - a fixture
