"""Metrics' pure logic beyond the shared indicator calculators.

Must not import any I/O framework.
"""
