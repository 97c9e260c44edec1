"""`python -m bench.ingest`: intake throughput, end-to-end lag, relay catch-up.

See `bench/README.md`.
"""
