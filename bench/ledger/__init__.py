"""`python -m bench.ledger`: ledger append rate, verify rate, history latency.

See `bench/README.md`.
"""
