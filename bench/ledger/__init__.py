"""`python -m bench.ledger`: ledger append and verify against raw baselines.

See `bench/README.md`; `bench.ledger.phases.measure` for other harnesses.
"""
