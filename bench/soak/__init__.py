"""Soak benchmark: half the peak ingest rate for minutes, lag and memory each minute (`python -m bench.soak`)."""
