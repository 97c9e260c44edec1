"""Registers the shared server fixtures for every test layer."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.kafka",
    "tests.fixtures.stack",
]
