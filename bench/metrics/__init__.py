"""Metrics benchmark: apply rate, memory flatness, indicator query latency (`python -m bench.metrics`)."""
