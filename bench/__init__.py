"""Benchmarks of ServiceTrail (run as `python -m bench.<name>`)."""
