"""Registers the shared server fixtures for every test layer."""

import os
import tempfile

# Ledger apps built in tests sign with a throwaway key, never one in the work tree.
os.environ.setdefault(
    "LEDGER_SIGNING_KEY_PATH",
    os.path.join(tempfile.mkdtemp(prefix="servicetrail-test-key-"), "ledger.pem"),
)

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.kafka",
    "tests.fixtures.stack",
]
